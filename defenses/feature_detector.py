"""Supervised shilling detection over classical profile features (Chirita et al. 2005, Burke et
al. 2006, Williams et al. 2007), kind ``detector``.

A random forest (or gradient boosting) over classical generic and model-specific profile
features. It labels its own training data by running shilling attacks on the clean real-user part
of train, with seeds and target items of its own, so it never sees the evaluated fake profiles;
real users are scored by cross-fitting (a classifier that never saw their profile as a negative).
It runs on every poisoned train table and on the clean one, so the benchmark measures what it
catches *and* what it costs on clean data; the features are vectorised (numpy / scipy.sparse),
the detector is deterministic per seed and works in the benchmark's index space
(``defenses.detection``).
"""
from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from functools import partial

import numpy as np
import scipy.sparse as sp

from benchmark.core import params as check
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import PROFILE_FAMILIES, Family, Kind
from benchmark.core.params import Param
from defenses.base import CleanResult, DataDefense, register
from defenses.detection import dedupe, flagged_result

BURKE_2006 = ("Burke, Mobasher, Williams, Bhaumik. Classification Features for Attack Detection in "
              "Collaborative Recommender Systems. KDD 2006; Chirita, Nejdl, Zamfir. Preventing "
              "Shilling Attacks in Online Recommender Systems. WIDM 2005; Williams, Mobasher, "
              "Burke. Defending Recommender Systems: Detection of Profile Injection Attacks. "
              "SOCA 1(3), 2007")


# ---------------------------------------------------------------------------------------------
# Classical profile features (Chirita 2005, Burke 2006, Williams 2007)

FEATURES = ("rdma", "wdma", "wda", "length_var", "degsim", "mean_var", "fmtd", "filler_mean_diff",
            "profile_length", "rating_mean", "rating_std", "max_share", "min_share",
            "mean_log_popularity", "target_focus")


def _top_k_mean_similarity(matrix: sp.csr_matrix, k: int, block: int = 1024) -> np.ndarray:
    """Mean of each row's ``k`` largest cosine similarities to the other rows (blockwise)."""
    n = matrix.shape[0]
    out = np.zeros(n)
    if n < 2:
        return out
    k = min(k, n - 1)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    unit = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix
    unit_t = unit.T.tocsc()
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = np.asarray((unit[start:stop] @ unit_t).todense())
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        top = np.partition(sims, n - 1 - k, axis=1)[:, n - k:]   # the k largest
        out[start:stop] = top.mean(axis=1)
    return out


