"""Noise injection: untargeted random edits of a fraction of the train interactions.

The budget is ``fraction`` of the train rows; ``count = round(fraction * len(train))`` rows are
edited and both are recorded (``{"fraction": 0.05, "interactions": 4040}``). Each recipe is one
small ``_edit`` on top of ``NoiseAttack``, which owns the budget. Sampling is vectorised: pairs
that collide with train (or with each other) are redrawn, and only those, until none collide.
"""
from __future__ import annotations

from abc import abstractmethod

import numpy as np

from attacks.base import PoisoningAttack, PoisonResult, register
from benchmark.core import params as check
from benchmark.core.data import Interactions
from benchmark.core.kinds import Family
from benchmark.core.params import Param

RGRECSYS = ("Ovaisi, Heinecke, Li, Zhang, Zheleva, Xiong. RGRecSys: A Toolkit for Robustness "
            "Evaluation of Recommender Systems. WSDM 2022")


def _repeated(keys: np.ndarray) -> np.ndarray:
    """Mask of the entries whose key already occurs earlier in ``keys``."""
    order = np.argsort(keys, kind="stable")
    repeated = np.zeros(keys.size, dtype=bool)
    repeated[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    return repeated


def _fresh_pairs(draw, count: int, train: Interactions):
    """``count`` (user, item) pairs from ``draw(index)``, none in train and none repeated.

    ``draw(index)`` returns (users, items) for the positions ``index``; only the colliding
    positions are redrawn, until none collides.
    """
    taken = np.sort(np.append(train.keys(), np.iinfo(np.int64).max))  # sentinel: lookups stay in range
    users, items = draw(np.arange(count))
    redrawn = np.arange(count)
    while redrawn.size:
        keys = users * train.n_items + items
        fresh = keys[redrawn]
        in_train = redrawn[taken[np.searchsorted(taken, fresh)] == fresh]
        redrawn = np.union1d(in_train, np.flatnonzero(_repeated(keys)))
        users[redrawn], items[redrawn] = draw(redrawn)
    return users, items


class NoiseAttack(PoisoningAttack):
    """Base of the noise recipes: ``fraction`` of train rows, edited by ``_edit``."""

    family = Family.NOISE
    paper = RGRECSYS
    budget_param = "fraction"
    default_sweep = (0.01, 0.05, 0.10, 0.20)
    invalid_params = ({"fraction": -0.1}, {"fraction": 0}, {"fraction": 1.5}, {"fraction": "x"},
                      {"fraction": float("nan")}, {"fraction": None})
    parameters = {"fraction": Param(0.05, check.fraction)}

    def _poison(self, context, rng):
        train = context.split.train
        count = int(round(self.fraction * len(train)))
        poisoned = self._edit(train, count, context.split.n_real_users, rng)
        return PoisonResult(poisoned, {"fraction": self.fraction, "interactions": count}, count)

    @abstractmethod
    def _edit(self, train: Interactions, count: int, n_real_users: int,
              rng: np.random.Generator) -> Interactions:
        """Return train with exactly ``count`` rows added, removed or changed."""


@register
class NoiseInsert(NoiseAttack):
    """Insert random (real user, item) pairs not in train (Ovaisi et al., RGRecSys, WSDM 2022).

    Args:
        fraction: rows to add, as a fraction of train rows, in (0, 1]; their ratings are drawn
            from the train rating distribution.

    Example::
        attack = get_attack("noise_insert", fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "noise_insert"

    def _edit(self, train, count, n_real_users, rng):
        free = n_real_users * train.n_items - np.count_nonzero(train.users < n_real_users)
        if count > free:
            raise ValueError(f"noise_insert needs {count} new pairs but only {free} (user, item) "
                             f"pairs are not in train: lower fraction")
        users, items = _fresh_pairs(lambda index: (rng.integers(0, n_real_users, index.size),
                                                   rng.integers(0, train.n_items, index.size)),
                                    count, train)
        added = Interactions.build(users, items, rng.choice(train.ratings, count),
                                   train.n_users, train.n_items)
        return train.concat(added)


@register
class NoiseRemove(NoiseAttack):
    """Remove random train rows (Ovaisi et al., RGRecSys, WSDM 2022).

    Args:
        fraction: rows to remove, as a fraction of train rows, in (0, 1].

    Example::
        attack = get_attack("noise_remove", fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "noise_remove"

    def _edit(self, train, count, n_real_users, rng):
        keep = np.ones(len(train), dtype=bool)
        keep[rng.choice(len(train), count, replace=False)] = False
        return train.take(keep)


@register
class NoiseFlip(NoiseAttack):
    """Replace the item of random train rows by an item the user has not interacted with in
    train, keeping user and rating (Ovaisi et al., RGRecSys, WSDM 2022).

    Args:
        fraction: rows to change, as a fraction of train rows, in (0, 1].

    Example::
        attack = get_attack("noise_flip", fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "noise_flip"

    def _edit(self, train, count, n_real_users, rng):
        rows = rng.choice(len(train), count, replace=False)
        row_users = train.users[rows]
        short = np.bincount(row_users, minlength=train.n_users) > train.n_items - train.user_counts()
        if short.any():
            raise ValueError(f"noise_flip: user {np.flatnonzero(short)[0]} has fewer unseen items "
                             f"than rows to flip: lower fraction")
        _, items = _fresh_pairs(lambda index: (row_users[index],
                                               rng.integers(0, train.n_items, index.size)),
                                count, train)
        flipped = train.items.copy()
        flipped[rows] = items
        return Interactions.build(train.users, flipped, train.ratings, train.n_users, train.n_items)


@register
class NoiseRating(NoiseAttack):
    """Set the rating of random train rows to another rating value observed in train, leaving
    the interactions unchanged (O'Mahony, Hurley, Silvestre. Detecting Noise in Recommender
    System Databases. IUI 2006). Explicit feedback only: ValueError when train has one value.

    Args:
        fraction: rows whose rating changes, as a fraction of train rows, in (0, 1].

    Example::
        attack = get_attack("noise_rating", fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "noise_rating"
    paper = ("O'Mahony, Hurley, Silvestre. Detecting Noise in Recommender System Databases. "
             "IUI 2006")

    def _edit(self, train, count, n_real_users, rng):
        levels = np.unique(train.ratings)
        if levels.size < 2:
            raise ValueError("noise_rating needs explicit feedback (at least two distinct ratings "
                             "in train): use noise_flip on implicit data")
        rows = rng.choice(len(train), count, replace=False)
        shift = rng.integers(1, levels.size, count)   # never the current value
        ratings = train.ratings.copy()
        ratings[rows] = levels[(np.searchsorted(levels, ratings[rows]) + shift) % levels.size]
        return Interactions.build(train.users, train.items, ratings, train.n_users, train.n_items)
