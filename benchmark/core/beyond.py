"""Beyond-accuracy measures of top-k lists (docs/protocol.md, "Metrics").

- Popularity of what is recommended, computed by ``Evaluator`` into a cell's ``metrics``
  (``popularity_metrics``): ARP@10, the mean clean-train popularity (interaction count) of the
  items in a user's top 10, averaged over users; the long-tail share of the top-10 slots, items
  outside the *short head* (the most popular items that together make up 80 % of the clean
  train's interactions, ``short_head``); the Gini coefficient of item exposure (how many users'
  top 10 hold each item, over every item of the catalogue, ``gini``).
- Rank-list stability between two cells' top-10 lists of the same users, computed by
  ``benchmark.results.aggregate.derive`` from the records' stored lists (``stability``):
  extrapolated rank-biased overlap (Webber, Moffat, Zobel. A similarity measure for indefinite
  rankings. ACM TOIS 28(4), 2010, eq. 32) with p = 0.9 at depth 10, and the Jaccard index of the
  two top-10 sets; means over the users who have a list in both.

Lists are (users, k) int arrays of item ids, padded with -1 (``NO_ITEM``) where a user has
fewer than k candidates.
"""
from __future__ import annotations

import numpy as np

TOP = 10                 # the depth of the lists these measures are taken on
RBO_P = 0.9              # RBO's persistence: the weight of depth d is proportional to p^(d-1)
HEAD_SHARE = 0.8         # the short head holds this share of the clean train's interactions
NO_ITEM = -1


def gini(values) -> float:
    """Gini coefficient of non-negative ``values`` (0: all equal; (n-1)/n: one holds all);
    0 when they sum to 0. ``sum_i (2i - n - 1) x_(i) / (n sum x)``, x sorted ascending."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def short_head(counts: np.ndarray, share: float = HEAD_SHARE) -> np.ndarray:
    """Boolean mask of the short head: the fewest most popular items (count descending, ties by
    id) whose interactions reach ``share`` of all interactions."""
    counts = np.asarray(counts, dtype=np.float64)
    head = np.zeros(counts.size, dtype=bool)
    if counts.sum() <= 0:
        return head
    order = np.lexsort((np.arange(counts.size), -counts))
    cumulative = np.cumsum(counts[order])
    n_head = int(np.searchsorted(cumulative, share * cumulative[-1] - 1e-9 * cumulative[-1])) + 1
    head[order[:n_head]] = True
    return head


def popularity_metrics(top: np.ndarray, counts: np.ndarray, head: np.ndarray, n_items: int) -> dict:
    """``arp@10``, ``tail_share@10`` and ``exposure_gini@10`` of the (users, k) lists ``top``
    (``NO_ITEM`` padding ignored) against clean-train ``counts`` and its short ``head``. Users
    without any item are left out; empty when no user has one."""
    top = np.asarray(top)
    valid = top != NO_ITEM
    users = valid.any(1)
    if not users.any():
        return {}
    top, valid = top[users], valid[users]
    items = np.where(valid, top, 0)
    n_slots = valid.sum(1)
    popularity = np.where(valid, counts[items], 0.0).sum(1) / n_slots
    tail = np.where(valid, ~head[items], False).sum(1) / n_slots
    exposure = np.bincount(top[valid], minlength=n_items)
    return {f"arp@{TOP}": float(popularity.mean()), f"tail_share@{TOP}": float(tail.mean()),
            f"exposure_gini@{TOP}": gini(exposure)}


def overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(users, k): the size of the overlap of the two lists' prefixes at each depth 1..k."""
    a, b = np.asarray(a), np.asarray(b)
    same = (a[:, :, None] == b[:, None, :]) & (a[:, :, None] != NO_ITEM)
    # an item shared at positions (i, j) counts at every depth d >= max(i, j) + 1
    k = a.shape[1]
    depth = np.maximum(np.arange(k)[:, None], np.arange(k)[None, :])
    counts = np.zeros((a.shape[0], k), dtype=np.int64)
    for d in range(k):
        counts[:, d] = (same & (depth <= d)).sum((1, 2))
    return counts


def rbo_ext(a: np.ndarray, b: np.ndarray, p: float = RBO_P) -> np.ndarray:
    """Per user, the extrapolated RBO of two (users, k) lists (Webber et al. 2010, eq. 32, for two
    lists of the same depth k): ``X_k / k * p^k + (1 - p) / p * sum_{d=1..k} X_d / d * p^d``,
    X_d the overlap at depth d. 1 for identical lists, 0 for disjoint ones."""
    x = overlaps(a, b).astype(np.float64)
    k = x.shape[1]
    d = np.arange(1, k + 1, dtype=np.float64)
    return x[:, -1] / k * p ** k + (1 - p) / p * (x / d * p ** d).sum(1)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per user, |A & B| / |A | B| of the two lists' item sets (``NO_ITEM`` ignored)."""
    x = overlaps(a, b)[:, -1]
    sizes = (np.asarray(a) != NO_ITEM).sum(1) + (np.asarray(b) != NO_ITEM).sum(1)
    union = sizes - x
    return np.where(union > 0, x / np.maximum(union, 1), 1.0)


def as_array(lists) -> tuple[np.ndarray, np.ndarray]:
    """(users, TOP) array of a record's ``top10`` (None: no list), and the mask of users with one."""
    out = np.full((len(lists), TOP), NO_ITEM, dtype=np.int64)
    has = np.zeros(len(lists), dtype=bool)
    for u, items in enumerate(lists):
        if items:
            out[u, :len(items)] = items[:TOP]
            has[u] = True
    return out, has


def stability(lists, reference) -> dict:
    """``rbo@10`` and ``jaccard@10`` of two records' ``top10`` lists, means over the users with a
    list in both; empty when there is none (or the lists are of different user counts)."""
    if not lists or not reference or len(lists) != len(reference):
        return {}
    a, has_a = as_array(lists)
    b, has_b = as_array(reference)
    both = has_a & has_b
    if not both.any():
        return {}
    return {f"rbo@{TOP}": float(rbo_ext(a[both], b[both]).mean()),
            f"jaccard@{TOP}": float(jaccard(a[both], b[both]).mean())}
