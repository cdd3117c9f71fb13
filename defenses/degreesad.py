"""DegreeSAD: shilling detection from the popularity (degree) of the items in each profile.

Reference implementation read: Coder-Yu/SDLib, ``method/DegreeSAD.py`` (Python 2; FEOAttack,
WuYunfan/FEOAttack, ports only SDLib's FAP and PCA, not DegreeSAD). SDLib computes three features
per user from the train degrees (number of raters) of the items in the user's profile:

- MUD, the mean item degree,
- RUD, the range of the item degrees (largest minus smallest),
- QUD, the lower quartile of the item degrees (the sorted degrees at index ``(n - 1) // 4``),

and trains a decision tree (entropy criterion) on labelled genuine and fake profiles.

As implemented here: the same three features, computed for every user with train rows in one
vectorised pass (numpy ``bincount`` / ``lexsort``); each feature is log-transformed (``log1p``:
degrees are long-tailed) and robustly z-scored over the users (median, and MAD scaled by 1.4826);
a user's suspicion is the sum of its squared z-scores, and the ``flag_fraction`` most suspicious
users are flagged and their rows removed, as ``pca_detector`` does.

Deviations, with reasons:

- **Unsupervised instead of a classifier.** SDLib's decision tree is trained on labelled fake
  profiles; in this benchmark that would mean training on the very attack generators it is
  tested against (or on the ground-truth labels). The features are scored as outliers instead,
  with no training data, and a fixed fraction of users is flagged (the number of attackers is
  unknown to a deployed defense, as in ``pca_detector``).
- **Two-sided outlier score.** Fake profiles with uniformly drawn fillers have unusually *low*
  item degrees; popularity-sampled fillers or bandwagon items push them the other way. The sum
  of squared z-scores flags both; on ml-100k at 5 % fake users it was within 0.1 precision of the
  one-sided (low MUD) score on random, bandwagon and segment attacks.
- **MUD is a mean.** SDLib's Python 2 code forgets to assign the division, so its "MUD" is the
  sum of degrees (a mix of popularity and profile length); the paper's MUD is the mean.
- **log1p before z-scoring**, so that a few blockbuster items do not dominate the scale; the
  paper feeds raw degrees to its classifier, where scale does not matter.
- Ratings are not used (degree only): the detector works the same on implicit feedback.
"""
from __future__ import annotations

import numpy as np

from benchmark.core.data import Interactions
from defenses.base import register
from defenses.detection import ScoredDetector, dedupe

LI_GAO = ("Wentao Li, Min Gao et al. Shilling Attack Detection in Recommender Systems via "
          "Selecting Patterns Analysis. IEICE Transactions on Information and Systems E99-D, 2016")

DEGREE_FEATURES = ("mud", "rud", "qud")
MAD_SCALE = 1.4826   # MAD * this estimates the standard deviation of a normal sample


def degree_features(train: Interactions):
    """(active user ids, features of shape (active users, 3)): MUD, RUD, QUD of each profile.

    An item's degree is its number of distinct raters in ``train`` (fake users included, as the
    detector sees them). MUD is the mean degree of the user's items, RUD the largest minus the
    smallest, QUD the lower quartile as SDLib takes it (ascending order, index ``(n - 1) // 4``).
    """
    users, items, _ = dedupe(train)
    active, rows = np.unique(users, return_inverse=True)
    n = active.size
    if n == 0:
        return active, np.zeros((0, len(DEGREE_FEATURES)))
    degree = np.bincount(items, minlength=train.n_items).astype(np.float64)[items]
    length = np.bincount(rows, minlength=n)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    ordered = degree[np.lexsort((degree, rows))]   # by user, then ascending degree
    mud = np.bincount(rows, degree, n) / length
    rud = ordered[start + length - 1] - ordered[start]
    qud = ordered[start + (length - 1) // 4]
    return active, np.column_stack([mud, rud, qud])


def robust_z(features: np.ndarray) -> np.ndarray:
    """Column-wise (x - median) / (1.4826 MAD); a column with MAD 0 is only centred."""
    median = np.median(features, axis=0)
    mad = np.median(np.abs(features - median), axis=0) * MAD_SCALE
    return (features - median) / np.where(mad > 1e-12, mad, 1.0)


def degree_scores(train: Interactions):
    """(active user ids, suspicion): the sum of squared robust z-scores of log1p(MUD, RUD, QUD)."""
    active, features = degree_features(train)
    if active.size == 0:
        return active, np.zeros(0)
    return active, np.sum(robust_z(np.log1p(features)) ** 2, axis=1)


@register
class DegreeSAD(ScoredDetector):
    """DegreeSAD (Wentao Li, Min Gao et al. Shilling Attack Detection in Recommender Systems via
    Selecting Patterns Analysis. IEICE Transactions on Information and Systems, 2016), run
    unsupervised.

    Fake profiles select items differently from real users: uniformly drawn fillers are far less
    popular than what real users rate. Each profile is summarised by the mean, range and lower
    quartile of its items' train degrees (MUD, RUD, QUD); the profiles whose (log) features lie
    furthest from the population's median, in robust z-scores, are flagged. The paper trains a
    classifier on labelled profiles; here no label and no attack generator is used (module
    docstring: deviations). Optimised profiles that pick popular items (PGA) are not caught.

    Args:
        flag_fraction: fraction of the users with train rows to flag, in (0, 0.5]
            (default 0.05; at least one user is flagged).

    Example::
        defense = get_defense("degree_sad", flag_fraction=0.05)
        result = defense.clean(poisoned_split, seed=0)  # result.train, result.flagged_users
    """

    name = "degree_sad"
    label = "DegreeSAD (unsupervised variant)"
    paper = LI_GAO

    def scores(self, train: Interactions, rng: np.random.Generator):
        return degree_scores(train)
