"""The defenses study (``benchmark.studies.defenses``) on a real run's results."""
import json

import numpy as np
import pytest

from benchmark.studies.defenses import differences, main, train_time_ratios


@pytest.fixture(scope="module")
def document(product_results):
    return json.loads(product_results.read_text())


def _mean(records, defense, variant, metric):
    return np.mean([r["metrics"][metric] for r in records if r["status"] == "ok" and r["model"] == "BPR"
                    and r["variant"] == {"attack": variant, "defense": defense} and not r.get("player")
                    and r["replicate"] == 0])


def test_differences_are_seed_means_against_the_undefended_cell(document):
    table = differences(document, "ndcg@10")
    records = document["records"]
    for variant in ("clean", "fgsm@0.5", "random@0.1[filler_items=10]"):
        delta, p = table[("BPR", "apr", variant)]
        assert delta == pytest.approx(_mean(records, "apr", variant, "ndcg@10") - _mean(records, "none", variant, "ndcg@10"))
        assert p is None or 0 <= p <= 1
    assert not any(defense == "none" for _, defense, _ in table)


def test_train_time_ratio_is_the_defense_phase_over_plain_training(document):
    ratio = train_time_ratios(document)[("BPR", "apr")]
    seconds = {(r["variant"]["defense"], r["seed"]): r["cost"]["train_s"] + r["cost"].get("defense_s", 0.0)
               for r in document["records"] if r["model"] == "BPR" and r["attack"] is None
               and r["status"] == "ok" and not r.get("player") and r["replicate"] == 0}
    expected = np.mean([seconds[("apr", s)] / seconds[("none", s)] for s in (0, 1)])
    assert ratio == pytest.approx(expected) and ratio > 0


def test_prints_a_table_per_model_and_metric(product_results, capsys):
    main([str(product_results.parent), "--metric", "ndcg@10"])
    out = capsys.readouterr().out
    assert "**BPR: ndcg@10, defended minus undefended**" in out and "| apr | " in out
