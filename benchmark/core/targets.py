"""Target items that shilling and learned attacks promote, drawn once per seed from train.

Policies (only items with at least one train interaction are ever drawn):
- ``unpopular``: train count between 1 and the 25th percentile of the positive counts (the
  long tail an attacker gains most from pushing);
- ``random``: any item with a train interaction;
- ``popular``: the top 10% of those items by train count (at least one item; ties by item id).
"""
from __future__ import annotations

import numpy as np

from benchmark.core import params as check
from benchmark.core.data import Interactions

POLICIES = ("unpopular", "random", "popular")


def target_pool(train: Interactions, policy: str) -> np.ndarray:
    """The sorted item ids a policy draws from."""
    counts = train.item_counts()
    seen = np.flatnonzero(counts)
    if policy == "unpopular":
        return seen[counts[seen] <= np.percentile(counts[seen], 25)]
    if policy == "random":
        return seen
    if policy == "popular":
        by_count = seen[np.argsort(-counts[seen], kind="stable")]
        return np.sort(by_count[:max(1, int(np.ceil(0.1 * seen.size)))])
    raise ValueError(f"unknown target policy '{policy}': choose one of {', '.join(POLICIES)}")


def choose_targets(train: Interactions, policy: str = "unpopular", count: int = 5,
                   seed: int = 0) -> np.ndarray:
    """``count`` distinct target item ids (sorted), drawn from the policy's pool by ``seed``."""
    count = check.integer("count", count)
    pool = target_pool(train, policy)
    if count > pool.size:
        raise ValueError(f"count={count} targets requested but the '{policy}' policy has only "
                         f"{pool.size} candidate items: lower count or choose another policy")
    return np.sort(np.random.default_rng(seed).choice(pool, size=count, replace=False)).astype(np.int64)
