"""Power-user and power-item attacks (attacks/power.py): what defines them, on the tiny data."""
import numpy as np
import pytest

import attacks  # noqa: F401  (fills the registry)
from attacks.base import AttackContext, get_attack
from attacks.power import centrality
from benchmark.core.targets import choose_targets


@pytest.fixture(scope="module")
def context(tiny_split):
    return AttackContext(tiny_split, choose_targets(tiny_split.train, "unpopular", count=3, seed=0))


def dense_real(split):
    train, n_real = split.train, split.n_real_users
    X = np.zeros((n_real, train.n_items))
    real = train.users < n_real
    X[train.users[real], train.items[real]] = 1.0
    return X


def in_degree_bounds(X, k):
    """Per row: how many other rows surely have it among their k most similar (similarity above
    their k-th largest, and positive), and how many may (at or above it: ties)."""
    norm = np.sqrt(np.maximum(X.sum(1), 1.0))
    sim = (X @ X.T) / np.outer(norm, norm)
    np.fill_diagonal(sim, -np.inf)
    kth = np.sort(sim, axis=1)[:, -k][:, None]
    sure = (sim > kth) & (sim > 0)
    maybe = (sim >= kth) & (sim > 0)
    return sure.sum(0), maybe.sum(0)


def test_centrality_matches_a_brute_force_count(tiny_split):
    import scipy.sparse as sp
    X = dense_real(tiny_split)
    for matrix in (X, X.T):
        ours = centrality(sp.csr_matrix(matrix), 5, "in_degree")
        low, high = in_degree_bounds(matrix, 5)
        assert (low <= ours).all() and (ours <= high).all()
        assert np.allclose(centrality(sp.csr_matrix(matrix), 5, "num_ratings"), matrix.sum(1))
        agg = centrality(sp.csr_matrix(matrix), 5, "aggregated_similarity")
        assert (agg <= ours + 1e-9).all() and (agg[ours > 0] > 0).all()   # cosine in (0, 1]


@pytest.mark.parametrize("selection", ["in_degree", "aggregated_similarity", "num_ratings"])
def test_power_users_profiles_copy_the_most_central_users(context, selection):
    split, targets = context.split, np.unique(context.targets)
    attack = get_attack("power_user", fake_user_fraction=0.1, filler_items=5, neighbours=10,
                        selection=selection)
    power = attack.power_users(split)
    result = attack.poison(context, seed=0)
    out, n_real = result.train, split.n_real_users
    X = dense_real(split)
    if selection == "num_ratings":
        assert X[power[0]].sum() == X.sum(1).max()
    train = split.train
    rating = {(u, i): r for u, i, r in zip(train.users, train.items, train.ratings)}
    for f in range(result.n_fake_users):
        rows = out.users == n_real + f
        items, ratings = out.items[rows], out.ratings[rows]
        assert np.isin(targets, items).all()
        assert (ratings[np.isin(items, targets)] == train.ratings.max()).all()
        copied = ~np.isin(items, targets)
        user = power[f]
        if X[user].sum() - X[user, targets].sum() >= 5:   # a long enough profile: a copy
            assert X[user, items[copied]].all()
            assert all(rating[(user, i)] == r for i, r in zip(items[copied], ratings[copied]))


def test_power_user_order_follows_centrality(context):
    import scipy.sparse as sp
    attack = get_attack("power_user", neighbours=10)
    power = attack.power_users(context.split)
    score = centrality(sp.csr_matrix(dense_real(context.split)), 10, "in_degree")
    assert (np.diff(score[power]) <= 0).all()


def test_power_item_fillers_are_the_most_central_items(context):
    split, targets = context.split, np.unique(context.targets)
    import scipy.sparse as sp
    X = dense_real(split)
    score = centrality(sp.csr_matrix(X.T), 10, "in_degree")
    score[targets] = -1
    score[X.sum(0) == 0] = -1
    result = get_attack("power_item", fake_user_fraction=0.1, filler_items=5, neighbours=10).poison(context, 0)
    fake = result.train.take(result.train.users >= split.n_real_users)
    fillers = np.unique(fake.items[~np.isin(fake.items, targets)])
    assert fillers.size == 5                           # every profile: the same five power items
    assert score[fillers].min() >= np.sort(score)[-5]  # and they are the five most central
    assert np.isin(targets, fake.items).all()


def test_power_item_pool_draws_among_the_top_items(context):
    split, targets = context.split, np.unique(context.targets)
    attack = get_attack("power_item", fake_user_fraction=0.2, filler_items=3, neighbours=10, pool=8)
    top = attack.power_items(split, targets, 3)[:8]
    result = attack.poison(context, seed=1)
    fake = result.train.take(result.train.users >= split.n_real_users)
    fillers = fake.items[~np.isin(fake.items, targets)]
    assert np.isin(fillers, top).all() and np.unique(fillers).size > 3
    assert result.budget["power_pool"] == 8


def test_popularity_selection_is_black_box():
    assert get_attack("power_item", selection="num_ratings").describe()["knowledge"] == "black-box"
    assert get_attack("power_item").describe()["knowledge"] == "gray-box"
    assert get_attack("power_user").describe()["knowledge"] == "gray-box"
