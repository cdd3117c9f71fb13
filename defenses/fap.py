"""FAP: fraudulent action propagation from a few seed spammers over the user-item graph.

Reference implementations read: Coder-Yu/SDLib ``method/FAP.py`` (Python 2, dense matrices) and
its Python 3 port in WuYunfan/FEOAttack ``SDLib/method/FAP.py`` (sparse matrices, tolerance
0.001, plus 3x as many random users as extra seeds). Only the paper's abstract could be read here;
the algorithm follows the reference code.

As implemented (vectorised with scipy.sparse):

1. The bipartite graph of the users with train rows and the items, one edge per (user, item),
   weighted as in SDLib by how far the rating deviates from the user's, the item's and the
   global mean rating: ``w = 1 + |r - r_u|/r_u + |r - r_i|/r_i + |r - r_g|/r_g`` (all 1 on
   implicit feedback).
2. Transition matrices normalised by the weighted degrees: ``T_ui = w_ui / sum_j w_uj`` (user to
   item) and ``T_iu = w_ui / sum_v w_vi`` (item to user).
3. Seed users get spam probability 1, everyone else 0; then, until no user's probability moves
   by ``tol`` or more (at most ``max_iter`` rounds): items ``p_I = T_iu p_U``, users
   ``p_U = T_ui p_I``, seeds reset to 1. A user's probability is the chance that a walk from it
   (user -> item -> user ...) reaches a seed within the rounds done: users that share rare,
   deviating items (a push attack's targets) with the seeds rise first.
4. Flagged: the seeds, then the non-seed users of highest probability (ties by user id), in all
   ``flag_fraction`` of the users with train rows.

Deviations, with reasons:

- **Seeds without labels.** The paper and SDLib draw seed spammers from the ground-truth labels;
  a deployed defense has none. The seeds here are the users most suspicious to an unsupervised
  detector of this project: DegreeSAD's degree-outlier score (``seed_score="degree"``, the
  default) or PCA-VarSelect's (``"pca"``: smallest contribution to the top principal
  components). Their number is ``seed_fraction`` of the users flagged (default 0.2: SDLib's
  example configuration seeds 350 of 1557 spammers). The seeds are flagged too (SDLib leaves
  them out of its evaluation, since they are labelled).
- **Zero start instead of a random one.** SDLib starts non-seed users and items at uniform
  random probabilities; a zero start makes the result deterministic and the probabilities the
  reach-a-seed probabilities above (the random start only adds noise that the averaging blurs).
- **Convergence** is ``max |change| < tol`` (FEOAttack's absolute change; SDLib only looks at
  increases, with 0.01), capped at ``max_iter`` rounds: with seeds clamped at 1 every connected
  user tends to 1, so what ranks users is how fast they rise; on ml-100k the ranking was the same
  for tolerances from 1e-2 to 1e-9.
- No random non-seed users as extra seeds (FEOAttack's port adds 3x as many; not in SDLib).
- Flags a fraction of the users (``flag_fraction``) rather than SDLib's fixed ``topKSpam``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from benchmark.core import params as check
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import PROFILE_FAMILIES, Family, Kind
from benchmark.core.params import Param
from defenses.base import CleanResult, DataDefense, register
from defenses.degreesad import degree_scores
from defenses.detection import (
    FLAG_FRACTION,
    INVALID_FLAG_FRACTION,
    dedupe,
    flagged_result,
)
from defenses.pca_detector import pca_contributions

ZHANG_2015 = ("Zhang, Tan, Zhang, Liu, Chua, Ma. Catch the Black Sheep: Unified Framework for "
              "Shilling Attack Detection Based on Fraudulent Action Propagation. IJCAI 2015")
SEED_SCORES = ("degree", "pca")


def _safe(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) > 1e-12, np.abs(x), 1.0)


def transition_matrices(train: Interactions):
    """(active user ids, T_ui (users x items), T_iu (items x users)), both row-stochastic on
    rows with edges, from SDLib's rating-deviation edge weights."""
    users, items, ratings = dedupe(train)
    active, rows = np.unique(users, return_inverse=True)
    n, m = active.size, train.n_items
    user_mean = np.bincount(rows, ratings, n) / np.maximum(np.bincount(rows, minlength=n), 1)
    item_mean = np.bincount(items, ratings, m) / np.maximum(np.bincount(items, minlength=m), 1)
    global_mean = ratings.mean() if ratings.size else 1.0
    weight = (1.0 + np.abs(ratings - user_mean[rows]) / _safe(user_mean[rows])
              + np.abs(ratings - item_mean[items]) / _safe(item_mean[items])
              + np.abs(ratings - global_mean) / _safe(np.asarray(global_mean)))
    w = sp.csr_matrix((weight, (rows, items)), shape=(n, m))
    out_weight = np.asarray(w.sum(axis=1)).ravel()
    in_weight = np.asarray(w.sum(axis=0)).ravel()
    t_ui = sp.diags(1.0 / _safe(out_weight)) @ w
    t_iu = (w @ sp.diags(1.0 / _safe(in_weight))).T.tocsr()
    return active, t_ui.tocsr(), t_iu


