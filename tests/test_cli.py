"""End to end through ``python -m benchmark.run``: records, CSV, resume, bad input, determinism."""
import csv
import json
import math

import pytest

from benchmark.results.records import validate_results
from tests.conftest import ROOT, TINY, run_cli

SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    proc = run_cli("benchmark.run", "--suite", SUITE, "--out", out, "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_valid_results_and_prints_the_path(tiny_run):
    out, proc = tiny_run
    assert f"results: {out / 'results.json'}" in proc.stdout
    document = json.loads((out / "results.json").read_text())
    validate_results(document)
    records = document["records"]
    # 2 seeds x 2 models x (clean + noise + random + fgsm)
    assert len(records) == 16
    pop_fgsm = [r for r in records if r["model"] == "Pop" and r["attack"] and r["attack"]["name"] == "fgsm"]
    assert pop_fgsm and all(r["status"] == "not_applicable" for r in pop_fgsm)
    ok = [r for r in records if r["status"] == "ok"]
    assert all(isinstance(v, float) for r in ok for v in r["metrics"].values())
    attacked = [r for r in ok if r["attack"]]
    assert all(r["clean"] and "drop_ndcg@10" in r["robustness"] for r in attacked)
    for key in ("python", "torch", "recbole", "numpy"):
        assert document["run"]["environment"][key]
    assert any(row["n"] == 2 and row["ci_low"] is not None for row in document["summary"])


def test_csv_holds_the_same_numbers_as_json(tiny_run):
    out, _ = tiny_run
    document = json.loads((out / "results.json").read_text())
    by_cell = {r["cell_id"]: r for r in document["records"]}
    rows = list(csv.DictReader(open(out / "results.csv")))
    metric_rows = [row for row in rows if row["group"] == "metrics"]
    assert metric_rows
    for row in metric_rows:
        assert math.isclose(float(row["value"]), by_cell[row["cell_id"]]["metrics"][row["metric"]], rel_tol=0, abs_tol=0)


def test_resume_skips_finished_cells_and_gives_identical_records(tiny_run, tmp_path):
    out, _ = tiny_run
    before = json.loads((out / "results.json").read_text())["records"]
    assert json.loads((out / "settings.json").read_text())["training"]["epochs"] == 4  # what --resume must match
    proc = run_cli("benchmark.run", "--suite", SUITE, "--out", out, "--resume", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    after = json.loads((out / "results.json").read_text())["records"]
    assert [r["metrics"] for r in after] == [r["metrics"] for r in before]
    assert "16/16" in proc.stderr  # the progress bar starts from the finished cells


def test_two_workers_give_identical_records(tiny_run, tmp_path):
    out, _ = tiny_run
    proc = run_cli("benchmark.run", "--suite", SUITE, "--out", tmp_path / "w2", "--workers", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    one = {r["cell_id"]: r["metrics"] for r in json.loads((out / "results.json").read_text())["records"]}
    two = {r["cell_id"]: r["metrics"] for r in json.loads((tmp_path / "w2" / "results.json").read_text())["records"]}
    assert one == two


def test_existing_results_are_never_overwritten(tiny_run):
    out, _ = tiny_run
    stamp = (out / "results.json").stat().st_mtime_ns
    proc = run_cli("benchmark.run", "--suite", SUITE, "--out", out)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "results.json").stat().st_mtime_ns == stamp


BAD_ARGS = {
    "unknown suite": (["--suite", "nosuch"], "unknown suite 'nosuch'"),
    "unknown model": (["--suite", SUITE, "--models", "BPR,Bogus"], "unknown model 'Bogus'"),
    "missing dataset": (["--suite", SUITE, "--dataset", "/nonexistent/data"], "does not exist"),
    "zero seeds": (["--suite", SUITE, "--seeds", "0"], "--seeds"),
    "zero workers": (["--suite", SUITE, "--workers", "0"], "--workers"),
    "bad backend": (["--suite", SUITE, "--backend", "spark"], "invalid choice"),
    "bad device": (["--suite", SUITE, "--device", "gpu"], "--device 'gpu' is not a device"),
    "no suite": ([], "--suite"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_give_one_line_and_exit_2(case, tmp_path):
    args, expected = BAD_ARGS[case]
    proc = run_cli("benchmark.run", *args, "--out", tmp_path / "o")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


BAD_SUITES = {
    "unknown key": ("name: x\nmodels: [BPR]\nepochs: 3\n", "unknown key 'epochs'"),
    "misspelled attack key": ("name: x\nattacks:\n  - {name: random, budget: [0.1]}\n", "unknown key 'budget'"),
    "unknown attack": ("name: x\nattacks:\n  - {name: teleport}\n", "unknown attack 'teleport'"),
    "negative budget": ("name: x\nattacks:\n  - {name: random, budgets: [-0.1]}\n", "invalid random attack"),
    "budget above 1": ("name: x\nattacks:\n  - {name: noise_insert, budgets: [1.5]}\n", "invalid noise_insert"),
    "negative eps": ("name: x\nattacks:\n  - {name: fgsm, budgets: [-1]}\n", "eps"),
    "unknown defense": ("name: x\ndefenses:\n  - {name: prayer}\n", "unknown defense 'prayer'"),
    "malformed yaml": ("name: [x\n", "not valid YAML"),
    "not a mapping": ("- a\n- b\n", "must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_bad_suite_files_give_one_line_and_exit_2(case, tmp_path):
    text, expected = BAD_SUITES[case]
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    proc = run_cli("benchmark.run", "--suite", path, "--dataset", TINY, "--out", tmp_path / "o")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_readme_tables_print_the_summary_means(tiny_run):
    """``python -m benchmark.studies.tables DIR`` (the README's tables) prints every summary row's mean."""
    out, _ = tiny_run
    proc = run_cli("benchmark.studies.tables", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    summary = json.loads((out / "results.json").read_text())["summary"]
    ndcg = [r for r in summary if r["metric"] == "ndcg@10"]
    assert ndcg
    for row in ndcg:
        line = next(l for l in lines if l.startswith(f"| {row['model']} | {row['defense']} | {row['variant'] or 'clean'} |"))
        assert line.split(" | ")[3].startswith(f"{row['mean']:.4f} ± "), line   # 2 seeds: a CI
    assert lines[-1].startswith("wall ") and "'ok'" in lines[-1]
