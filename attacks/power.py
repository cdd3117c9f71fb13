"""Power-user and power-item attacks: fake profiles built around the most influential real users
or items of the similarity graph.

Papers: Wilson, Seminario, "When Power Users Attack: Assessing Impacts in Collaborative
Recommender Systems", RecSys 2013 (the Power User Attack, PUA); Seminario, Wilson, "Assessing
Impacts of a Power User Attack on a Matrix Factorization Collaborative Recommender System",
FLAIRS 2014 (the three ways to select power users compared here); Seminario, Wilson, "Attacking
Item-Based Recommender Systems with Power Items", RecSys 2014 (the Power Item Attack, PIA, with
multiple targets); Seminario, Wilson, "Nuking Item-Based Collaborative Recommenders with Power
Items and Multiple Targets", FLAIRS 2016 (PIA-MT's power items selected by InDegree or
NumRatings). No reference implementation is public (searched GitHub code for "power user
attack" / "PowerUser" / "power item": none; RecAD, ARLib and SDLib do not carry one); only the
papers' abstracts and introductions could be read here (studylib.net copies of the FLAIRS 2014,
2015 and 2016 papers). What they state and this module follows:

- power users are selected "from the implied social graph of the user-user similarity matrix"
  with degree centrality: **InDegree**, the number of other users' top-k neighbourhoods a user
  belongs to (``selection: in_degree``, the default, the method the FLAIRS 2014 paper finds most
  effective), **AggregatedSimilarity**, the summed similarity over those memberships
  (``aggregated_similarity``), and **NumRatings**, the longest profiles (``num_ratings``);
- the PUA's attack profiles emulate the selected power users and rate the target at the maximum
  rating (push): fake user ``f`` is a copy of the ``f``-th most central real user's profile (its
  items with that user's ratings) plus every target at the train's maximum rating;
- power items "exert influence over many other items during item-based prediction": the same
  centralities on the item-item similarity graph (InDegree: the number of items' top-k
  neighbourhoods an item belongs to; NumRatings: popularity); the PIA's profiles hold the power
  items and the targets (multiple targets, PIA-MT) at the maximum rating.

Deviations (implicit feedback and this benchmark's budget):
- similarity is cosine on the binary train matrix (the papers: Pearson correlation for the user
  graph, adjusted cosine for the item graph, on explicit ratings, with significance weighting);
  on implicit data the ratings carry no signal and cosine is the neighbourhood measure RecBole's
  ItemKNN uses. ``neighbours`` (k, default 50) sets the neighbourhood size;
- every fake profile holds exactly ``filler_items`` items besides the targets (the benchmark's
  budget): a power user with more allowed items (rated by a real user, not a target) than that
  is copied on a uniform random subset of them (the papers copy whole profiles), one with fewer
  is padded with the items most rated by the selected power users as a group, rated their mean
  rating there (snapped to a rating level); ``padded_profiles`` in the budget counts them;
- power-item profiles: the papers' profiles rate the power items; they hold the ``filler_items``
  most central items here (every fake profile the same items, as a top-N list gives), or, with
  ``pool`` larger than ``filler_items``, a uniform draw of ``filler_items`` among the ``pool``
  most central items per profile; the power items are rated as the average attack rates its
  fillers (N(item mean, item std), snapped to a rating level), a choice of ours: the papers'
  rating of the power items could not be read.
"""
from __future__ import annotations

import numpy as np

from attacks.base import FakeProfileAttack, Profiles, register
from attacks.shilling import _snap, item_normal
from benchmark.core import params as check
from benchmark.core.kinds import Family
from benchmark.core.params import Param

WILSON_2013 = ("Wilson, Seminario. When Power Users Attack: Assessing Impacts in Collaborative "
               "Recommender Systems. RecSys 2013")
SEMINARIO_2014 = ("Seminario, Wilson. Assessing Impacts of a Power User Attack on a Matrix "
                  "Factorization Collaborative Recommender System. FLAIRS 2014")
