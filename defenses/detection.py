"""What the shilling-profile detectors share: they flag suspicious users and drop their rows.

A detector (kind ``detector``, one per file: ``pca_detector.py``, ``feature_detector.py``,
``degreesad.py``, ``fap.py``) runs on every poisoned train table and on the clean one, so the
benchmark measures what it catches *and* what it costs on clean data. Every detector works in
the benchmark's index space and keeps the user id space: flagged users simply have no train rows
left. The pieces here:

- ``dedupe``: one row per (user, item), the view of train the detectors' features are taken on;
- ``flagged_result``: the ``CleanResult`` of a set of flagged users (their rows removed, the
  count in ``info``);
- ``FLAG_FRACTION``: the ``flag_fraction`` parameter of the unsupervised detectors, which flag a
  fixed fraction of the users with train rows (the number of attackers is unknown to a deployed
  defense), the values it refuses (``INVALID_FLAG_FRACTION``), and ``flag_top``, which picks
  that fraction of the users by score;
- ``ScoredDetector``: the base of a detector that scores users and flags the top fraction.
"""
from __future__ import annotations

import numpy as np

from benchmark.core import params as check
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import PROFILE_FAMILIES, Family, Kind
from benchmark.core.params import Param
from defenses.base import CleanResult, DataDefense

# in (0, 0.5], default 0.05; at least one user is flagged
FLAG_FRACTION = Param(0.05, check.fraction, high=0.5)
INVALID_FLAG_FRACTION = ({"flag_fraction": 0}, {"flag_fraction": -0.1}, {"flag_fraction": 0.9},
                         {"flag_fraction": "x"}, {"flag_fraction": float("nan")},
                         {"flag_fraction": True})


def dedupe(train: Interactions):
    """(users, items, ratings) with one row per (user, item): the last one, as the loader does."""
    keys = train.keys()
    order = np.argsort(keys, kind="stable")
    last = np.ones(order.size, dtype=bool)
    last[:-1] = keys[order[1:]] != keys[order[:-1]]
    keep = order[last]
    return train.users[keep], train.items[keep], train.ratings[keep].astype(np.float64)


def flagged_result(train: Interactions, flagged: np.ndarray, info: dict) -> CleanResult:
    """``train`` without the rows of the ``flagged`` users (sorted, distinct), and ``info`` after
    ``n_flagged``."""
    flagged = np.unique(np.asarray(flagged, dtype=np.int64))
    info = {"n_flagged": int(flagged.size), **info}
    return CleanResult(train=train.take(~np.isin(train.users, flagged)), flagged_users=flagged, info=info)


def flag_top(active: np.ndarray, score: np.ndarray, fraction: float):
    """(flagged ids, score cutoff): the ``fraction`` of ``active`` with the highest scores (at
    least one user; ties broken by user id)."""
    n_flag = min(active.size, max(1, int(round(fraction * active.size))))
    order = np.lexsort((active, -score))
    return active[order[:n_flag]], float(score[order[n_flag - 1]])


class ScoredDetector(DataDefense):
    """A detector that scores every user with train rows (``scores``) and flags the
    ``flag_fraction`` most suspicious: the highest scores, or the lowest with ``sign = -1``.
    ``info`` records the users scored and the score at the cutoff."""

    kind = Kind.DETECTOR
    applies_to = (Family.CLEAN, *PROFILE_FAMILIES)
    invalid_params = INVALID_FLAG_FRACTION
    test_params: dict = {}
    parameters = {"flag_fraction": FLAG_FRACTION}
    sign = 1

    def scores(self, train: Interactions, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(active user ids, their scores)."""
        raise NotImplementedError

    def _clean(self, split: Split, rng: np.random.Generator) -> CleanResult:
        train = split.train
        active, score = self.scores(train, rng)
        if active.size == 0:
            return flagged_result(train, np.zeros(0, np.int64), {"n_users": 0})
        flagged, cutoff = flag_top(active, self.sign * score, self.flag_fraction)
        return flagged_result(train, flagged, {"n_users": int(active.size), "score_cutoff": self.sign * cutoff})
