"""PCA-VarSelect shilling detection (Mehta & Nejdl 2009), unsupervised (kind ``detector``).

Fake profiles are nearly uncorrelated with the real population, so they contribute least to the
top principal components of the user-user covariance. The detector flags a fixed fraction of the
users (the paper assumes the number of attackers is known; a deployed defense does not, so
``flag_fraction`` is a parameter). It runs on every poisoned train table and on the clean one, so
the benchmark measures what it catches *and* what it costs on clean data; vectorised (numpy /
scipy.sparse), deterministic per seed, in the benchmark's index space (``defenses.detection``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from benchmark.core import params as check
from benchmark.core.data import Interactions
from benchmark.core.params import Param
from defenses.base import register
from defenses.detection import ScoredDetector, dedupe

MEHTA_NEJDL = ("Mehta, Nejdl. Unsupervised Strategies for Shilling Detection and Robust "
               "Collaborative Filtering. User Modeling and User-Adapted Interaction 19(1-2), 2009")


DENSE_SVD_MAX = 100   # matrices with at most this many rows or columns use a dense SVD


def _zscore_operator(train: Interactions):
    """The z-scored user-item rating matrix of the active users, users as variables.

    Missing ratings are 0 (the rating matrix as stored), and each user's row is z-scored over
    all items: ``Z = D^-1 (R - mu 1^T)`` with ``mu`` and ``D`` the row means and standard
    deviations. Z is dense, so it is returned as ``(R, mu, sd)`` and applied as a LinearOperator;
    on implicit feedback (one rating level) R is the binary interaction matrix.
    """
    users, items, ratings = dedupe(train)
    active, rows = np.unique(users, return_inverse=True)
    n_rows, n_items = active.size, train.n_items
    if np.unique(ratings).size <= 1:
        ratings = np.ones_like(ratings)
    matrix = sp.csr_matrix((ratings, (rows, items)), shape=(n_rows, n_items))
    mu = np.bincount(rows, ratings, n_rows) / n_items
    sd = np.sqrt(np.maximum(np.bincount(rows, ratings ** 2, n_rows) / n_items - mu ** 2, 0.0))
    sd = np.where(sd > 1e-12, sd, 1.0)   # a user who rated every item alike stays all zero
    return active, matrix, mu, sd


def pca_contributions(train: Interactions, n_components: int = 3, rng=None):
    """(active user ids, sum of squared loadings of each on the top ``n_components`` PCs).

    The PCs of the user-user covariance ``Z Z^T`` are the left singular vectors of the (row
    centred) z-score matrix ``Z``; a user's loading on a PC is its coefficient in that vector.
    Small matrices use a dense SVD, larger ones ARPACK (``svds``) on a LinearOperator that never
    densifies Z (6k users x 3.7k items stays at the size of the sparse rating matrix).
    """
    import scipy.sparse.linalg as spla
    active, matrix, mu, sd = _zscore_operator(train)
    n_rows, n_cols = matrix.shape
    k = min(n_components, n_rows, n_cols)
    if k < 1:
        return active, np.zeros(active.size)
    if min(n_rows, n_cols) <= DENSE_SVD_MAX or k >= min(n_rows, n_cols) - 1:
        dense = (matrix.toarray() - mu[:, None]) / sd[:, None]
        u = np.linalg.svd(dense, full_matrices=False)[0][:, :k]
    else:
        def matmat(x):
            x = np.asarray(x).reshape(n_cols, -1)
            return (matrix @ x - mu[:, None] * x.sum(axis=0, keepdims=True)) / sd[:, None]

        def rmatmat(y):
            y = np.asarray(y).reshape(n_rows, -1) / sd[:, None]
            return matrix.T @ y - (mu[:, None] * y).sum(axis=0, keepdims=True)

        operator = spla.LinearOperator((n_rows, n_cols), matvec=matmat, rmatvec=rmatmat,
                                       matmat=matmat, rmatmat=rmatmat, dtype=np.float64)
        rng = rng if rng is not None else np.random.default_rng(0)
        v0 = rng.standard_normal(min(n_rows, n_cols))
        u = spla.svds(operator, k=k, v0=v0, tol=1e-10)[0]
    return active, np.sum(u ** 2, axis=1)


@register
class PCADetector(ScoredDetector):
    """PCA-VarSelect shilling detection (Mehta, Nejdl. Unsupervised Strategies for Shilling
    Detection and Robust Collaborative Filtering. UMUAI 19, 2009).

    Users are the variables and items the observations: each user's row of the rating matrix
    (a missing rating is 0) is z-scored over all items, the top principal components of the
    user-user covariance are taken, and the users whose loadings on them have the smallest sum of
    squares (the least "explained" by the population's structure) are flagged and their rows
    removed. Implicit-feedback tables (one rating level) use the binary interaction matrix.
    (Filling a missing rating with the user's mean instead, i.e. z = 0, was tried and detects
    far less: on ml-100k at 5% fake users, precision 0.40 on average and 0 on bandwagon.)
    Highly coordinated profiles (the segment attack) form a top component of their own and are
    not caught: a known limit of the method.

    The paper flags as many users as there are attackers, which it assumes known; a deployed
    defense does not know that number, so it flags a fixed fraction of the users present in train
    (``flag_fraction``): with fewer fake users than that, precision is at most
    fakes / flagged; with more, recall is at most flagged / fakes.

    Args:
        flag_fraction: fraction of the users with train rows to flag, in (0, 0.5]
            (default 0.05; at least one user is flagged).
        n_components: number of top principal components (default 3, as in the paper).

    Example::
        defense = get_defense("pca_detector", flag_fraction=0.05)
        result = defense.clean(poisoned_split, seed=0)  # result.train, result.flagged_users
    """

    name = "pca_detector"
    paper = MEHTA_NEJDL
    invalid_params = ScoredDetector.invalid_params + ({"n_components": 0}, {"n_components": 1.5},
                                              {"n_components": True})
    parameters = {"n_components": Param(3, check.integer)}
    sign = -1   # the smallest contribution to the top components first

    def scores(self, train: Interactions, rng: np.random.Generator):
        return pca_contributions(train, self.n_components, rng)
