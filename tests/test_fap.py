"""FAP with unsupervised seeds (defenses/fap.py): the transition matrices, the propagation on
hand-made graphs, and what it flags on ml-100k (embedded; about 2 s to load and split)."""
import numpy as np
import pytest

from benchmark.core.data import Interactions, load_dataset, split_dataset
from defenses.base import get_defense
from defenses.degreesad import degree_scores
from defenses.fap import propagate, transition_matrices
from tests.test_degreesad import poison


@pytest.fixture(scope="module")
def ml100k():
    return split_dataset(load_dataset("ml-100k"), seed=0)


def test_transitions_are_row_stochastic_and_weight_deviating_ratings():
    # u0 rates items 0, 1 with 5 and 1; u1 rates both 3; u2 rates item 1 with 3
    inter = Interactions.build([0, 0, 1, 1, 2], [0, 1, 0, 1, 1], [5, 1, 3, 3, 3], 3, 2)
    users, t_ui, t_iu = transition_matrices(inter)
    np.testing.assert_allclose(t_ui.sum(axis=1), 1.0)
    np.testing.assert_allclose(t_iu.sum(axis=1), 1.0)
    # item 0's mean is 4: u0's 5 deviates from its item mean (0.25), user mean (2/3) and the
    # global mean 3 (2/3) more than u1's 3 does (0.25 + 0 + 0): w = 2.583 against 1.25
    np.testing.assert_allclose(t_iu[0].toarray().ravel(), [2.5833333 / 3.8333333, 1.25 / 3.8333333, 0])
    # on implicit feedback every edge weighs 1
    implicit = Interactions.build(inter.users, inter.items, np.ones(5), 3, 2)
    _, t_ui, t_iu = transition_matrices(implicit)
    np.testing.assert_allclose(t_ui.toarray(), [[0.5, 0.5], [0.5, 0.5], [0, 1]])
    np.testing.assert_allclose(t_iu.toarray(), [[0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])


def test_propagation_stays_in_the_seed_component_and_rises_monotonically():
    # component A: users 0-2 on items 0-1; component B: users 3-4 on items 2-3
    inter = Interactions.build([0, 0, 1, 2, 3, 3, 4], [0, 1, 1, 1, 2, 3, 3], np.ones(7), 5, 4)
    users, t_ui, t_iu = transition_matrices(inter)
    previous = np.zeros(5)
    for rounds in (1, 2, 5, 20):
        p, done, _ = propagate(t_ui, t_iu, np.array([0]), tol=1e-12, max_iter=rounds)
        assert done == rounds and p[0] == 1.0
        assert np.all(p[3:] == 0) and np.all((p[1:3] > 0) & (p[1:3] < 1))
        assert np.all(p >= previous - 1e-15)
        previous = p
    p, done, converged = propagate(t_ui, t_iu, np.array([0]), tol=1e-3, max_iter=1000)
    assert converged and done < 1000


def test_one_true_seed_reaches_the_other_fake_profiles(ml100k):
    """The propagation itself: from one fake profile, the other fakes (same targets) rise first."""
    poisoned = poison(ml100k, "random", 0.05)
    users, t_ui, t_iu = transition_matrices(poisoned.train)
    fakes = np.flatnonzero(users >= ml100k.n_real_users)
    p, _, _ = propagate(t_ui, t_iu, fakes[:1])
    p[fakes[0]] = -1.0
    top = users[np.argsort(-p, kind="stable")[:fakes.size - 1]]
    assert np.mean(top >= ml100k.n_real_users) >= 0.5   # 5 % base rate; 0.72 measured


@pytest.mark.parametrize("attack", ["random", "segment"])
def test_flags_seeds_and_more_fakes_than_the_seeds_on_ml100k(ml100k, attack):
    poisoned = poison(ml100k, attack, 0.05)
    n_real, train = ml100k.n_real_users, poisoned.train
    n_fake = train.n_users - n_real
    active, suspicion = degree_scores(train)
    fraction = n_fake / active.size
    defense = get_defense("fap", flag_fraction=fraction, seed_fraction=0.2)
    result = defense.clean(poisoned, seed=0)
    flagged = result.flagged_users
    n_seeds = result.info["n_seeds"]
    assert flagged.size == n_fake and n_seeds == round(0.2 * n_fake)
    seeds = active[np.lexsort((active, -suspicion))[:n_seeds]]
    assert np.isin(seeds, flagged).all()                  # the seeds are flagged
    assert np.sum(flagged >= n_real) >= 0.8 * n_fake      # 0.94-1.0 measured
    assert np.sum(flagged >= n_real) > n_seeds


def test_flag_fraction_sets_the_count_and_pca_seeds_run(ml100k):
    active = np.unique(ml100k.train.users).size
    for fraction, seed_score in ((0.02, "degree"), (0.1, "pca")):
        defense = get_defense("fap", flag_fraction=fraction, seed_score=seed_score)
        result = defense.clean(ml100k, seed=1)
        assert result.flagged_users.size == round(fraction * active) == result.info["n_flagged"]
        assert np.array_equal(result.flagged_users, defense.clean(ml100k, seed=1).flagged_users)
