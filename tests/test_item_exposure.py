"""``benchmark/studies/item_exposure.py`` reports the attack metric itself, with every item a target."""
import numpy as np
import pytest

from tests.conftest import ROOT

SUITE = str(ROOT / "tests" / "data" / "tiny_suite.yaml")


@pytest.mark.parametrize("model", ["BPR", "ItemKNN"])
def test_exposure_equals_the_evaluators_target_metrics(model):
    from benchmark.core.evaluation import Evaluator
    from benchmark.studies.item_exposure import exposure, train_clean
    split, scorer = train_clean(model, 0, SUITE)
    hr, rank = exposure(split, scorer)
    counts = split.train.item_counts()
    items = [int(np.argmax(counts)), int(np.flatnonzero(counts)[0]), int(np.argsort(counts)[len(counts) // 2])]
    for item in items:
        metrics = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid,
                            targets=np.array([item]))()
        assert hr[item] == pytest.approx(metrics["target_hr@50"], abs=1e-12), item
        assert rank[item] == pytest.approx(metrics["target_rank"], rel=1e-9), item
    finite = ~np.isnan(hr)
    assert finite.any() and ((hr[finite] >= 0) & (hr[finite] <= 1)).all()
    assert (rank[finite] >= 1).all() and (rank[finite] <= split.train.n_items).all()