def propagate(t_ui, t_iu, seeds: np.ndarray, tol: float = 1e-3, max_iter: int = 100):
    """(user spam probabilities, rounds done, converged) from seed rows clamped at 1."""
    p = np.zeros(t_ui.shape[0])
    p[seeds] = 1.0
    for done in range(1, max_iter + 1):
        new = t_ui @ (t_iu @ p)
        new[seeds] = 1.0
        change = float(np.max(np.abs(new - p))) if p.size else 0.0
        p = new
        if change < tol:
            return p, done, True
    return p, max_iter, False


@register
class FAP(DataDefense):
    """Fraudulent Action Propagation (Zhang, Tan, Zhang, Liu, Chua, Ma. Catch the Black Sheep:
    Unified Framework for Shilling Attack Detection Based on Fraudulent Action Propagation.
    IJCAI 2015), with unsupervised seeds.

    Spam probability spreads from a few seed spammers over the user-item bipartite graph, through
    edges weighted by how much each rating deviates from the user's, item's and global means: the
    users that rate the same (deviating, rare) items as the seeds, such as the other profiles of
    an attack that push the same targets, become suspicious. The paper takes its seeds from
    labels; here they are the users that DegreeSAD (or PCA-VarSelect) finds most suspicious, so
    no label is used (module docstring: deviations).

    Args:
        flag_fraction: fraction of the users with train rows to flag, seeds included, in (0, 0.5]
            (default 0.05; at least one user is flagged).
        seed_fraction: share of the flagged users taken as seeds, in (0, 1] (default 0.2; at
            least one seed).
        seed_score: the unsupervised score that picks the seeds: "degree" (DegreeSAD, default)
            or "pca" (PCA-VarSelect).
        tol: the propagation stops when no probability changes by this much (default 1e-3).
        max_iter: most propagation rounds (default 100).

    Example::
        defense = get_defense("fap", flag_fraction=0.05, seed_fraction=0.2)
        result = defense.clean(poisoned_split, seed=0)  # result.train, result.flagged_users
    """

    name = "fap"
    label = "FAP (unsupervised, seeded by DegreeSAD)"
    kind = Kind.DETECTOR
    paper = ZHANG_2015
    applies_to = (Family.CLEAN, *PROFILE_FAMILIES)
    invalid_params = INVALID_FLAG_FRACTION + (
        {"seed_fraction": 0}, {"seed_fraction": 1.5}, {"seed_fraction": float("nan")},
        {"seed_score": "labels"}, {"seed_score": 1}, {"tol": 0}, {"tol": -1e-3}, {"tol": float("inf")},
        {"max_iter": 0}, {"max_iter": 2.5}, {"max_iter": True})
    test_params: dict = {}
    parameters = {"flag_fraction": FLAG_FRACTION, "seed_fraction": Param(0.2, check.fraction),
                  "seed_score": Param("degree", check.choice, options=SEED_SCORES),
                  "tol": Param(1e-3, check.positive), "max_iter": Param(100, check.integer)}

    def suspicion(self, train: Interactions, rng: np.random.Generator):
        """(active user ids, seed suspicion: higher is more suspicious)."""
        if self.seed_score == "degree":
            return degree_scores(train)
        active, contribution = pca_contributions(train, rng=rng)
        return active, -contribution

    def scores(self, split: Split, seed: int):
        """(active user ids, propagated spam probability, seed mask), as ``clean`` computes them."""
        users, p, seeds, _ = self._score(split.train, np.random.default_rng(seed))
        return users, p, seeds

    def _score(self, train: Interactions, rng: np.random.Generator):
        active, suspicion = self.suspicion(train, rng)
        users, t_ui, t_iu = transition_matrices(train)
        assert np.array_equal(active, users)
        n_flag = min(users.size, max(1, int(round(self.flag_fraction * users.size))))
        n_seed = min(n_flag, max(1, int(round(self.seed_fraction * n_flag))))
        seeds = np.zeros(users.size, dtype=bool)
        seeds[np.lexsort((users, -suspicion))[:n_seed]] = True
        p, rounds, converged = propagate(t_ui, t_iu, np.flatnonzero(seeds), self.tol, self.max_iter)
        info = {"n_users": int(users.size), "n_seeds": n_seed, "rounds": rounds,
                "converged": converged}
        return users, p, seeds, (n_flag, info)

    def _clean(self, split: Split, rng: np.random.Generator) -> CleanResult:
        train = split.train
        if len(train) == 0:
            return flagged_result(train, np.zeros(0, np.int64), {"n_users": 0})
        users, p, seeds, (n_flag, info) = self._score(train, rng)
        rest = np.flatnonzero(~seeds)
        ranked = rest[np.lexsort((users[rest], -p[rest]))][:n_flag - int(seeds.sum())]
        flagged = np.concatenate([users[seeds], users[ranked]])
        cutoff = float(p[ranked[-1]]) if ranked.size else 1.0
        return flagged_result(train, flagged, {**info, "probability_cutoff": cutoff})
