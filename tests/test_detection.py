"""Focused checks of the shilling detectors (defenses/pca_detector.py, defenses/feature_detector.py)
on small data.

The synthetic dataset below is generated in memory (300 users, 150 items, genre tastes, long-tail
popularity), large enough for a detector to learn something and small enough to run in seconds.
"""
import numpy as np
import pytest

from attacks.base import AttackContext, get_attack
from benchmark.core.data import Dataset, Interactions, load_dataset, split_dataset
from benchmark.core.targets import choose_targets
from defenses import pca_detector
from defenses.base import get_defense
from defenses.feature_detector import FEATURES, profile_features
from defenses.pca_detector import pca_contributions


def synthetic(n_users=300, n_items=150, seed=7) -> Dataset:
    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
    item_genre = np.arange(n_items) % len(genres)
    popularity = 1.0 / (1 + rng.permutation(n_items)) ** 0.7
    quality = rng.normal(0, 0.5, n_items)
    users, items, ratings = [], [], []
    for u in range(n_users):
        taste = rng.integers(len(genres))
        weight = popularity * np.where(item_genre == taste, 4.0, 1.0)
        n = int(np.clip(rng.lognormal(3.2, 0.5), 8, 120))
        chosen = rng.choice(n_items, size=n, replace=False, p=weight / weight.sum())
        r = (3.3 + quality[chosen] + np.where(item_genre[chosen] == taste, 0.8, -0.3)
             + rng.normal(0, 0.8, n))
        users += [u] * n
        items += list(chosen)
        ratings += list(np.clip(np.round(r), 1, 5))
    inter = Interactions.build(users, items, ratings, n_users, n_items)
    inter = inter.take(np.lexsort((inter.items, inter.users)))
    return Dataset("synthetic", inter, np.array([str(u) for u in range(n_users)]),
                   np.array([str(i) for i in range(n_items)]),
                   item_genres=tuple((genres[g],) for g in item_genre))


@pytest.fixture(scope="module")
def split():
    return split_dataset(synthetic(), seed=0)


@pytest.fixture(scope="module")
def tiny():
    return split_dataset(load_dataset("tests/data/tiny"), seed=0)


def poison(split, attack, fraction=0.05, seed=0, **params):
    targets = choose_targets(split.train, "unpopular", 5, seed=seed)
    result = get_attack(attack, fake_user_fraction=fraction, **params).poison(
        AttackContext(split, targets), seed=seed)
    return split.with_train(result.train)


def auc(labels, scores):
    """Probability that a random fake outranks a random real user (ties count half)."""
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return greater + 0.5 * ties


# -- features ---------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["random", "average", "bandwagon", "segment"])
def test_features_finite_and_one_row_per_active_user(split, attack):
    poisoned = poison(split, attack)
    users, features = profile_features(poisoned.train)
    assert features.shape == (users.size, len(FEATURES)) and len(FEATURES) >= 6
    assert np.isfinite(features).all()
    assert np.array_equal(users, np.unique(poisoned.train.users))


def test_features_finite_on_implicit_feedback_and_degenerate_profiles():
    # one rating level, a user with a single item, an item rated by everyone
    users = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    items = np.array([0, 1, 2, 0, 0, 3, 0, 1, 2, 3])
    inter = Interactions.build(users, items, np.ones(users.size), 5, 4)
    active, features = profile_features(inter)
    assert np.array_equal(active, [0, 1, 2, 3]) and np.isfinite(features).all()
    active, score = pca_contributions(inter, 3)
    assert np.isfinite(score).all() and score.shape == active.shape


def test_feature_definitions_on_a_hand_computed_profile():
    # two users, two items: user 0 rates (5, 1), user 1 rates (3, 1)
    inter = Interactions.build([0, 0, 1, 1], [0, 1, 0, 1], [5, 1, 3, 1], 2, 2)
    _, f = profile_features(inter, n_neighbors=1)
    col = {name: f[:, i] for i, name in enumerate(FEATURES)}
    # item means 4 and 1, each rated twice: user 0 deviates |5-4| + |1-1| = 1
    assert col["wda"][0] == pytest.approx(1 / 2)
    assert col["rdma"][0] == pytest.approx(1 / 2 / 2)
    assert col["wdma"][0] == pytest.approx(1 / 4 / 2)
    assert col["fmtd"][0] == pytest.approx(4.0)        # max-rated part 5, filler mean 1
    assert col["max_share"][0] == pytest.approx(0.5)
    assert col["fmtd"][1] == 0.0                       # user 1 has no item at the max rating


# -- PCA-VarSelect ------------------------------------------------------------------------------

