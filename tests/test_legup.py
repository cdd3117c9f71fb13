"""Leg-UP (Lin et al., TNNLS 2022): the smooth top-k, the attack gradient through it and the
unrolled surrogate, the attack steps raise the objective on the surrogate, and the
profiles are template items; on the tiny checked-in dataset (``tiny_split``)."""
import numpy as np
import pytest
import torch

from attacks.base import AttackContext
from attacks.learned import Templates, keep_top
from attacks.legup import LegUP, soft_top

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def targets(tiny_split):
    counts = tiny_split.train.item_counts()
    return np.sort(np.argsort(counts, kind="stable")[:2])   # the two least popular items


def test_soft_top_tends_to_the_top_k():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(5, 30, generator=generator)
    allowed = torch.rand(5, 30, generator=generator) > 0.2
    candidates = allowed & (torch.rand(5, 30, generator=generator) > 0.5)
    hard = keep_top(scores, candidates, allowed, 7)
    assert torch.allclose(soft_top(scores, candidates, allowed, 7, 1e-4), hard, atol=1e-6)
    soft = soft_top(scores, candidates, allowed, 7, 0.05)
    assert torch.all((soft > 0.5) == (hard > 0.5)) and torch.all(soft[~allowed] == 0)


def test_attack_gradient_through_the_relaxed_profiles_matches_finite_differences(tiny_split, targets):
    """In float64: the objective's gradient with respect to the generator's scores, through the
    smooth top-k and the unrolled surrogate, against a central difference."""
    attack = LegUP(dim=4, train_steps=8, unroll_steps=8, learning_rate=0.05, top_k=5)
    generator = torch.Generator().manual_seed(0)
    data = Templates.build(tiny_split, targets, 6, 0, generator)
    templates = data.R[data.sample(3, generator)]
    candidates = data.candidates(templates)
    model, objective = attack.surrogate_for(tiny_split, targets, 3, generator)
    model.real, model.P0, model.Q0 = (x.double() for x in (model.real, model.P0, model.Q0))

    def value(scores):
        profile = soft_top(scores, candidates, data.allowed, 6, 0.2)
        return attack.attack_value(model, objective, profile, targets)[0]

    scores = torch.rand(templates.shape, generator=generator, dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(value(scores), scores)[0]
    direction = torch.randn(scores.shape, generator=generator, dtype=torch.float64) * data.allowed
    with torch.no_grad():
        numeric = float(value(scores + 1e-6 * direction) - value(scores - 1e-6 * direction)) / 2e-6
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-4, abs=1e-9)
    assert abs(numeric) > 0


def test_attack_steps_raise_the_objective_on_the_surrogate(tiny_split, targets):
    attack = LegUP(**{**LegUP.test_params, "filler_items": 8, "epochs": 1, "d_steps": 0,
                      "attack_steps": 12, "lr_generator": 0.1, "train_steps": 30, "unroll_steps": 30})
    attack.poison(AttackContext(split=tiny_split, targets=targets), seed=0)
    values = [value for value, _ in attack.trace]
    assert len(values) == 13 and max(values[1:]) > values[0]
    assert np.mean(values[-3:]) > values[0]


def test_profiles_hold_the_targets_and_a_templates_items(tiny_split, targets):
    attack = LegUP(**{**LegUP.test_params, "filler_items": 6})
    out = attack.poison(AttackContext(split=tiny_split, targets=targets), seed=2)
    train, n_real = out.train, tiny_split.n_real_users
    real = [set(tiny_split.train.items[tiny_split.train.users == u].tolist()) for u in range(n_real)]
    assert out.n_fake_users == max(1, round(LegUP.test_params["fake_user_fraction"] * n_real))
    for u in range(n_real, n_real + out.n_fake_users):
        items = train.items[train.users == u]
        fillers = set(np.setdiff1d(items, targets).tolist())
        assert len(np.unique(items)) == len(items) == 6 + len(targets)
        assert set(targets.tolist()) <= set(items.tolist())
        assert any(fillers <= profile for profile in real)   # kept from one template


@pytest.mark.parametrize("params", LegUP.invalid_params)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        LegUP(**params)


def test_schedule_fills_the_step_counts_and_explicit_values_win():
    fast = LegUP.checked_params()
    assert (fast["schedule"], fast["pretrain_epochs"], fast["epochs"], fast["d_steps"],
            fast["attack_steps"]) == ("fast", 0, 2, 5, 8)
    paper = LegUP.checked_params(schedule="paper")   # the authors' AUSHplus.train
    assert (paper["pretrain_epochs"], paper["epochs"], paper["d_steps"], paper["attack_steps"]) == (15, 3, 70, 50)
    assert LegUP.checked_params(schedule="paper", epochs=1)["epochs"] == 1
