"""PGA (Li et al., NeurIPS 2016): budget, profile shape, determinism, and that the learned
profiles beat random ones on the surrogate, on the tiny checked-in dataset."""
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.base import AttackContext
from attacks.learned import discretise, project_capped_simplex
from attacks.pga import PGA
from benchmark.core.data import load_dataset, split_dataset

TINY = Path(__file__).parent / "data" / "tiny"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: extra threads only spin on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def split():
    return split_dataset(load_dataset(str(TINY)), seed=0)


@pytest.fixture(scope="module")
def targets(split):
    counts = split.train.item_counts()
    return np.sort(np.argsort(counts, kind="stable")[:2])   # the two least popular items


@pytest.fixture(scope="module")
def result(split, targets):
    return PGA(**PGA.test_params).poison(AttackContext(split=split, targets=targets), seed=3)


def fake_profiles(result, split):
    train = result.train
    fake = train.users >= split.n_real_users
    return {int(u): train.items[fake][train.users[fake] == u] for u in np.unique(train.users[fake])}


@pytest.mark.parametrize("params", PGA.invalid_params)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        PGA(**params)


def test_no_targets_is_refused(split):
    with pytest.raises(ValueError):
        PGA(**PGA.test_params).poison(AttackContext(split=split, targets=np.array([], int)), seed=0)


def test_budget_and_profiles(result, split, targets):
    n_real = split.n_real_users
    n_fake = max(1, round(PGA.test_params["fake_user_fraction"] * n_real))
    fillers = PGA.test_params["filler_items"]
    assert result.n_fake_users == n_fake
    assert result.budget == {"fake_user_fraction": PGA.test_params["fake_user_fraction"],
                             "fake_users": n_fake, "filler_items": fillers, "targets": len(targets)}
    train = result.train
    assert train.n_users == n_real + n_fake and train.n_items == split.train.n_items
    # Real rows untouched, fake rows appended.
    k = len(split.train)
    assert np.array_equal(train.users[:k], split.train.users)
    assert np.array_equal(train.items[:k], split.train.items)
    assert result.injected_interactions == len(train) - k == n_fake * (fillers + len(targets))
    profiles = fake_profiles(result, split)
    assert sorted(profiles) == list(range(n_real, n_real + n_fake))
    for items in profiles.values():
        assert len(np.unique(items)) == len(items) == fillers + len(targets)
        assert set(targets.tolist()) <= set(items.tolist())
    assert np.all(train.ratings[k:] == split.train.ratings.max())


def test_default_filler_count_is_mean_profile_length(split, targets):
    params = {**PGA.test_params, "filler_items": None}
    out = PGA(**params).poison(AttackContext(split=split, targets=targets), seed=0)
    assert out.budget["filler_items"] == round(len(split.train) / split.n_real_users)


def test_deterministic_per_seed(split, targets, result):
    again = PGA(**PGA.test_params).poison(AttackContext(split=split, targets=targets), seed=3)
    assert np.array_equal(again.train.users, result.train.users)
    assert np.array_equal(again.train.items, result.train.items)


def test_projection_keeps_the_filler_budget():
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(4, 30, generator=g) * 3
    allowed = torch.ones(4, 30, dtype=torch.bool)
    allowed[:, :2] = False
    X = project_capped_simplex(Y, 7.0, allowed)
    assert torch.all(X >= 0) and torch.all(X <= 1) and torch.all(X[:, :2] == 0)
    assert torch.allclose(X.sum(1), torch.full((4,), 7.0), atol=1e-4)
    assert torch.all(discretise(X, 7).sum(1) == 7)


def surrogate_target_score(attack, split, targets, profiles, seed):
    """Mean target score for real users without the target, on a fresh surrogate refitted with
    the fake profiles (filler lists), after the same refit the attack uses."""
    generator = torch.Generator().manual_seed(seed)
    model, objective = attack.fit_surrogate(split, targets, generator)
    pos = torch.as_tensor(np.stack(profiles))
    _, T, _ = model.retrain(pos, torch.ones(pos.shape), model.start(len(profiles), generator), 100)
    scores = model.P @ T.T
    return float((scores * objective.eligible).sum() / objective.eligible.sum())


def test_pga_beats_random_profiles_on_the_surrogate(split, targets):
    params = {**PGA.test_params, "iterations": 8, "pretrain_epochs": 20, "negatives": 32}
    attack = PGA(**params)
    out = attack.poison(AttackContext(split=split, targets=targets), seed=1)
    learned = [np.setdiff1d(items, targets) for items in fake_profiles(out, split).values()]
    fillers, n_fake = params["filler_items"], len(learned)
    candidates = np.setdiff1d(np.arange(split.train.n_items), targets)
    rng = np.random.default_rng(0)
    for seed in (11, 12):   # surrogates the attack never saw
        pga = surrogate_target_score(attack, split, targets, learned, seed)
        random = np.mean([surrogate_target_score(
            attack, split, targets, [rng.choice(candidates, fillers, replace=False) for _ in range(n_fake)], seed)
            for _ in range(3)])
        assert pga > random


def test_apr_surrogate_is_adversarially_trained(split):
    """``surrogate_apr_eps``: the loss of the surrogate an attack adapted to APR optimises
    against rises less under APR's own perturbation than a plain surrogate's trained as many
    epochs (and is lower there); and the attack says which surrogate it used."""
    from attacks.surrogate import bpr_loss, train_bpr
    from benchmark.core.embeddings import row_normalise

    train = split.train
    n_users, n_items, eps = train.n_users, train.n_items, 0.5
    u = torch.as_tensor(np.array(train.users))
    i = torch.as_tensor(np.array(train.items))
    j = torch.randint(0, n_items, u.shape, generator=torch.Generator().manual_seed(5))

    def perturbed_loss(P, Q):
        P, Q = P.clone().requires_grad_(True), Q.clone().requires_grad_(True)
        clean = bpr_loss(P, Q, u, i, j)
        grad_p, grad_q = torch.autograd.grad(clean, [P, Q])
        moved = bpr_loss(P + eps * row_normalise(grad_p), Q + eps * row_normalise(grad_q), u, i, j)
        return float(moved), float(moved - clean)

    def fit(epochs, apr_eps):
        return train_bpr(train.users, train.items, n_users, n_items, 8, epochs, 0.05, 256,
                         torch.Generator().manual_seed(0), apr_eps)

    plain, adversarial = fit(40, 0.0), fit(20, eps)
    (adversarial_loss, adversarial_rise), (plain_loss, plain_rise) = (perturbed_loss(*adversarial), perturbed_loss(*plain))
    assert adversarial_loss < plain_loss and adversarial_rise < plain_rise
    assert "APR" in PGA(surrogate_apr_eps=eps).describe()["surrogate"]
    assert "APR" not in PGA().describe()["surrogate"]
