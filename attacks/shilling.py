"""Classical shilling attacks: fake user profiles that push target items (push attacks).

Every fake profile holds the targets and the selected items, rated the maximum rating, plus
``filler_items`` filler items drawn among the items rated in train (never a target or a selected
item): uniformly, as in the papers (``filler_sampling="uniform"``, the default), or in proportion
to their train popularity (``"popular"``). Deviation, documented: the papers rate their fillers
(explicit feedback), which makes average-attack profiles look like real ones; on implicit
feedback the ratings carry no signal and only the choice of fillers can, so ``"popular"`` is the
implicit-feedback way to draw profiles that resemble real users (README, shilling results). The
four recipes differ only in two small strategies (Mobasher et al. 2007):

    recipe     selected items (max rating)                filler ratings
    random     none                                       N(global mean, global std)
    average    none                                       N(item mean, item std)
    bandwagon  the most popular train items               N(global mean, global std)
    segment    items sharing a genre with the targets     the minimum rating

Drawn ratings are snapped to the nearest rating value observed in train. Fake-user ids, their
number and the filler count are ``FakeProfileAttack``'s (``attacks/base.py``).
"""
from __future__ import annotations

import numpy as np

from attacks.base import FakeProfileAttack, Profiles, register
from benchmark.core import params as check
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import Family
from benchmark.core.params import Param

LAM_RIEDL = "Lam, Riedl. Shilling Recommender Systems for Fun and Profit. WWW 2004"
BURKE = ("Burke, Mobasher, Bhaumik, Williams. Limited Knowledge Shilling Attacks in Collaborative "
         "Filtering Systems. IJCAI Workshop on Intelligent Techniques for Web Personalization 2005")
MOBASHER = ("Mobasher, Burke, Bhaumik, Williams. Toward Trustworthy Recommender Systems: An "
            "Analysis of Attack Models and Algorithm Robustness. ACM TOIT 7(4), 2007")


# Filler rating strategies: (train, filler item ids of shape (fake users, filler)) -> ratings.