def profile_features(train: Interactions, n_neighbors: int = 25):
    """(active user ids, feature matrix of shape (active users, len(FEATURES))), all vectorised.

    With r_ui the rating, n_u the profile length, l_i and r̄_i the item's train count and mean:
    RDMA = Σ|r_ui - r̄_i| / l_i / n_u, WDMA = Σ|r_ui - r̄_i| / l_i² / n_u, WDA = Σ|r_ui - r̄_i| / l_i,
    LengthVar = |n_u - n̄| / Σ_v (n_v - n̄)², DegSim = mean similarity to the k nearest users
    (cosine of mean-centred ratings, i.e. Pearson with a missing rating at the user's mean;
    binary cosine on implicit data). Model-specific features split a profile into its target
    part P_T (items at the maximum rating, a push attack's target and selected items) and filler
    part P_F: MeanVar = Σ_F (r_ui - r̄_i)² / |P_F|, FMTD = |mean_T r - mean_F r|, filler mean
    diff = Σ_F |r_ui - r̄_i| / |P_F|. Plus profile length, rating mean and std, the shares of max
    and min ratings, mean log item popularity, and target focus (Williams 2007's group feature,
    simplified): the largest, over the user's max-rated items, of the item's max-rating count
    over its expected count had max ratings been spread like on other items.
    """
    users, items, ratings = dedupe(train)
    active, rows = np.unique(users, return_inverse=True)
    n, m = active.size, train.n_items
    if n == 0:
        return active, np.zeros((0, len(FEATURES)))
    length = np.bincount(rows, minlength=n).astype(np.float64)
    l_item = np.bincount(items, minlength=m).astype(np.float64)
    item_mean = np.bincount(items, ratings, m) / np.maximum(l_item, 1)
    dev = np.abs(ratings - item_mean[items])
    l_row = l_item[items]
    rdma = np.bincount(rows, dev / l_row, n) / length
    wdma = np.bincount(rows, dev / l_row ** 2, n) / length
    wda = np.bincount(rows, dev / l_row, n)
    spread = np.sum((length - length.mean()) ** 2)
    length_var = np.abs(length - length.mean()) / (spread if spread > 0 else 1.0) * n

    mean = np.bincount(rows, ratings, n) / length
    std = np.sqrt(np.maximum(np.bincount(rows, ratings ** 2, n) / length - mean ** 2, 0.0))
    implicit = np.unique(ratings).size <= 1
    values = np.ones_like(ratings) if implicit else ratings - mean[rows]
    matrix = sp.csr_matrix((values, (rows, items)), shape=(n, m))
    degsim = _top_k_mean_similarity(matrix, n_neighbors)

    top, bottom = ratings.max(), ratings.min()
    is_max = ratings == top
    is_min = (ratings == bottom) & ~is_max
    n_target = np.bincount(rows, is_max, n)
    n_filler = length - n_target
    safe_f = np.maximum(n_filler, 1)
    mean_var = np.bincount(rows, np.where(is_max, 0.0, dev ** 2), n) / safe_f
    filler_mean_diff = np.bincount(rows, np.where(is_max, 0.0, dev), n) / safe_f
    target_mean = np.bincount(rows, np.where(is_max, ratings, 0.0), n) / np.maximum(n_target, 1)
    filler_mean = np.bincount(rows, np.where(is_max, 0.0, ratings), n) / safe_f
    fmtd = np.where((n_target > 0) & (n_filler > 0), np.abs(target_mean - filler_mean), 0.0)
    max_share = n_target / length
    min_share = np.bincount(rows, is_min, n) / length
    log_pop = np.bincount(rows, np.log1p(l_row), n) / length

    # target focus: items whose max ratings are far more than their count predicts
    max_count = np.bincount(items, is_max, m).astype(np.float64)
    p_max = max_count.sum() / max(l_item.sum(), 1.0)
    focus_item = (max_count + 1.0) / (l_item * p_max + 1.0)
    focus = np.zeros(n)
    np.maximum.at(focus, rows[is_max], focus_item[items[is_max]])

    features = np.column_stack([rdma, wdma, wda, length_var, degsim, mean_var, fmtd,
                                filler_mean_diff, length, mean, std, max_share, min_share,
                                log_pop, focus])
    return active, np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


# ---------------------------------------------------------------------------------------------
# supervised feature detector

_CLASSIFIER_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8
CLASSIFIERS = ("random_forest", "gradient_boosting")


