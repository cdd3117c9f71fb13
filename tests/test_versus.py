"""The attack-versus-reference study (``benchmark.studies.versus``) on a real run's results."""
import json

import pytest

from benchmark.results.noise_floor import EXACT, PERMUTATION_FLOOR
from benchmark.studies.versus import compare, main


@pytest.fixture(scope="module")
def document(product_results):
    return json.loads(product_results.read_text())


def test_rows_agree_with_the_summary_and_pair_only_equal_budgets(document):
    rows = compare(document, reference="random")
    summary = {(s["model"], s["attack"], s["budget_value"], s["metric"]): s["mean"]
               for s in document["summary"] if s["defense"] == "none" and s["source"] == "metrics"}
    assert {(r["attack"], r["budget"]) for r in rows} >= {("random", 0.1), ("bandwagon", 0.05), ("bandwagon", 0.1)}
    for row in rows:
        for metric in ("target_hr@50", "target_rank"):
            assert row[metric] == pytest.approx(summary[(row["model"], row["attack"], row["budget"], metric)])
        tested = row["attack"] == "bandwagon" and row["budget"] == 0.1
        assert (row["p"] is not None) == tested   # random has no reference; 0.05 has no random
        if tested:   # training runs as replicates: one bandwagon and one random run per seed
            assert row["runs"] == 4
            if row["model"] == "Pop":   # trains deterministically: the difference is exact
                assert row["test"] == EXACT and row["p"] in (0.0, 1.0)
            else:
                assert row["test"] == PERMUTATION_FLOOR
                assert 0.25 <= row["p"] <= row["p_adjusted"] <= 1   # 2 seeds x 2 runs: p >= 1/4


def test_prints_both_tables(product_results, capsys):
    main([str(product_results.parent)])
    out = capsys.readouterr().out
    assert "p vs random (BH)" in out and "| attack | surrogate | budget | BPR | Pop |" in out
