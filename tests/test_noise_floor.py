"""Significance with training runs as replicates (benchmark.results.noise_floor).

The null check: a clean retrain (another training seed, the same split) relabelled as an attack
cell changes nothing but the training noise, so no metric may come out significant against the
other clean runs. Per-user tests fail it (two clean retrains of BPR on ml-100k: p = 6e-19 on
target rank); the noise-floor tests must pass it with one seed and with three."""
import numpy as np
import pytest

from benchmark.results.aggregate import derive, summarise
from benchmark.results.noise_floor import (
    EXACT,
    NO_RETRAINS,
    ONE_RUN,
    PERMUTATION_FLOOR,
    T_FLOOR,
    floor,
    paired_runs,
    versus_runs,
)
from benchmark.results.records import read_results
from tests.conftest import TINY, run_cli

SUITE = """\
name: null-check
models: [BPR, Pop]
seeds: {seeds}
noise_floor: 3
training: {{epochs: 4, patience: 2, learning_rate: 0.01, batch_size: 256}}
targets: {{policy: unpopular, count: 3}}
"""


@pytest.fixture(scope="module", params=[1, 3])
def clean_runs(request, tmp_path_factory):
    """The records of a run of the product: clean BPR and Pop, 4 training runs per seed."""
    where = tmp_path_factory.mktemp(f"null{request.param}")
    (where / "suite.yaml").write_text(SUITE.format(seeds=request.param))
    done = run_cli("benchmark.run", "--suite", where / "suite.yaml", "--dataset", TINY, "--out", where / "out",
                   "--workers", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    return request.param, read_results(where / "out" / "results.json")["records"]


def as_attack(record: dict) -> dict:
    """A clean retrain dressed as the cell of an attack that changed nothing."""
    attack = {"name": "nothing", "family": "noise", "params": {}, "budget_param": "fraction",
              "budget_value": 0.0, "budget": {"fraction": 0.0}}
    return {**record, "attack": attack, "replicate": 0, "cell_id": record["cell_id"] + "/null",
            "variant": {**record["variant"], "attack": "nothing@0"}}


def test_a_clean_retrain_is_not_an_effect(clean_runs):
    seeds, records = clean_runs
    assert len(records) == 2 * 4 * seeds
    null = [as_attack(r) if r["replicate"] == 1 else r for r in records]
    rows = [row for row in summarise(derive(null)) if row["variant"] == "nothing@0" and row["model"] == "BPR"]
    tested = [row for row in rows if row["p_adjusted_vs_clean"] is not None]
    assert {row["metric"] for row in tested} >= {"ndcg@10", "recall@10", "target_rank", "target_hr@50"}
    assert min(row["p_adjusted_vs_clean"] for row in tested) >= 0.01, [
        (row["metric"], row["p_value_vs_clean"], row["test_vs_clean"]) for row in tested]
    assert {row["test_vs_clean"] for row in tested} == {T_FLOOR, PERMUTATION_FLOOR}
    assert all(row["n_runs_vs_clean"] == 4 * seeds for row in tested)   # the cell and 3 clean runs per seed


def test_pop_trains_deterministically_and_its_differences_are_exact(clean_runs):
    _, records = clean_runs
    floors = floor(records)
    pop = next(v for k, v in floors.items() if k[1] == "Pop")
    bpr = next(v for k, v in floors.items() if k[1] == "BPR")
    assert pop["deterministic"] and not bpr["deterministic"]
    assert versus_runs({0: 0.3}, {0: [0.2]}, "ndcg@10", pop)[:2] == (0.0, EXACT)
    assert versus_runs({0: 0.2}, {0: [0.2]}, "ndcg@10", pop)[:2] == (1.0, EXACT)


def test_without_retrains_there_is_no_p_value():
    only_one = {"deterministic": False, "runs": 1, "seeds": 1, "ndcg@10": (float("nan"), 0)}
    assert versus_runs({0: 0.3}, {0: [0.2]}, "ndcg@10", only_one) == (None, NO_RETRAINS, 2)
    assert paired_runs([0.1], "ndcg@10") == (None, ONE_RUN, 1)


def test_a_shift_well_beyond_the_floor_is_significant_and_the_test_matches_scipy():
    """Three seeds of four clean runs with sd 0.01 around their seed's mean; a cell 0.05 above:
    the t statistic against the pooled within-seed variance, checked against a direct computation."""
    from scipy import stats
    rng = np.random.default_rng(0)
    clean = {s: list(0.3 + s * 0.01 + rng.normal(0, 0.01, 4)) for s in range(3)}
    entry = {"deterministic": False, "runs": 12, "seeds": 3}
    pooled = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in clean.values()) / 9
    entry["ndcg@10"] = (pooled, 9)
    cell = {s: float(np.mean(v)) + 0.05 for s, v in clean.items()}
    p, test, runs = versus_runs(cell, clean, "ndcg@10", entry)
    t = 3 * 0.05 / np.sqrt(pooled * 3 * (1 + 1 / 4))
    assert (test, runs) == (T_FLOOR, 15)
    assert p == pytest.approx(2 * stats.t.sf(t, 9)) and p < 1e-4


def test_the_sparse_permutation_test_cannot_go_below_its_smallest_p():
    """Hits only in the cell, none in 3 clean runs per seed: the exact permutation p is the
    chance that the cell's run is the one with hits, 1/4 per seed."""
    entry = {"deterministic": False, "runs": 8, "seeds": 2, "target_hr@50": (0.0, 6)}
    p, test, _ = versus_runs({0: 0.02, 1: 0.03}, {0: [0.0] * 3, 1: [0.0] * 3}, "target_hr@50", entry)
    assert test == PERMUTATION_FLOOR and p == pytest.approx(1 / 16)


def test_the_leaderboard_and_report_show_whether_the_gain_clears_the_noise_floor(product_results):
    """A real run with two clean retrains per model and seed: the leaderboard's strongest target
    attack carries its summary test against clean, and the report shows the floor per model."""
    import json

    from benchmark.results.leaderboard import ALPHA, leaderboard
    from reports.build import render
    document = json.loads(product_results.read_text())
    board = leaderboard(document["summary"])
    rows = {(s["model"], s["variant"], s["metric"]): s for s in document["summary"]
            if s["defense"] == "none" and s["source"] == "metrics"}
    for row in board:
        summary = rows[(row["model"], row["strongest_target_attack"], "target_hr@50")]
        assert (row["target_hr_p"], row["target_hr_test"]) == (summary["p_adjusted_vs_clean"], summary["test_vs_clean"])
        assert row["significant"] == any(p is not None and p < ALPHA for p in (row["target_hr_p"], row["target_rank_p"]))
    floor_rows = [r for r in document["noise_floor"] if r["metric"] == "ndcg@10"]
    assert {r["model"] for r in floor_rows} == {"BPR", "Pop"} and all(r["runs"] == 6 for r in floor_rows)
    html = render(document)
    section = html.split('id="noise-floor"', 1)[1].split("</section>", 1)[0]
    bpr = next(r for r in floor_rows if r["model"] == "BPR")
    assert f"{bpr['sd']:.4f}" in section and "0 (deterministic)" in section   # Pop trains deterministically