def _fingerprint(train: Interactions, n_real: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for array in (train.users, train.items, train.ratings):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(f"{n_real}/{train.n_items}".encode())
    return digest.hexdigest()


def _training_targets(train: Interactions, k: int, seed: int, count: int = 5) -> np.ndarray:
    """Target items of the k-th training attack: its own seed, alternating the unpopular and
    random policies so the classifier does not learn one target popularity band."""
    from benchmark.core.targets import target_pool
    policy = "unpopular" if k % 2 == 0 else "random"
    pool = target_pool(train, policy)
    if pool.size < count:
        pool = target_pool(train, "random")
    count = min(count, pool.size)
    return np.sort(np.random.default_rng(seed).choice(pool, size=count, replace=False))


def shilling_names(name: str, value) -> list:
    """A non-empty list of registered shilling attack names, as a list without repeats."""
    from attacks.base import ATTACKS
    names = check.non_empty_list(name, value, "shilling attack names")
    shilling = sorted(c.name for c in ATTACKS if c.family == Family.SHILLING)
    for attack in names:
        if attack not in shilling:
            raise ValueError(f"{name}: '{attack}' is not a shilling attack: choose "
                             f"from {', '.join(shilling)}")
    return list(dict.fromkeys(names))


def clear_cache() -> None:
    """Forget the fitted classifiers (they are cached per dataset, seed and parameters)."""
    _CLASSIFIER_CACHE.clear()


@register
class FeatureDetector(DataDefense):
    """Supervised shilling detection over classical profile features (Chirita, Nejdl, Zamfir.
    WIDM 2005; Burke, Mobasher, Williams, Bhaumik. Classification Features for Attack Detection
    in Collaborative Recommender Systems. KDD 2006; Williams, Mobasher, Burke. SOCA 2007).

    Features (``FEATURES``): RDMA, WDMA, WDA, LengthVar, DegSim, MeanVar,
    FMTD, filler mean diff, profile length, rating mean and std, max and min rating shares, mean
    log item popularity and target focus, computed for all users at once.

    Leak-free training: the detector labels its own data. It takes the real-user part of train
    (users < ``split.n_real_users``), injects each of ``train_attacks`` at each of
    ``train_fractions`` (and ``train_filler_items``) with seeds ``s + 1000 + k``, where ``s`` is
    drawn from the defense's seed (so never a small evaluation seed), and target items of its
    own (alternating unpopular and random policies), computes the features on every such table (fake = 1,
    real = 0) and fits a classifier; then it scores the users of the given train table and flags
    those with ``predict_proba >= threshold``. The evaluated fake profiles are never seen in
    training, and real users are cross-fitted: users are split into ``n_folds`` folds by id and
    a user is scored by a classifier whose negatives excluded its fold, so a real profile is never
    scored by a model that saw it. Fitted classifiers are cached per (real-user train, seed,
    parameters) in-process, since every cell of a seed shares them.

    Args:
        train_attacks: shilling attack names to learn from (default all four: random, average,
            bandwagon, segment); one name gives the cross-attack generalisation setting.
        train_fractions: fake-user fractions of the training attacks (default 0.01, 0.03, 0.05).
        train_filler_items: filler sizes of the training attacks, each a positive int or None
            (the attack's default, the mean real profile length); default [None]. Profiles
            much shorter than the training ones are caught less often, so list several sizes
            when the attacker's filler size is unknown (each one adds a full set of attacks).
        threshold: flag users with predicted fake probability >= threshold, in (0, 1)
            (default 0.5).
        classifier: ``random_forest`` (default) or ``gradient_boosting`` (scikit-learn,
            fixed random_state derived from the seed).
        n_estimators: trees in the ensemble (default 100).
        n_neighbors: k of DegSim (default 25).
        n_folds: cross-fitting folds over user ids, >= 2 (default 2).

    Example::
        defense = get_defense("feature_detector", train_attacks=["random", "average"])
        result = defense.clean(poisoned_split, seed=0)  # result.train, result.flagged_users
    """

    name = "feature_detector"
    kind = Kind.DETECTOR
    paper = BURKE_2006
    applies_to = (Family.CLEAN, *PROFILE_FAMILIES)
    invalid_params = ({"train_attacks": []}, {"train_attacks": ["nope"]},
                      {"train_attacks": ["noise_insert"]}, {"train_attacks": "random"},
                      {"train_fractions": []}, {"train_fractions": [0]}, {"train_fractions": [1.5]},
                      {"threshold": 0}, {"threshold": 1}, {"threshold": "x"},
                      {"train_filler_items": []}, {"train_filler_items": [0]},
                      {"train_filler_items": ["x"]}, {"classifier": "svm"}, {"n_estimators": 0}, {"n_neighbors": 0},
                      {"n_folds": 1})
    test_params = {"train_attacks": ["random", "average"], "train_fractions": [0.1],
                   "n_estimators": 20}

    parameters = {
        "train_attacks": Param(("random", "average", "bandwagon", "segment"), shilling_names),
        "train_fractions": Param((0.01, 0.03, 0.05), check.each, of=check.fraction,
                                 what="fractions in (0, 1]"),
        "train_filler_items": Param((None,), check.each, of=partial(check.optional, check.integer),
                                    what="positive ints or None"),
        "threshold": Param(0.5, check.number, low=0.0, low_open=True, high=1.0, high_open=True),
        "classifier": Param("random_forest", check.choice, options=CLASSIFIERS),
        "n_estimators": Param(100, check.integer), "n_neighbors": Param(25, check.integer),
        "n_folds": Param(2, check.integer, low=2)}

    # -- training data ------------------------------------------------------------------------
    def _make_classifier(self, seed: int):
        if self.classifier == "random_forest":
            from sklearn.ensemble import RandomForestClassifier
            return RandomForestClassifier(n_estimators=self.n_estimators, min_samples_leaf=2,
                                          class_weight="balanced_subsample",
                                          n_jobs=1, random_state=seed % (2 ** 32))
        from sklearn.ensemble import GradientBoostingClassifier
        return GradientBoostingClassifier(n_estimators=self.n_estimators, max_depth=3,
                                          random_state=seed % (2 ** 32))

    def training_data(self, split: Split, seed: int):
        """(features, labels, user ids, skipped) from shilling attacks on the real-user part."""
        from attacks.base import AttackContext, get_attack
        n_real = split.n_real_users
        train = split.train
        real = train.take(train.users < n_real)
        real = Interactions.build(real.users, real.items, real.ratings, n_real, real.n_items)
        real_split = split.with_train(real)
        blocks, labels, ids, skipped = [], [], [], []
        k = 0
        for attack_name in self.train_attacks:
            for fraction, filler in itertools.product(self.train_fractions, self.train_filler_items):
                attack_seed = seed + 1000 + k
                targets = _training_targets(real, k, attack_seed)
                k += 1
                attack = get_attack(attack_name, fake_user_fraction=fraction, filler_items=filler)
                try:
                    poisoned = attack.poison(AttackContext(real_split, targets), attack_seed).train
                except ValueError as exc:   # e.g. too few segment items on a tiny dataset
                    skipped.append(f"{attack_name}@{fraction:g}/filler={filler}: {exc}")
                    continue
                users, features = profile_features(poisoned, self.n_neighbors)
                blocks.append(features)
                labels.append(users >= n_real)
                ids.append(users)
        if not blocks:
            raise ValueError(f"{self.name}: none of the training attacks could run on this "
                             f"dataset ({'; '.join(skipped)})")
        return np.vstack(blocks), np.concatenate(labels), np.concatenate(ids), skipped

    def _fit(self, split: Split, seed: int):
        fitting = {k: v for k, v in self.params.items() if k != "threshold"}
        key = (split.dataset.name,
               _fingerprint(split.train.take(split.train.users < split.n_real_users), split.n_real_users),
               seed, repr(sorted(fitting.items())))
        if key in _CLASSIFIER_CACHE:
            _CLASSIFIER_CACHE.move_to_end(key)
            return _CLASSIFIER_CACHE[key]
        features, labels, ids, skipped = self.training_data(split, seed)
        if labels.all() or not labels.any():
            raise ValueError(f"{self.name}: the training data has a single class; the dataset "
                             f"is too small to train a detector")
        models = []
        for fold in range(self.n_folds):
            # fake training profiles are never evaluated: all of them in every fold
            keep = labels | (ids % self.n_folds != fold)
            models.append(self._make_classifier(seed + fold).fit(features[keep], labels[keep]))
        fitted = (models, skipped, int(labels.sum()), int((~labels).sum()))
        _CLASSIFIER_CACHE[key] = fitted
        while len(_CLASSIFIER_CACHE) > _CACHE_SIZE:
            _CLASSIFIER_CACHE.popitem(last=False)
        return fitted

    def scores(self, split: Split, seed: int):
        """(active user ids, predicted probability that each is fake), as ``clean`` computes
        them with the same seed: for ROC analysis and threshold studies."""
        users, proba, _ = self._score(split, np.random.default_rng(seed))
        return users, proba

    def _score(self, split: Split, rng: np.random.Generator):
        seed = int(rng.integers(0, 2 ** 31 - 1))
        models, skipped, n_pos, n_neg = self._fit(split, seed)
        users, features = profile_features(split.train, self.n_neighbors)
        proba = np.zeros(users.size)
        for fold, model in enumerate(models):
            rows = users % self.n_folds == fold
            if rows.any():
                column = list(model.classes_).index(True)
                proba[rows] = model.predict_proba(features[rows])[:, column]
        info = {"n_users": int(users.size), "train_fake_profiles": n_pos,
                "train_real_profiles": n_neg, "skipped_training_attacks": list(skipped)}
        return users, proba, info

    def _clean(self, split: Split, rng: np.random.Generator) -> CleanResult:
        users, proba, info = self._score(split, rng)
        return flagged_result(split.train, users[proba >= self.threshold], info)
