"""Detection time of the shilling detectors on ml-100k (split seed 0) with 5% fake users (average
attack, unpopular targets), plus their precision and recall in ``extra_info``.

    .venv/bin/pytest benchmarks/test_bench_detection.py --benchmark-only -p no:cacheprovider

``feature_detector`` is timed twice: a cold call (it generates its training attacks and fits its
classifiers) and a warm one (the fitted classifiers are cached per dataset and seed, as when the
harness runs several cells of one seed in a process), which is feature extraction and scoring.
"""
import numpy as np
import pytest

from attacks.base import AttackContext, get_attack
from benchmark.core.data import load_dataset, split_dataset
from benchmark.core.targets import choose_targets
from defenses import feature_detector
from defenses.base import get_defense


@pytest.fixture(scope="module")
def poisoned():
    split = split_dataset(load_dataset("ml-100k"), seed=0)
    targets = choose_targets(split.train, "unpopular", count=5, seed=0)
    result = get_attack("average", fake_user_fraction=0.05).poison(AttackContext(split, targets), 0)
    return split.with_train(result.train)


def record(benchmark, result, split):
    flagged = result.flagged_users
    tp = int(np.sum(flagged >= split.n_real_users))
    n_fake = split.train.n_users - split.n_real_users
    benchmark.extra_info.update(flagged=int(flagged.size), true_positives=tp, fake_users=n_fake,
                                precision=tp / max(flagged.size, 1), recall=tp / n_fake)


def test_pca_detector(benchmark, poisoned):
    defense = get_defense("pca_detector", flag_fraction=0.05)
    result = benchmark(defense.clean, poisoned, 0)
    record(benchmark, result, poisoned)


def test_feature_detector_cold(benchmark, poisoned):
    defense = get_defense("feature_detector")
    result = benchmark.pedantic(defense.clean, args=(poisoned, 0), rounds=2, iterations=1,
                                setup=feature_detector.clear_cache)
    record(benchmark, result, poisoned)


def test_feature_detector_warm(benchmark, poisoned):
    defense = get_defense("feature_detector")
    defense.clean(poisoned, 0)   # fit once
    result = benchmark(defense.clean, poisoned, 0)
    record(benchmark, result, poisoned)
