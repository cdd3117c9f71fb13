"""The regression gate: exit 0 within tolerance, 1 on a regression or a lost cell, 2 on bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.compare import (
    AbsoluteTolerance,
    RelativeTolerance,
    compare,
    main,
    parse_tolerance,
)
from benchmark.core.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _sample(product_results):
    """Every test here compares documents the product wrote (``tests/conftest.py``)."""
    global FIXTURE, CELL, OTHER
    FIXTURE = product_results
    records = json.loads(FIXTURE.read_text(encoding="utf-8"))["records"]
    # an undefended attack cell, and a defended one on another seed
    CELL = next(r["cell_id"] for r in records if r["model"] == "BPR" and r["seed"] == 0 and r["status"] == "ok"
                and r["variant"] == {"attack": "bandwagon@0.1[filler_items=10]", "defense": "none"})
    OTHER = next(r["cell_id"] for r in records if r["model"] == "BPR" and r["seed"] == 1 and r["status"] == "ok"
                 and r["variant"] == {"attack": "pgd@0.5[steps=3]", "defense": "apr"})


def sample() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def record(document: dict, cell_id: str | None = None) -> dict:
    return next(r for r in document["records"] if r["cell_id"] == (cell_id or CELL))


def write(path: Path, document) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "benchmark.compare", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def degraded(metric: str, delta: float, source: str = "metrics") -> dict:
    document = sample()
    record(document)[source][metric] += delta
    return document


def test_identical_runs_pass():
    done = run_cli(FIXTURE, FIXTURE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 regressions" in done.stdout and done.stderr == ""


def test_ndcg_drop_beyond_tolerance_fails_with_a_table(tmp_path):
    current = write(tmp_path / "current.json", degraded("ndcg@10", -0.05))
    done = run_cli(FIXTURE, current)
    assert done.returncode == 1
    header, row = done.stdout.splitlines()[:2]
    assert header.split() == ["cell", "metric", "baseline", "current", "delta", "tolerance"]
    assert row.split()[:2] == [CELL, "ndcg@10"] and row.split()[-2:] == ["-0.0500", "0.02"]


def test_drop_within_tolerance_passes(tmp_path):
    current = write(tmp_path / "current.json", degraded("ndcg@10", -0.015))
    assert run_cli(FIXTURE, current).returncode == 0


def test_relative_tolerance(tmp_path):
    baseline = record(sample())["metrics"]["ndcg@10"]
    current = write(tmp_path / "current.json", degraded("ndcg@10", -0.04 * baseline))
    assert run_cli(FIXTURE, current, "--tolerance", "ndcg@10:5%").returncode == 0
    assert run_cli(FIXTURE, current, "--tolerance", "ndcg@10:3%").returncode == 1


@pytest.mark.parametrize("metric, source, delta", [
    ("drop_ndcg@10", "robustness", 0.05),   # more accuracy lost under attack
    ("target_hr@50", "metrics", 0.05),      # the target item got easier to promote
])
def test_rises_of_smaller_is_better_metrics_fail(metric, source, delta):
    result = compare(sample(), degraded(metric, delta, source))
    assert [(r.cell_id, r.metric) for r in result.regressions] == [(CELL, metric)]
    assert not compare(sample(), degraded(metric, -delta, source)).failed   # improvements pass


def test_missing_and_failed_cells_are_listed_and_fail(tmp_path):
    document = sample()
    document["records"].remove(record(document))
    other = record(document, OTHER)
    other.update(status="failed", error="RuntimeError: out of memory", metrics={})
    done = run_cli(FIXTURE, write(tmp_path / "current.json", document))
    assert done.returncode == 1
    assert f"  {CELL}: absent" in done.stdout
    assert f"  {OTHER}: failed: RuntimeError: out of memory" in done.stdout


def test_tolerance_objects_work_outside_the_cli():
    assert parse_tolerance("ndcg@10:0.01") == AbsoluteTolerance("ndcg@10", 0.01)
    assert parse_tolerance("recall@20:5%") == RelativeTolerance("recall@20", 0.05)
    absolute, relative = AbsoluteTolerance("ndcg@10", 0.01), RelativeTolerance("ndcg@10", 0.05)
    assert absolute.allows(0.20, 0.19) and not absolute.allows(0.20, 0.189)
    assert relative.allows(0.20, 0.19) and not relative.allows(0.20, 0.189)
    assert AbsoluteTolerance("drop_ndcg@10", 0.01).allows(0.10, 0.0)   # smaller drop is better
    assert not AbsoluteTolerance("drop_ndcg@10", 0.01).allows(0.10, 0.12)
    assert (str(absolute), str(relative)) == ("0.01", "5%")


@pytest.mark.parametrize("text", ["ndcg@10", "ndcg@10:", ":0.1", "ndcg@10:abc", "ndcg@10:-1",
                                  "ndcg@10:nan", "ndcg@10:5%%", "nope@10:0.1"])
def test_malformed_tolerance_is_bad_input(text):
    with pytest.raises(BadInput, match="bad tolerance"):
        parse_tolerance(text)


@pytest.mark.parametrize("problem", ["no file", "bad json", "schema_version", "invalid", "tolerance",
                                     "usage"])
def test_bad_input_exits_2_with_one_line(tmp_path, problem):
    current = tmp_path / "current.json"
    extra = []
    if problem == "bad json":
        write(current, '{"schema_version": 1, "records": [')
    elif problem == "schema_version":
        write(current, {**sample(), "schema_version": 1})
    elif problem == "invalid":
        write(current, {**sample(), "records": [{"cell_id": "x"}]})
    elif problem in ("tolerance", "usage"):
        current = FIXTURE
        extra = ["--tolerance", "ndcg@10:lots"] if problem == "tolerance" else ["--bogus"]
    done = run_cli(FIXTURE, current, *extra)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_main_returns_exit_codes(capsys):
    assert main([str(FIXTURE), str(FIXTURE)]) == 0
    assert main([str(FIXTURE), "/nonexistent/results.json"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_switching_a_defense_off_fails_the_committed_smoke_baseline(tmp_path):
    """The CI gate: APR cells that behave like undefended ones (APR switched off) regress."""
    import copy
    import json

    from benchmark.compare import main as compare_main
    from tests.conftest import ROOT
    baseline_path = ROOT / "benchmark" / "baselines" / "smoke.json"
    baseline = json.loads(baseline_path.read_text())
    current = copy.deepcopy(baseline)
    undefended = {(r["model"], r["seed"], r["variant"]["attack"]): r for r in current["records"]
                  if r["defense"] is None}
    for record in current["records"]:
        if record["defense"] and record["defense"]["name"] == "apr" and record["status"] == "ok":
            twin = undefended[(record["model"], record["seed"], record["variant"]["attack"])]
            record["metrics"] = dict(twin["metrics"])
            record["robustness"] = dict(twin["robustness"] or {}) or record["robustness"]
    path = tmp_path / "current.json"
    path.write_text(json.dumps(current))
    assert compare_main([str(baseline_path), str(baseline_path)]) == 0
    assert compare_main([str(baseline_path), str(path)]) == 1
