"""RAPU-R (attacks/rapu.py): fillers are the popular items the surrogate scores highest for an
average user plus each target, on the tiny data."""
import numpy as np
import pytest
import torch

import attacks  # noqa: F401  (fills the registry)
from attacks.base import AttackContext
from attacks.rapu import RAPUR
from benchmark.core.targets import choose_targets


@pytest.fixture(scope="module")
def context(tiny_split):
    return AttackContext(tiny_split, choose_targets(tiny_split.train, "unpopular", count=3, seed=0))


def test_fillers_follow_the_reversed_score(context, monkeypatch):
    """With zero user factors (epsilon = 0) the score is q_t . q_c: give each target its own
    direction and three popular items along it; those are the target's fillers."""
    split, targets = context.split, np.unique(context.targets)
    train, n_real = split.train, split.n_real_users
    counts = np.bincount(train.items[train.users < n_real], minlength=train.n_items)
    popular = np.argsort(-counts, kind="stable")
    popular = popular[~np.isin(popular, targets)]
    Q = torch.zeros(train.n_items, len(targets))
    expected = {}
    for j, t in enumerate(targets):
        Q[t, j] = 1.0
        expected[t] = np.sort(popular[3 * j:3 * j + 3])
        Q[torch.as_tensor(expected[t]), j] = torch.tensor([3.0, 2.0, 1.0])
    monkeypatch.setattr(RAPUR, "embeddings", lambda self, split, g: (torch.zeros(n_real, len(targets)), Q))
    attack = RAPUR(fake_user_fraction=0.2, filler_items=3, popularity_base=0.5)
    result = attack.poison(context, seed=0)
    fake = result.train.take(result.train.users >= n_real)
    for f, user in enumerate(np.unique(fake.users)):
        items = fake.items[fake.users == user]
        assert np.isin(targets, items).all()
        assert np.array_equal(np.sort(items[~np.isin(items, targets)]), expected[targets[f % len(targets)]])


def test_fillers_come_from_the_popular_pool_and_repeat_per_target(context):
    split, targets = context.split, np.unique(context.targets)
    train, n_real = split.train, split.n_real_users
    result = RAPUR(**{**RAPUR.test_params, "fake_user_fraction": 0.3}).poison(context, seed=0)
    fake = result.train.take(result.train.users >= n_real)
    rows = [np.sort(fake.items[fake.users == u]) for u in np.unique(fake.users)]
    counts = np.bincount(train.items[train.users < n_real], minlength=train.n_items)
    allowed = np.flatnonzero(counts > 0)
    allowed = allowed[~np.isin(allowed, targets)]
    pool = allowed[np.argsort(-counts[allowed], kind="stable")][:result.budget["popular_pool"]]
    for f, row in enumerate(rows):
        assert np.isin(row[~np.isin(row, targets)], pool).all()
        if f + len(targets) < len(rows):
            assert np.array_equal(row, rows[f + len(targets)])
