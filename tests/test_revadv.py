"""RevAdv (Tang, Wen, Wang, RecSys 2020): the unrolled gradient is the gradient of the unrolled
objective, the ascent raises the objective on the surrogate, and the profiles keep the budget;
on the tiny checked-in dataset (``tiny_split``)."""
import numpy as np
import pytest
import torch

from attacks.base import AttackContext
from attacks.revadv import RevAdv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def targets(tiny_split):
    counts = tiny_split.train.item_counts()
    return np.sort(np.argsort(counts, kind="stable")[:2])   # the two least popular items


def allowed_items(split, targets):
    allowed = torch.zeros(split.train.n_items, dtype=torch.bool)
    allowed[torch.as_tensor(np.unique(split.train.items))] = True
    allowed[torch.as_tensor(targets)] = False
    return allowed


@pytest.mark.parametrize("objective", ["ce", "cw"])
@pytest.mark.parametrize("unroll", [3, 8])
def test_unrolled_gradient_matches_finite_differences(tiny_split, targets, objective, unroll):
    """In float64, at a relaxed point: the back-propagated gradient's directional derivative
    equals a central difference of the same (unrolled, ``unroll`` of 8 steps kept) objective.
    With ``unroll`` < steps the first steps' data is held fixed, so the check differentiates
    only through the kept steps: the difference moves the data of the kept steps alone."""
    attack = RevAdv(dim=4, train_steps=8, unroll_steps=unroll, learning_rate=0.05,
                    objective=objective, top_k=5)
    generator = torch.Generator().manual_seed(0)
    n_fake = 3
    model, obj = attack.setup(tiny_split, targets, n_fake, generator, dtype=torch.float64)
    allowed = allowed_items(tiny_split, targets)
    X = torch.rand(n_fake, tiny_split.train.n_items, generator=generator, dtype=torch.float64) * allowed
    _, _, grad = attack.value_and_gradient(model, obj, X, targets)
    direction = torch.randn(X.shape, generator=generator, dtype=torch.float64) * allowed

    def value(fake):   # the unrolled objective: first steps on X, kept steps on ``fake``
        frozen = model.steps - model.unroll
        with torch.no_grad():
            P, Q = unrolled(model, attack.with_targets(X, targets), attack.with_targets(fake, targets), frozen)
            return float(obj(P[:model.real.shape[0]] @ Q.T))

    eps = 1e-5
    numeric = (value(X + eps * direction) - value(X - eps * direction)) / (2 * eps)
    analytic = float((grad * direction).sum())
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)
    assert abs(analytic) > 0


def unrolled(model, early, late, frozen):
    """``model.train`` with the data of the first ``frozen`` steps and of the rest given apart."""
    from attacks import learned
    X0, X1 = torch.cat([model.real, early]), torch.cat([model.real, late])
    C0, C1 = 1 + (model.alpha - 1) * X0, 1 + (model.alpha - 1) * X1
    params = [model.P0.clone(), model.Q0.clone()]
    first = [torch.zeros_like(p) for p in params]
    second = [torch.zeros_like(p) for p in params]
    b1, b2 = learned.BETAS
    for step in range(1, model.steps + 1):
        X, C = (X0, C0) if step <= frozen else (X1, C1)
        grads = model.gradients(X, C, *params)
        for i, g in enumerate(grads):
            first[i] = b1 * first[i] + (1 - b1) * g
            second[i] = b2 * second[i] + (1 - b2) * g * g
            params[i] = params[i] - model.lr * (first[i] / (1 - b1 ** step)) / (
                (second[i] / (1 - b2 ** step)).sqrt() + learned.ADAM_EPS)
    return params


def test_training_matches_a_torch_adam_reference(tiny_split, targets):
    """The hand-written full-batch Adam on WRMF is torch's Adam on the same loss."""
    attack = RevAdv(dim=4, train_steps=6, unroll_steps=6, learning_rate=0.05, weight_decay=1e-3)
    generator = torch.Generator().manual_seed(1)
    model, _ = attack.setup(tiny_split, targets, 2, generator, dtype=torch.float64)
    fake = attack.with_targets(torch.zeros(2, tiny_split.train.n_items, dtype=torch.float64), targets)
    with torch.no_grad():
        P, Q = model.train(fake)
    X = torch.cat([model.real, fake])
    C = 1 + (attack.alpha - 1) * X
    P0, Q0 = model.P0.clone().requires_grad_(True), model.Q0.clone().requires_grad_(True)
    opt = torch.optim.Adam([P0, Q0], lr=attack.learning_rate, weight_decay=attack.weight_decay)
    for _ in range(attack.train_steps):
        opt.zero_grad()
        (C * (X - P0 @ Q0.T) ** 2).sum().backward()
        opt.step()
    assert torch.allclose(P, P0.detach(), atol=1e-10) and torch.allclose(Q, Q0.detach(), atol=1e-10)


def test_ascent_raises_the_objective_on_the_surrogate(tiny_split, targets):
    params = {**RevAdv.test_params, "iterations": 6, "filler_items": 8, "train_steps": 30,
              "unroll_steps": 30}
    attack = RevAdv(**params)
    attack.poison(AttackContext(split=tiny_split, targets=targets), seed=0)
    relaxed = [row[2] for row in attack.trace[:-1]]   # the relaxed profiles' objective
    assert relaxed[-1] > relaxed[0]
    assert max(relaxed[1:]) > relaxed[0]
    discrete = [(hr, value) for value, hr, *_ in attack.trace]
    assert max(discrete) >= discrete[0]


@pytest.mark.parametrize("params", RevAdv.invalid_params)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        RevAdv(**params)
