"""Determinism across backends: the same suite and seeds give the same records on the local
process pool and on Ray, and a Ray run leaves nothing behind outside its out folder.

(Across worker counts and across resume: tests/test_cli.py; across kill -9 and resume:
tests/test_interruptions.py.)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY

SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"

ray = pytest.importorskip("ray")


def local_records(out: Path) -> dict:
    """The plan of ``--dataset TINY --seeds 1`` run in this process (one worker), by cell id."""
    from benchmark.harness import execute
    from benchmark.plan import plan
    from benchmark.spec import load_suite
    suite = load_suite(str(SUITE))
    suite.seeds, suite.dataset = 1, TINY
    (out / "cells").mkdir(parents=True)
    return {r["cell_id"]: r for r in execute(plan(suite), out, workers=1)}


def files_under(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_ray_backend_gives_the_local_records_and_leaves_no_trace(tmp_path):
    # Ray's socket paths must stay short (107 bytes), so its temp root is a short /tmp folder.
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    try:
        out = tmp_path / "ray-out"
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "benchmark.run", "--suite", str(SUITE), "--dataset", TINY,
                               "--seeds", "1", "--backend", "ray", "--workers", "2", "--out", str(out), "--quiet"],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # Nothing in the working directory; in TMPDIR nothing of Ray's (its session folder is
        # deleted at shutdown; torch may keep its own cache folder there); in HOME only
        # matplotlib's font cache, as with any backend.
        assert files_under(cwd) == set()
        assert not [p for p in os.listdir(tmp) if not p.startswith("torchinductor_")], files_under(tmp)
        assert {p.split("/")[1] for p in files_under(home) if "/" in p} <= {"matplotlib"}, files_under(home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    on_ray = {r["cell_id"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    local = local_records(tmp_path / "local-out")
    assert sorted(on_ray) == sorted(local) and len(local) == 8
    for cell, record in local.items():
        assert on_ray[cell]["status"] == record["status"], cell
        assert on_ray[cell]["metrics"] == record["metrics"], cell
        assert on_ray[cell]["attack"] == record["attack"] and on_ray[cell].get("history") == record.get("history")
