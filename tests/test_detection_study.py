"""The detection study (``benchmark.studies.detection``) on a real run's results."""
import json

import numpy as np
import pytest

from benchmark.studies.detection import detection_table, main


def test_rows_are_seed_means_of_the_detectors_counts(product_results):
    records = json.loads(product_results.read_text())["records"]
    table = detection_table(product_results)
    assert set(table["defense"]) == {"pca_detector"}
    assert {(a.split("[")[0], b) for a, b in zip(table["attack"], table["budget"])} == {
        ("clean", 0.0), ("random", 0.1), ("bandwagon", 0.05), ("bandwagon", 0.1)}
    for _, row in table.iterrows():
        cells = [r for r in records if r["status"] == "ok" and r["variant"]["defense"] == "pca_detector"
                 and (r["attack"] or {}).get("name", "clean") == row["attack"].split("[")[0]
                 and (r["attack"]["budget_value"] if r["attack"] else 0.0) == row["budget"]]
        by_seed = {}
        for r in cells:   # every model of a seed: the same table, so the same counts
            assert by_seed.setdefault(r["seed"], r["detection"]) == r["detection"]
        assert row["seeds"] == len(by_seed) == 2 and len(cells) == 4
        counts = list(by_seed.values())
        precision = [c["true_positives"] / c["flagged"] if c["flagged"] else 0.0 for c in counts]
        assert row["precision"] == pytest.approx(np.mean(precision))
        assert row["fpr"] == pytest.approx(np.mean([c["fpr"] for c in counts]))


def test_prints_one_table_per_detector(product_results, capsys):
    main([str(product_results.parent)])
    out = capsys.readouterr().out
    assert "**pca_detector**" in out and "| clean | FPR " in out and "| random[filler_items=10] | " in out