POWER_ITEMS_2014 = ("Seminario, Wilson. Attacking Item-Based Recommender Systems with Power Items. "
                    "RecSys 2014")
SELECTIONS = ("in_degree", "aggregated_similarity", "num_ratings")
BLOCK = 1024   # rows of the similarity matrix computed at once


def centrality(matrix, neighbours: int, selection: str) -> np.ndarray:
    """Centrality of each row of the binary sparse ``matrix`` (users x items for power users, its
    transpose for power items) in the top-``neighbours`` cosine-similarity graph of the rows:
    ``in_degree`` counts the other rows whose ``neighbours`` most similar rows include it,
    ``aggregated_similarity`` sums those rows' similarity to it, ``num_ratings`` is its degree."""
    degree = np.asarray(matrix.sum(axis=1)).ravel().astype(np.float64)
    if selection == "num_ratings":
        return degree
    n = matrix.shape[0]
    k = min(neighbours, n - 1)
    score = np.zeros(n)
    if k < 1:
        return score
    norm = np.sqrt(np.maximum(degree, 1.0))
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(start + BLOCK, n))
        sim = np.asarray((matrix[rows] @ matrix.T).todense(), dtype=np.float64)
        sim /= norm[rows, None] * norm[None, :]
        sim[np.arange(rows.size), rows] = -np.inf          # a row is not its own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(sim, top, axis=1)
        keep = values > 0                                   # only similar rows are neighbours
        weights = np.ones_like(values) if selection == "in_degree" else values
        score += np.bincount(top[keep], weights[keep], minlength=n)
    return score


def ranked(score: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Ids by decreasing score; ties by larger degree, then lower id."""
    return np.lexsort((np.arange(score.size), -degree, -score))


class PowerAttack(FakeProfileAttack):
    """What both power attacks declare: the selection method and the neighbourhood size."""

    family = Family.SHILLING
    knowledge = "gray-box"    # the whole train table, to build the similarity graph
    parameters = {"selection": Param("in_degree", check.choice, options=SELECTIONS),
                  "neighbours": Param(50, check.integer)}
    invalid_params = ({"fake_user_fraction": 0}, {"fake_user_fraction": 1.5},
                      {"fake_user_fraction": "x"}, {"filler_items": 0}, {"filler_items": 2.5},
                      {"selection": "pagerank"}, {"neighbours": 0}, {"neighbours": 2.5})

    @staticmethod
    def real_matrix(split):
        train = split.train
        real = train.take(train.users < split.n_real_users)
        return real, real.csr()[:split.n_real_users]


@register
class PowerUserAttack(PowerAttack):
    """Power User Attack (Wilson, Seminario. When Power Users Attack. RecSys 2013; power users
    selected as in Seminario, Wilson, FLAIRS 2014): fake user ``f`` copies the profile of the
    ``f``-th most central real user in the user-user cosine-similarity graph (InDegree by
    default), on ``filler_items`` of its items with its ratings, plus every target at the
    maximum rating.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1]: that many power
            users are copied, most central first.
        filler_items: items copied per profile (default: the mean real train profile length).
        selection: ``in_degree`` (default), ``aggregated_similarity`` or ``num_ratings``.
        neighbours: neighbourhood size k of the similarity graph (default 50).

    Example::
        attack = get_attack("power_user", fake_user_fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "power_user"
    paper = f"{WILSON_2013}; {SEMINARIO_2014}"
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "neighbours": 10}

    def power_users(self, split) -> np.ndarray:
        """Real users, most central first."""
        _, matrix = self.real_matrix(split)
        score = centrality(matrix, self.neighbours, self.selection)
        return ranked(score, np.asarray(matrix.sum(axis=1)).ravel())

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        split = context.split
        real, matrix = self.real_matrix(split)
        allowed = self.allowed_fillers(split, targets, fillers)
        power = self.power_users(split)[:n_fake]
        levels = np.unique(split.train.ratings)
        rating = {}   # (user, item) -> rating, for the power users' rows
        chosen = np.isin(real.users, power) & allowed[real.items]
        for u, i, r in zip(real.users[chosen], real.items[chosen], real.ratings[chosen]):
            rating[(int(u), int(i))] = float(r)
        # padding: the items the power users rate most, at their mean rating there
        group = real.take(chosen)
        counts = np.bincount(group.items, minlength=real.n_items).astype(np.float64)
        sums = np.bincount(group.items, group.ratings.astype(np.float64), minlength=real.n_items)
        mean = _snap(sums / np.maximum(counts, 1.0), levels)
        mean[counts == 0] = levels[-1]
        padding = np.lexsort((np.arange(real.n_items), -real.item_counts(), -counts))
        padding = padding[allowed[padding]]
        items, ratings, padded = [], [], 0
        for user in power:
            own = np.flatnonzero(np.asarray(matrix[user].todense()).ravel() > 0)
            own = own[allowed[own]]
            if own.size >= fillers:
                own = np.sort(rng.choice(own, fillers, replace=False))
                extra = np.empty(0, np.int64)
            else:
                padded += 1
                extra = padding[~np.isin(padding, own)][:fillers - own.size]
            items.append(np.concatenate([targets, own, extra]))
            ratings.append(np.concatenate([np.full(targets.size, levels[-1]),
                                           [rating[(int(user), int(i))] for i in own], mean[extra]]))
        return Profiles(items, ratings, {"padded_profiles": padded})


