"""DL-Attack (Huang et al., NDSS 2021): the poison model's loss is the sampled cross-entropy in
expectation, the attack loss is the authors' ``target_loss``, the attack steps lower it, the
selection decay diversifies the fake users, and the profiles keep the budget; on the tiny
checked-in dataset (``tiny_split``)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.base import AttackContext
from attacks.dlattack import AttackLoss, DLAttack

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def targets(tiny_split):
    counts = tiny_split.train.item_counts()
    return np.sort(np.argsort(counts, kind="stable")[:2])   # the two least popular items


def test_training_gradient_is_the_sampled_cross_entropy_in_expectation(tiny_split, targets):
    """Per active user, ``negatives * n_u`` negatives drawn uniformly among its unrated items:
    the gradient of the expected BCE plus the ridge, written out user by user and
    differentiated by autograd, is the model's closed-form gradient."""
    attack = DLAttack(dim=4, reg=0.3, negatives=3)
    model, _ = attack.setup(tiny_split, targets, 2, torch.Generator().manual_seed(0))
    model.R[model.n_real, targets] = 1.0
    model.active[model.n_real] = True            # one fake user active, one not
    P, Q = model.P.clone().requires_grad_(True), model.Q.clone().requires_grad_(True)
    S = P @ Q.T
    total, count = 0.0, 0.0
    active = torch.nonzero(model.active).squeeze(1).tolist()
    for u in active:
        pos = model.R[u] > 0
        n_u = int(pos.sum())
        total = total + F.softplus(-S[u, pos]).sum() + 3 * n_u * F.softplus(S[u, ~pos]).mean()
        count += n_u
    loss = (total + 0.15 * (P[active].pow(2).sum() + Q.pow(2).sum())) / count
    want_P, want_Q = torch.autograd.grad(loss, [P, Q])
    G, ridge_P, ridge_Q = model.gradient(model.P, model.Q)
    assert torch.allclose(G @ model.Q + ridge_P, want_P, rtol=1e-4, atol=1e-7)
    assert torch.allclose(G.T @ model.P + ridge_Q, want_Q, rtol=1e-4, atol=1e-7)
    assert float(want_P[model.n_real + 1].abs().max()) == 0.0   # the inactive user


def test_attack_loss_is_the_authors_target_loss():
    """``max(log y_u[K] - log y_ut, -kappa)`` with ``y_u[K]`` the K-th largest prediction among
    the user's unrated items, averaged over users who have not rated the target; the HR counts
    targets within the top K unrated items."""
    generator = torch.Generator().manual_seed(3)
    S = torch.randn(6, 9, generator=generator) * 3
    seen = torch.rand(6, 9, generator=generator) < 0.3
    targets = torch.tensor([2, 7])
    seen[0, 2] = True                                   # one (user, target) pair not eligible
    loss, hr = AttackLoss(seen, targets, top_k=3, kappa=0.5)(S)
    values, hits = [], []
    for u in range(6):
        unrated = sorted((float(S[u, i]) for i in range(9) if not seen[u, i]), reverse=True)
        kth = unrated[2]
        for t in targets.tolist():
            if seen[u, t]:
                continue
            log_y = lambda s: -math.log1p(math.exp(-s))
            values.append(max(log_y(kth) - log_y(float(S[u, t])), -0.5))
            hits.append(float(S[u, t]) >= kth)
    assert float(loss) == pytest.approx(np.mean(values), rel=1e-5)
    assert hr == pytest.approx(np.mean(hits))


def test_attack_steps_lower_the_attack_loss(tiny_split, targets):
    attack = DLAttack(**{**DLAttack.test_params, "attack_steps": 8, "learning_rate": 0.05})
    attack.poison(AttackContext(split=tiny_split, targets=targets), seed=0)
    n_fake = max(1, round(DLAttack.test_params["fake_user_fraction"] * tiny_split.n_real_users))
    assert len(attack.trace) == math.ceil(n_fake / DLAttack.test_params["users_per_round"])
    for steps in attack.trace:
        losses = [value for _, value in steps]
        assert len(steps) == 9 and losses[-1] < losses[0]


def test_paper_schedule_takes_per_user_steps_that_lower_the_attack_loss(tiny_split, targets):
    """``schedule: paper``: ``rounds`` rounds of the authors' per-user steps (``get_f``), each
    round's state scored; the attack loss falls over the rounds."""
    attack = DLAttack(**{**DLAttack.test_params, "schedule": "paper", "rounds": 3,
                         "attack_learning_rate": 0.01})
    out = attack.poison(AttackContext(split=tiny_split, targets=targets), seed=0)
    n_fake = max(1, round(DLAttack.test_params["fake_user_fraction"] * tiny_split.n_real_users))
    assert out.n_fake_users == n_fake
    assert len(attack.trace) == math.ceil(n_fake / DLAttack.test_params["users_per_round"])
    for steps in attack.trace:
        losses = [value for _, value in steps]
        assert len(steps) == 4 and min(losses[1:]) < losses[0]


def test_decay_diversifies_the_fake_users(tiny_split, targets):
    """One round for every fake user (the same poison model in both runs): the decay of the
    chosen items' selection probabilities spreads the fillers over more items."""
    params = {**DLAttack.test_params, "users_per_round": 100}
    context = AttackContext(split=tiny_split, targets=targets)

    def spread(decay):
        train = DLAttack(**params, decay=decay).poison(context, seed=1).train
        fake = train.users >= tiny_split.n_real_users
        return len(np.setdiff1d(train.items[fake], targets))

    assert spread(0.3) > spread(1.0)


@pytest.mark.parametrize("params", DLAttack.invalid_params)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        DLAttack(**params)
