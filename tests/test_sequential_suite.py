"""A sequential suite through the harness on the tiny data: the next-item task's records, a
leaderboard of their own, pollution cells, and refusals before any work."""
import json
import subprocess
import sys

import pytest

from benchmark.api import run
from benchmark.results.leaderboard import leaderboards

SUITE = {
    "name": "tiny-seq", "dataset": "tests/data/tiny", "models": ["SASRec", "GRU4Rec", "BPR"],
    "seeds": 1, "noise_floor": 1,
    "training": {"epochs": 2, "batch_size": 256},
    "model_params": {"SASRec": {"MAX_ITEM_LIST_LENGTH": 10}, "GRU4Rec": {"MAX_ITEM_LIST_LENGTH": 10}},
    "targets": {"policy": "unpopular", "count": 3},
    "attacks": [{"name": "interleaved_sequence", "budgets": [0.1], "params": {"filler_items": 4}},
                {"name": "sequence_noise", "budgets": [0.2]},
                {"name": "profile_pollution", "budgets": [1], "params": {"min_similarity": -1.0}}],
    "defenses": [{"name": "apr", "against": ["clean", "profile_pollution"]}],
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq") / "run"
    frame = run(SUITE, out=out, workers=1, device="cpu")
    return frame, json.loads((out / "results.json").read_text())


def test_sequential_models_train_and_are_scored_leave_one_out(outcome):
    frame, document = outcome
    records = document["records"]
    split = {r["model"]: r["split"] for r in records}
    assert split == {"SASRec": "leave_one_out", "GRU4Rec": "leave_one_out", "BPR": "random"}
    ok = [r for r in records if r["status"] == "ok"]
    assert {r["model"] for r in ok} == {"SASRec", "GRU4Rec", "BPR"}
    for model in ("SASRec", "GRU4Rec"):   # one candidate set per seed: the same in every cell
        assert len({r["candidates"] for r in ok if r["model"] == model}) == 1
        cells = [r for r in ok if r["model"] == model]
        assert all(0 <= r["metrics"]["hit@10"] <= 1 for r in cells)
        n_scored = {(len(r["per_user"]["ndcg@10"]), sum(v is not None for v in r["per_user"]["ndcg@10"]))
                    for r in cells}
        assert n_scored == {(60, 60)}   # every real user of the tiny data, and no fake user


def test_pollution_cells_run_on_sequential_models_and_not_on_others(outcome):
    _, document = outcome
    cells = {(r["model"], r["variant"]["defense"]): r for r in document["records"]
             if r["attack"] and r["attack"]["family"] == "pollution" and r["replicate"] == 0}
    assert cells[("SASRec", "none")]["status"] == "ok"
    assert cells[("SASRec", "none")]["attack"]["budget"]["changed_items"] > 0
    assert cells[("SASRec", "apr")]["status"] == "ok"
    assert cells[("BPR", "none")]["status"] == "not_applicable"
    assert "reads no history" in cells[("BPR", "none")]["error"]


def test_the_two_tasks_get_leaderboards_of_their_own(outcome):
    _, document = outcome
    boards = dict(leaderboards(document["summary"]))
    assert len(boards) == 2
    (top_n, general), (next_item, sequential) = boards.items()
    assert "Top-n" in top_n and {r["model"] for r in general} == {"BPR"}
    assert "Next-item" in next_item and {r["model"] for r in sequential} == {"SASRec", "GRU4Rec"}


def test_a_sequential_model_on_data_without_time_is_refused_in_one_line(tmp_path):
    data = tmp_path / "untimed"
    data.mkdir()
    rows = [f"{u}\t{i}" for u in range(6) for i in range(5)]
    (data / "untimed.inter").write_text("user_id:token\titem_id:token\n" + "\n".join(rows) + "\n")
    done = subprocess.run([sys.executable, "-m", "benchmark.run", "--suite", "clean", "--models", "SASRec",
                           "--dataset", str(data), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "SASRec" in lines[0] and "timestamp" in lines[0]
    assert not (tmp_path / "out" / "results.json").exists()
