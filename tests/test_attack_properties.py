"""Property tests over every registered poisoning attack (random budgets and seeds), then the
properties particular to each recipe and to target selection, on the tiny dataset."""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attacks  # noqa: F401  (fills the registry)
from attacks.base import ATTACKS, AttackContext, edit_count, get_attack
from benchmark.core.data import Interactions
from benchmark.core.targets import POLICIES, choose_targets, target_pool

POISONING = sorted(n for n, c in ATTACKS.classes.items() if c.family in {"noise", "shilling", "learned"})


@pytest.fixture(scope="module")
def context(tiny_split):
    return AttackContext(tiny_split, choose_targets(tiny_split.train, "unpopular", count=3, seed=0))


def poison(name, context, seed=0, **params):
    cls = ATTACKS.classes[name]
    return cls(**{**cls.test_params, **params}).poison(context, seed=seed)


@pytest.mark.parametrize("name", POISONING)
@settings(max_examples=15, deadline=None)
@given(budget=st.floats(0.001, 1.0), seed=st.integers(0, 2 ** 32 - 1))
def test_any_budget_and_seed(name, budget, seed, context):
    clean, n_real = context.split.train, context.split.n_real_users
    result = poison(name, context, seed, **{ATTACKS.classes[name].budget_param: budget})
    out = result.train
    assert result.budget[ATTACKS.classes[name].budget_param] == budget
    assert result.n_fake_users == result.budget.get("fake_users", 0)
    assert result.injected_interactions == edit_count(clean, out)
    assert out.n_users == n_real + result.n_fake_users
    repeatable = np.zeros(len(out), bool)   # a fake sequence may repeat a target (repeats_targets)
    if getattr(ATTACKS.classes[name], "repeats_targets", False):
        repeatable = (out.users >= n_real) & np.isin(out.items, context.targets)
    assert np.unique(out.keys()[~repeatable]).size == (~repeatable).sum()
    assert np.all((0 <= out.items) & (out.items < clean.n_items))
    assert np.all((0 <= out.users) & (out.users < out.n_users))


def _columns(table):
    return [np.array(getattr(table, c)) for c in ("users", "items", "ratings")]