@register
class PowerItemAttack(PowerAttack):
    """Power Item Attack (Seminario, Wilson. Attacking Item-Based Recommender Systems with Power
    Items. RecSys 2014), with multiple targets (PIA-MT): every fake profile holds the targets at
    the maximum rating and, as fillers, the most central items of the item-item
    cosine-similarity graph (InDegree by default), rated as the average attack rates fillers.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: power items per profile (default: the mean real train profile length).
        selection: ``in_degree`` (default), ``aggregated_similarity`` or ``num_ratings``
            (popularity: then the attack is black-box).
        neighbours: neighbourhood size k of the item similarity graph (default 50).
        pool: None (default: every profile holds the ``filler_items`` most central items), or
            the number of most central items each profile draws its fillers among (at least
            ``filler_items``).

    Example::
        attack = get_attack("power_item", fake_user_fraction=0.05, selection="in_degree")
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "power_item"
    paper = POWER_ITEMS_2014
    parameters = {"pool": Param(None, check.integer, optional=True)}
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "neighbours": 10}
    invalid_params = PowerAttack.invalid_params + ({"pool": 0}, {"pool": 2.5},
                                                   {"filler_items": 10, "pool": 5})

    def _derive(self):
        if self.pool is not None and self.filler_items is not None and self.pool < self.filler_items:
            raise ValueError(f"pool={self.pool} must be at least filler_items={self.filler_items}")
        if self.selection == "num_ratings":
            self.knowledge = "black-box"   # public popularity only

    def power_items(self, split, targets, fillers) -> np.ndarray:
        """The allowed filler items (rated by a real user, not a target), most central first."""
        allowed = self.allowed_fillers(split, targets, fillers)
        _, matrix = self.real_matrix(split)
        items = matrix.T.tocsr()
        score = centrality(items, self.neighbours, self.selection)
        order = ranked(score, np.asarray(items.sum(axis=1)).ravel())
        return order[allowed[order]]

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        train = context.split.train
        power = self.power_items(context.split, targets, fillers)
        pool = power[:max(self.pool or fillers, fillers)]
        if pool.size == fillers:
            chosen = np.broadcast_to(pool, (n_fake, fillers))
        else:
            keys = rng.random((n_fake, pool.size))
            chosen = pool[np.argpartition(keys, fillers - 1, axis=1)[:, :fillers]]
        levels = np.unique(train.ratings)
        items = np.hstack([np.broadcast_to(targets, (n_fake, targets.size)), chosen])
        ratings = np.hstack([np.full((n_fake, targets.size), levels[-1]),
                             _snap(item_normal(train, chosen, rng), levels)])
        return Profiles(items, ratings, {"power_pool": int(pool.size)})