def test_pca_flags_mostly_fake_users_on_an_obvious_attack(tiny):
    poisoned = poison(tiny, "random", fraction=0.1)
    n_real, n_users = tiny.n_real_users, poisoned.train.n_users
    n_fake = n_users - n_real
    defense = get_defense("pca_detector", flag_fraction=n_fake / n_users)
    result = defense.clean(poisoned, seed=0)
    fake = result.flagged_users >= n_real
    assert result.flagged_users.size == n_fake
    assert fake.mean() >= 0.6 and fake.sum() / n_fake >= 0.6
    assert not np.isin(result.train.users, result.flagged_users).any()
    assert result.info["n_flagged"] == n_fake


def test_pca_flag_fraction_sets_the_number_flagged(split):
    active = np.unique(split.train.users).size
    for fraction in (0.01, 0.1):
        result = get_defense("pca_detector", flag_fraction=fraction).clean(split, seed=0)
        assert result.flagged_users.size == max(1, round(fraction * active))


def test_pca_sparse_and_dense_solvers_agree(split, monkeypatch):
    train = poison(split, "average").train
    users, sparse_score = pca_contributions(train, 3, np.random.default_rng(0))
    monkeypatch.setattr(pca_detector, "DENSE_SVD_MAX", 10 ** 9)
    same_users, dense_score = pca_contributions(train, 3)
    assert np.array_equal(users, same_users)
    np.testing.assert_allclose(sparse_score, dense_score, atol=1e-6)


# -- supervised feature detector ----------------------------------------------------------------

FAST = {"train_fractions": [0.05, 0.1], "n_estimators": 50}


def test_feature_detector_generalises_to_an_unseen_attack(split):
    """Trained on random + average only, it ranks bandwagon profiles far above chance."""
    defense = get_defense("feature_detector", train_attacks=["random", "average"], **FAST)
    poisoned = poison(split, "bandwagon")
    users, proba = defense.scores(poisoned, seed=0)
    fake = users >= split.n_real_users
    assert auc(fake, proba) > 0.8
    # and flagging the highest-scored users catches fakes well beyond the base rate
    top = users[np.argsort(-proba, kind="stable")[:fake.sum()]]
    assert np.mean(top >= split.n_real_users) > 3 * fake.mean()


def test_feature_detector_detects_the_attacks_it_was_trained_on(split):
    defense = get_defense("feature_detector", train_attacks=["random", "average"], **FAST)
    poisoned = poison(split, "average")
    result = defense.clean(poisoned, seed=0)
    flagged = result.flagged_users
    assert flagged.size and np.mean(flagged >= split.n_real_users) >= 0.9
    clean = defense.clean(split, seed=0)
    assert clean.flagged_users.size <= 0.02 * split.n_real_users   # low false-positive rate


def test_feature_detector_never_sees_the_evaluated_fake_profiles(split):
    """Its training data depends only on the real-user part of train: the same with or without
    the evaluated attack, and with other seeds than the evaluation's."""
    defense = get_defense("feature_detector", train_attacks=["random"], train_fractions=[0.05])
    clean_data = defense.training_data(split, seed=5)
    poisoned_data = defense.training_data(poison(split, "random", seed=5), seed=5)
    for a, b in zip(clean_data[:3], poisoned_data[:3]):
        assert np.array_equal(a, b)
    features, labels, ids, skipped = clean_data
    assert labels.any() and (~labels).any() and not skipped
    assert np.array_equal(labels, ids >= split.n_real_users)


def test_feature_detector_threshold_is_monotone(split):
    poisoned = poison(split, "random")
    low = get_defense("feature_detector", train_attacks=["random"], threshold=0.2, **FAST)
    high = get_defense("feature_detector", train_attacks=["random"], threshold=0.8, **FAST)
    assert set(high.clean(poisoned, seed=0).flagged_users) <= set(low.clean(poisoned, seed=0).flagged_users)


def test_feature_detector_skips_infeasible_training_attacks(tiny):
    # filler larger than the tiny catalogue: that configuration is skipped and reported
    defense = get_defense("feature_detector", train_attacks=["random"], train_fractions=[0.1],
                          train_filler_items=[None, 500], n_estimators=10)
    result = defense.clean(tiny, seed=0)
    assert len(result.info["skipped_training_attacks"]) == 1
    only_bad = get_defense("feature_detector", train_attacks=["random"], train_fractions=[0.1],
                           train_filler_items=[500], n_estimators=10)
    with pytest.raises(ValueError, match="none of the training attacks"):
        only_bad.clean(tiny, seed=0)