@pytest.mark.parametrize("name", POISONING)
@settings(max_examples=10, deadline=None)
@given(budget=st.floats(0.001, 1.0), seed=st.integers(0, 2 ** 32 - 1))
def test_any_budget_and_seed_leaves_the_split_alone_and_repeats(name, budget, seed, context):
    """At any budget and seed: nothing of the split is mutated (valid and test included), the same
    seed gives the same table, and fake users are new ids that never collide with real ones:
    ``n_real .. n_real + n_fake - 1``, with real users' rows untouched when fakes are added."""
    split, n_real = context.split, context.split.n_real_users
    before = [a for part in (split.train, split.valid, split.test) for a in _columns(part)]
    targets = context.targets.copy()
    first = poison(name, context, seed, **{ATTACKS.classes[name].budget_param: budget})
    again = poison(name, context, seed, **{ATTACKS.classes[name].budget_param: budget})
    after = [a for part in (split.train, split.valid, split.test) for a in _columns(part)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert np.array_equal(targets, context.targets)
    assert all(np.array_equal(a, b) for a, b in zip(_columns(first.train), _columns(again.train)))
    assert first.budget == again.budget
    out = first.train
    fake_ids = np.unique(out.users[out.users >= n_real])
    assert np.array_equal(fake_ids, np.arange(n_real, n_real + first.n_fake_users))
    if first.n_fake_users:
        real = out.take(out.users < n_real)
        assert np.array_equal(np.sort(real.keys()), np.sort(split.train.keys()))


# ---- noise ---------------------------------------------------------------------------------

def noise(name, context, fraction=0.1, seed=0):
    result = poison(name, context, seed, fraction=fraction)
    assert result.budget == {"fraction": fraction, "interactions": round(fraction * len(context.split.train))}
    return result.budget["interactions"], result.train


def test_insert_adds_new_pairs_of_real_users(context):
    clean = context.split.train
    k, out = noise("noise_insert", context)
    added = out.take(np.arange(len(clean), len(out)))
    assert len(out) == len(clean) + k and np.array_equal(out.keys()[:len(clean)], clean.keys())
    assert not np.isin(added.keys(), clean.keys()).any()
    assert added.users.max() < context.split.n_real_users
    assert np.isin(added.ratings, clean.ratings).all()


def test_remove_drops_exactly_k_rows(context):
    clean = context.split.train
    k, out = noise("noise_remove", context)
    assert len(out) == len(clean) - k and np.isin(out.keys(), clean.keys()).all()


def test_flip_keeps_users_ratings_and_row_counts(context):
    clean = context.split.train
    k, out = noise("noise_flip", context)
    assert np.array_equal(out.users, clean.users) and np.array_equal(out.ratings, clean.ratings)
    assert np.array_equal(out.user_counts(), clean.user_counts())
    changed = out.items != clean.items
    assert changed.sum() == k
    assert not np.isin(out.keys()[changed], clean.keys()).any()   # an item new to that user


def test_rating_noise_changes_k_ratings_only(context):
    clean = context.split.train
    k, out = noise("noise_rating", context)
    assert np.array_equal(out.keys(), clean.keys())
    assert (out.ratings != clean.ratings).sum() == k
    assert np.isin(out.ratings, np.unique(clean.ratings)).all()


def test_rating_noise_refuses_implicit_feedback(tiny_split):
    train = tiny_split.train
    implicit = Interactions.build(train.users, train.items, np.ones(len(train)), train.n_users, train.n_items)
    with pytest.raises(ValueError, match="explicit"):
        poison("noise_rating", AttackContext(tiny_split.with_train(implicit), np.array([0])), fraction=0.1)


# ---- shilling ------------------------------------------------------------------------------

def profiles(result, n_real):
    """Fake rows as (users, items, ratings) and the items every fake profile holds."""
    fake = result.train.take(result.train.users >= n_real)
    common = np.flatnonzero(np.bincount(fake.items, minlength=fake.n_items) == result.n_fake_users)
    return fake, common


@pytest.mark.parametrize("name", ["random", "average", "bandwagon", "segment"])
def test_profiles_hold_targets_selected_and_filler(name, context):
    n_real, top = context.split.n_real_users, context.split.train.ratings.max()
    result = poison(name, context, fake_user_fraction=0.1, filler_items=7)
    fake, common = profiles(result, n_real)
    b = result.budget
    assert b["fake_users"] == 6 and b["filler_items"] == 7 and b["targets"] == 3
    assert b["selected_items"] == (5 if name in ("bandwagon", "segment") else 0)
    assert np.all(fake.user_counts()[n_real:] == 7 + 3 + b["selected_items"])
    assert np.all(fake.ratings[np.isin(fake.items, context.targets)] == top)
    assert np.isin(context.targets, common).all()


def test_default_filler_is_the_mean_profile_length(context):
    train = context.split.train
    result = poison("random", context)
    assert result.budget["filler_items"] == round(len(train) / context.split.n_real_users)


def test_bandwagon_selects_the_most_popular_items(context):
    counts = context.split.train.item_counts()
    fake, common = profiles(poison("bandwagon", context, fake_user_fraction=1.0), context.split.n_real_users)
    selected = np.setdiff1d(common, context.targets)
    others = np.setdiff1d(np.arange(fake.n_items), np.concatenate([selected, context.targets]))
    assert selected.size == 5 and counts[selected].min() >= counts[others].max()
    assert np.all(fake.ratings[np.isin(fake.items, selected)] == context.split.train.ratings.max())


def test_segment_selects_the_targets_genre_and_rates_filler_min(tiny_split):
    genres = tiny_split.dataset.item_genres
    context = AttackContext(tiny_split, choose_targets(tiny_split.train, "unpopular", count=1, seed=3))
    fake, common = profiles(poison("segment", context, fake_user_fraction=1.0), tiny_split.n_real_users)
    selected = np.setdiff1d(common, context.targets)
    assert selected.size == 5
    assert all(set(genres[i]) & set(genres[context.targets[0]]) for i in selected)
    filler = ~np.isin(fake.items, common)
    assert np.all(fake.ratings[filler] == tiny_split.train.ratings.min())


def test_segment_without_genres_uses_the_co_interaction_cluster(tiny_split):
    plain = replace(tiny_split, dataset=replace(tiny_split.dataset, item_genres=None))
    context = AttackContext(plain, choose_targets(tiny_split.train, "popular", count=1, seed=0))
    fake, common = profiles(poison("segment", context, fake_user_fraction=1.0), tiny_split.n_real_users)
    matrix = tiny_split.train.csr()
    co = matrix.T @ np.asarray(matrix[:, context.targets].sum(axis=1)).ravel()
    selected = np.setdiff1d(common, context.targets)
    others = np.setdiff1d(np.arange(tiny_split.train.n_items), np.concatenate([selected, context.targets]))
    assert selected.size == 5 and co[selected].min() >= co[others].max() and co[selected].min() > 0


def filler_mean_correlation(name, context):
    train = context.split.train
    fake, common = profiles(poison(name, context, fake_user_fraction=1.0), context.split.n_real_users)
    filler = fake.take(~np.isin(fake.items, common))
    drawn = np.bincount(filler.items, filler.ratings, train.n_items) / np.maximum(filler.item_counts(), 1)
    means = np.bincount(train.items, train.ratings, train.n_items) / np.maximum(train.item_counts(), 1)
    rated = filler.item_counts() > 0
    return np.corrcoef(drawn[rated], means[rated])[0, 1], filler


def test_average_filler_follows_item_means(context):
    assert filler_mean_correlation("average", context)[0] > 0.6


def test_random_filler_follows_the_global_distribution(context):
    ratings = context.split.train.ratings
    correlation, filler = filler_mean_correlation("random", context)
    assert correlation < 0.4
    assert abs(filler.ratings.mean() - ratings.mean()) < 0.15
    assert abs(filler.ratings.std() - ratings.std()) < 0.2


@pytest.mark.parametrize("params", [{"filler_items": 1000}, {"selected_items": 100}])
def test_budget_beyond_the_data_is_refused(params, context):
    with pytest.raises(ValueError, match="lower"):
        poison("bandwagon", context, **params)


def test_shilling_needs_targets(tiny_split):
    with pytest.raises(ValueError, match="target"):
        poison("average", AttackContext(tiny_split, np.array([], dtype=np.int64)))


# ---- targets and registry ------------------------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
def test_targets_come_from_the_policy_pool(policy, tiny_split):
    train = tiny_split.train
    counts = train.item_counts()
    pool = target_pool(train, policy)
    targets = choose_targets(train, policy, count=4, seed=1)
    assert np.array_equal(targets, choose_targets(train, policy, count=4, seed=1))
    assert np.unique(targets).size == 4 and np.isin(targets, pool).all() and counts[targets].min() >= 1
    if policy == "unpopular":
        assert counts[pool].max() <= np.percentile(counts[counts > 0], 25)
    if policy == "popular":
        assert pool.size == 8 and counts[pool].min() >= np.sort(counts)[-8]


@pytest.mark.parametrize("kwargs", [{"policy": "niche"}, {"count": 0}, {"count": 2.0}, {"count": 1000}])
def test_bad_target_requests_are_refused(kwargs, tiny_split):
    with pytest.raises(ValueError):
        choose_targets(tiny_split.train, **kwargs)


def test_unknown_attack_is_refused():
    with pytest.raises(ValueError, match="unknown attack"):
        get_attack("sybil")


def test_popular_filler_sampling_follows_item_popularity(context):
    """Weighted sampling without replacement: popular items are drawn more often than under
    uniform sampling, and an item's share tracks its train count."""
    n_real, counts = context.split.n_real_users, context.split.train.item_counts()

    def filler_popularity(sampling):
        fake, _ = profiles(poison("random", context, fake_user_fraction=1.0, filler_items=5,
                                  filler_sampling=sampling), n_real)
        filler = fake.items[~np.isin(fake.items, context.targets)]
        return counts[filler].mean(), np.bincount(filler, minlength=len(counts))

    uniform_mean, _ = filler_popularity("uniform")
    popular_mean, drawn = filler_popularity("popular")
    assert popular_mean > 1.2 * uniform_mean
    rated = np.flatnonzero(counts)
    assert np.corrcoef(counts[rated], drawn[rated])[0, 1] > 0.5
