"""GTA (attacks/gta.py): the reference's profile structure and best-round rule, on the tiny data."""
import numpy as np
import pytest
import torch

import attacks  # noqa: F401  (fills the registry)
from attacks.base import ATTACKS, AttackContext
from attacks.gta import GTA, LightGCNProxy, _Data
from benchmark.core.targets import choose_targets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def context(tiny_split):
    return AttackContext(tiny_split, choose_targets(tiny_split.train, "unpopular", count=3, seed=0))


def build(**params):
    return GTA(**{**GTA.test_params, **params})


def fake_rows(result, split):
    fake = result.train.take(result.train.users >= split.n_real_users)
    return [np.sort(fake.items[fake.users == u]) for u in np.unique(fake.users)]


def test_later_rounds_hold_targets_shared_popular_seeds_and_own_predictions(context, monkeypatch):
    """When each round's hit ratio beats the last, the last round's profiles are returned: the
    targets, the same filler_items // 2 seed items (from the most popular fifth) in every
    profile, and the rest from each fake user's own proxy scores."""
    split, targets = context.split, np.unique(context.targets)
    rising = iter(np.arange(100, dtype=float))
    monkeypatch.setattr(GTA, "_hit_ratio", lambda self, *a: next(rising))
    result = build(rounds=3).poison(context, seed=0)
    rows = fake_rows(result, split)
    assert result.budget["seed_items"] == 3
    shared = set.intersection(*(set(r) for r in rows)) - set(targets)
    assert len(shared) >= 3
    counts = np.bincount(split.train.items[split.train.users < split.n_real_users], minlength=split.train.n_items)
    popular = set(np.argsort(counts, kind="stable")[-(split.train.n_items // 5):])
    assert len(shared & popular) >= 3
    assert all(np.isin(targets, r).all() and r.size == targets.size + 6 for r in rows)


def test_the_random_start_is_kept_when_no_round_beats_it(context, monkeypatch):
    """Strictly better only, as the reference: falling hit ratios keep the random start."""
    split, targets = context.split, np.unique(context.targets)
    falling = iter(-np.arange(100, dtype=float))
    monkeypatch.setattr(GTA, "_hit_ratio", lambda self, *a: next(falling))
    start = fake_rows(build(rounds=1).poison(context, seed=0), split)
    again = fake_rows(build(rounds=3).poison(context, seed=0), split)
    assert all(np.array_equal(a, b) for a, b in zip(start, again))
    shared = set.intersection(*(set(r) for r in start)) - set(targets)
    assert len(shared) < 3   # random fillers: no common seed set


def test_cw_term_lifts_the_targets_on_the_proxy(context):
    """The proxy's CW term (the reference's 0.01 * CW, here stronger to show on tiny data) raises
    the targets' hit ratio among real users over plain BPR from the same start."""
    split, targets = context.split, np.unique(context.targets)
    train, n_real = split.train, split.n_real_users
    real = train.users < n_real

    def hit(weight):
        attack = build(cw_weight=weight, dim=16, top_k=10)
        generator = torch.Generator().manual_seed(0)
        data = _Data(train.users[real], train.items[real], n_real, n_real + 2, train.n_items)
        data.set_fake(np.vstack([targets, targets]))
        model = LightGCNProxy(n_real + 2, train.n_items, 16, 2, generator)
        model.set_graph(data.users, data.items)
        opt = torch.optim.Adam([model.user, model.item], lr=0.01)
        attack._train(model, data, targets, 20, opt, generator)
        return attack._hit_ratio(model, data, targets)
    assert hit(1.0) > hit(0.0)


def test_registered_as_learned_with_a_lightgcn_proxy():
    cls = ATTACKS.classes["gta"]
    assert cls.family == "learned" and cls.surrogate == "LightGCN" and cls.knowledge == "gray-box"
    defaults = GTA().params
    assert (defaults["rounds"], defaults["inner_epochs"], defaults["inject_epochs"]) == (5, 6, 30)