def global_normal(train: Interactions, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ratings = train.ratings.astype(np.float64)
    return rng.normal(ratings.mean(), ratings.std(), size=items.shape)


def item_normal(train: Interactions, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    counts = np.maximum(train.item_counts(), 1)
    ratings = train.ratings.astype(np.float64)
    mean = np.bincount(train.items, ratings, train.n_items) / counts
    var = np.bincount(train.items, ratings ** 2, train.n_items) / counts - mean ** 2
    return rng.normal(mean[items], np.sqrt(np.maximum(var, 0.0))[items])


def minimum(train: Interactions, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.full(items.shape, train.ratings.min(), dtype=np.float64)


# Selection strategies: (split, targets, count) -> ``count`` item ids, none of them a target.

def _top(score: np.ndarray, train: Interactions, targets: np.ndarray, count: int, what: str):
    """The ``count`` items of highest positive score (ties: more popular, then lower id)."""
    order = np.lexsort((-train.item_counts(), -score))
    order = order[(score[order] > 0) & ~np.isin(order, targets)]
    if order.size < count:
        raise ValueError(f"selected_items={count} but train has only {order.size} {what} "
                         f"besides the targets: lower selected_items")
    return order[:count]


def most_popular(split: Split, targets: np.ndarray, count: int) -> np.ndarray:
    train = split.train
    return _top(train.item_counts(), train, targets, count, "rated items")


def same_segment(split: Split, targets: np.ndarray, count: int) -> np.ndarray:
    """Items sharing a genre with the most targets; when the targets have no genre (no item
    features), the items most co-interacted with the targets in train (their cluster)."""
    train, genres = split.train, split.dataset.item_genres
    if genres and any(genres[t] for t in targets):
        target_genres = [set(genres[t]) for t in targets]
        score = np.array([sum(not tg.isdisjoint(g) for tg in target_genres) for g in genres])
        return _top(score, train, targets, count, "items sharing a genre with the targets")
    matrix = train.csr()
    targets_per_user = np.asarray(matrix[:, targets].sum(axis=1)).ravel()
    score = matrix.T @ targets_per_user
    return _top(score, train, targets, count, "items co-interacted with the targets")


def _snap(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each value replaced by the nearest of the sorted rating ``levels``."""
    return levels[np.searchsorted((levels[1:] + levels[:-1]) / 2, values)]


def _sample_filler(pool: np.ndarray, n_fake: int, filler: int, rng: np.random.Generator,
                   weights: np.ndarray | None = None):
    """``filler`` distinct items of ``pool`` for each of ``n_fake`` profiles, all at once: one
    random key per (profile, candidate), and the ``filler`` smallest keys pick the items. With
    ``weights``, keys are Exp(1) / weight: weighted sampling without replacement (Efraimidis &
    Spirakis 2006), so an item's chance to be drawn first is proportional to its weight."""
    if filler > pool.size:
        raise ValueError(f"filler_items={filler} exceeds the {pool.size} rated items left besides "
                         f"the targets and selected items: lower filler_items")
    keys = (rng.random((n_fake, pool.size)) if weights is None
            else rng.standard_exponential((n_fake, pool.size)) / weights)
    return pool[np.argpartition(keys, filler - 1, axis=1)[:, :filler]]


FILLER_SAMPLING = ("uniform", "popular")
# the parameter of the recipes with selected items (bandwagon, segment); the others do not take it
SELECTED_ITEMS = {"selected_items": Param(5, check.integer)}


class ShillingAttack(FakeProfileAttack):
    """A profile recipe: a ``select`` strategy (or None) and a ``rate_filler`` strategy."""

    family = Family.SHILLING
    knowledge = "black-box"   # public item statistics (popularity, mean ratings) only
    invalid_params = ({"fake_user_fraction": -0.1}, {"fake_user_fraction": 0},
                      {"fake_user_fraction": 1.5}, {"fake_user_fraction": "x"},
                      {"filler_items": 0}, {"filler_items": 2.5}, {"filler_items": "10"},
                      {"filler_sampling": "zipf"})
    # recipes with selected items (bandwagon, segment) refuse these; the others refuse any
    invalid_selected = ({"selected_items": 0}, {"selected_items": -1})
    parameters = {"filler_sampling": Param("uniform", check.choice, options=FILLER_SAMPLING)}
    select = None
    selected_items = 0   # recipes without selected items; the others declare SELECTED_ITEMS
    rate_filler = staticmethod(global_normal)

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        split, train = context.split, context.split.train
        selected = (np.empty(0, np.int64) if self.select is None
                    else self.select(split, targets, self.selected_items))
        fixed = np.concatenate([targets, selected])
        counts = train.item_counts()
        pool = np.setdiff1d(np.flatnonzero(counts), fixed)
        weights = counts[pool].astype(np.float64) if self.filler_sampling == "popular" else None
        filler_ids = _sample_filler(pool, n_fake, fillers, rng, weights)
        levels = np.unique(train.ratings)
        items = np.hstack([np.broadcast_to(fixed, (n_fake, fixed.size)), filler_ids])
        ratings = np.hstack([np.full((n_fake, fixed.size), levels[-1]),
                             _snap(self.rate_filler(train, filler_ids, rng), levels)])
        return Profiles(items, ratings, {"selected_items": int(selected.size)})


@register
class RandomAttack(ShillingAttack):
    """Random attack (Lam, Riedl. Shilling Recommender Systems for Fun and Profit. WWW 2004):
    targets at the max rating, filler rated N(global mean, global std).

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: filler items per profile (default: the mean real train profile length).
        filler_sampling: "uniform" (default, the paper's) or "popular" (popularity-weighted).

    Example::
        attack = get_attack("random", fake_user_fraction=0.03, filler_items=50)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "random"
    paper = LAM_RIEDL
    invalid_params = ShillingAttack.invalid_params + ({"selected_items": 5},)


@register
class AverageAttack(ShillingAttack):
    """Average attack (Lam, Riedl. Shilling Recommender Systems for Fun and Profit. WWW 2004):
    targets at the max rating, each filler item rated N(its train mean, its train std).

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: filler items per profile (default: the mean real train profile length).
        filler_sampling: "uniform" (default, the paper's) or "popular" (popularity-weighted).

    Example::
        attack = get_attack("average", fake_user_fraction=0.03, filler_items=50)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "average"
    paper = LAM_RIEDL
    invalid_params = ShillingAttack.invalid_params + ({"selected_items": 5},)
    rate_filler = staticmethod(item_normal)


@register
class BandwagonAttack(ShillingAttack):
    """Bandwagon attack (Burke, Mobasher, Bhaumik, Williams. Limited Knowledge Shilling Attacks
    in Collaborative Filtering Systems. ITWP 2005): the most popular train items and the targets
    at the max rating, filler rated N(global mean, global std).

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: filler items per profile (default: the mean real train profile length).
        filler_sampling: "uniform" (default, the paper's) or "popular" (popularity-weighted).
        selected_items: popular items per profile (default 5).

    Example::
        attack = get_attack("bandwagon", fake_user_fraction=0.03, selected_items=5)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "bandwagon"
    paper = BURKE
    invalid_params = ShillingAttack.invalid_params + ShillingAttack.invalid_selected
    parameters = SELECTED_ITEMS
    select = staticmethod(most_popular)


@register
class SegmentAttack(ShillingAttack):
    """Segment attack (Mobasher, Burke, Bhaumik, Williams. Toward Trustworthy Recommender
    Systems. ACM TOIT 2007): items of the targets' segment (shared genre, else co-interaction)
    and the targets at the max rating, filler at the min rating.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: filler items per profile (default: the mean real train profile length).
        filler_sampling: "uniform" (default, the paper's) or "popular" (popularity-weighted).
        selected_items: segment items per profile (default 5).

    Example::
        attack = get_attack("segment", fake_user_fraction=0.03, selected_items=5)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "segment"
    paper = MOBASHER
    invalid_params = ShillingAttack.invalid_params + ShillingAttack.invalid_selected
    parameters = SELECTED_ITEMS
    select = staticmethod(same_segment)
    rate_filler = staticmethod(minimum)
