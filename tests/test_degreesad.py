"""DegreeSAD run unsupervised (defenses/degreesad.py): its degree features by hand, and what it
flags on ml-100k (embedded; loading and splitting it takes about 2 s)."""
import numpy as np
import pytest

from attacks.base import AttackContext, get_attack
from benchmark.core.data import Interactions, load_dataset, split_dataset
from benchmark.core.targets import choose_targets
from defenses.base import get_defense
from defenses.degreesad import degree_features, degree_scores, robust_z


@pytest.fixture(scope="module")
def ml100k():
    return split_dataset(load_dataset("ml-100k"), seed=0)


def poison(split, attack, fraction):
    targets = choose_targets(split.train, "unpopular", 5, seed=0)
    result = get_attack(attack, fake_user_fraction=fraction).poison(AttackContext(split, targets), seed=0)
    return split.with_train(result.train)


def test_features_by_hand():
    # profiles: u0 {0,1,2} (item 0 twice), u1 {0,1}, u2 {0,3}, u3 {0}, u4 {0,1,2,3,4}; user 5 none
    rows = [(0, 0), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 3), (3, 0),
            (4, 0), (4, 1), (4, 2), (4, 3), (4, 4)]
    users, items = np.array(rows).T
    inter = Interactions.build(users, items, np.arange(len(rows)) % 5 + 1, 6, 5)
    active, f = degree_features(inter)
    # item degrees (distinct raters): 5, 3, 2, 2, 1
    assert np.array_equal(active, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(f[:, 0], [10 / 3, 4, 3.5, 5, 13 / 5])   # MUD: mean degree
    np.testing.assert_allclose(f[:, 1], [3, 2, 3, 0, 4])               # RUD: max - min
    # QUD: ascending degrees at index (n - 1) // 4; u4's [1, 2, 2, 3, 5] -> index 1
    np.testing.assert_allclose(f[:, 2], [2, 3, 2, 5, 2])


def test_scores_finite_on_degenerate_tables():
    # every user rates the same single item: all MADs are 0
    same = Interactions.build([0, 1, 2], [0, 0, 0], [1, 1, 1], 3, 2)
    active, score = degree_scores(same)
    assert np.array_equal(active, [0, 1, 2]) and np.all(score == 0)
    assert robust_z(np.array([[1.0], [1.0], [5.0]])).ravel().tolist() == [0.0, 0.0, 4.0]
    empty = Interactions.build([], [], [], 3, 2)
    assert degree_scores(empty)[0].size == 0
    result = get_defense("degree_sad").clean(split_dataset(load_dataset("tests/data/tiny"), 0)
                                             .with_train(empty), seed=0)
    assert result.flagged_users.size == 0


@pytest.mark.parametrize("attack", ["random", "bandwagon", "segment"])
def test_flags_mostly_fake_profiles_on_ml100k(ml100k, attack):
    poisoned = poison(ml100k, attack, 0.05)
    n_real, train = ml100k.n_real_users, poisoned.train
    n_fake = train.n_users - n_real
    active = np.unique(train.users).size
    result = get_defense("degree_sad", flag_fraction=n_fake / active).clean(poisoned, seed=0)
    fake = result.flagged_users >= n_real
    assert result.flagged_users.size == n_fake
    assert fake.mean() >= 0.7            # 5 % base rate; 0.80-0.90 measured
    assert not np.isin(result.train.users, result.flagged_users).any()


def test_flag_fraction_sets_the_count_and_ratings_do_not_matter(ml100k):
    active = np.unique(ml100k.train.users).size
    for fraction in (0.01, 0.1):
        result = get_defense("degree_sad", flag_fraction=fraction).clean(ml100k, seed=0)
        assert result.flagged_users.size == round(fraction * active) == result.info["n_flagged"]
    # degree only: the same users are flagged when every rating is replaced by 1
    poisoned = poison(ml100k, "random", 0.03)
    t = poisoned.train
    implicit = poisoned.with_train(Interactions.build(t.users, t.items, np.ones(len(t)), t.n_users, t.n_items))
    defense = get_defense("degree_sad")
    assert np.array_equal(defense.clean(poisoned, 0).flagged_users, defense.clean(implicit, 0).flagged_users)
