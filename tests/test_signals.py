"""Signals (issue 29): a run started with SIGINT ignored (as a shell starts a background job) still
stops on SIGINT; SIGINT or SIGTERM at any point ends in one line counting the finished cells, or
saying how to write what is left (the results, the report); --resume says what it skips.

Triggers are files appearing (a first cell) or the stage itself sending the signal, never sleeps.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmark.results.records import read_results
from tests.conftest import ROOT, TINY

SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"
SMALL = ROOT / "tests" / "data" / "small_suite.yaml"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _cells(out):
    return sorted((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []


def _planned(path=SUITE, seeds=None) -> int:
    from benchmark.plan import plan
    from benchmark.spec import load_suite
    suite = load_suite(str(path))
    if seeds:
        suite.seeds = seeds
    return sum(len(job.cells()) for job in plan(suite))


def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path):
    """``trap "" INT; exec python ...``: what a shell does for ``cmd &``. Python would keep SIGINT
    ignored; the CLI installs its handler, so the run stops with the cell count."""
    out, log = tmp_path / "out", tmp_path / "log"
    command = (f'trap "" INT; exec {sys.executable} -m benchmark.run --suite {SUITE} --seeds 1 '
               f'--out {out} --workers 1 --quiet')
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, stdout=fh, stderr=fh,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not _cells(out):
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "no cell finished"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    line = _one_line(log.read_text())
    saved = len(_cells(out))
    assert line == (f"interrupted: {saved} of {_planned(seeds=1)} cells finished and saved in {out}; "
                    f"rerun with --resume --out {out}")


@pytest.fixture
def small():
    return SMALL


def _run(argv, capsys):
    from benchmark.run import main
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def _signal_on(monkeypatch, module, name, signum, after=0):
    """``module.name`` does its work, then on its call number ``after + 1`` sends ``signum`` to
    this process (a real signal, taken by the handler the CLI installs, which raises at once)."""
    real, calls = getattr(module, name), []

    def sending(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == after + 1:
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(module, name, sending)


def test_sigterm_during_the_report_says_how_to_write_it(small, tmp_path, monkeypatch, capsys):
    import reports.build
    _signal_on(monkeypatch, reports.build, "render", signal.SIGTERM)
    out = tmp_path / "out"
    code, captured = _run(["--suite", small, "--dataset", TINY, "--out", out, "--workers", "1", "--quiet"], capsys)
    assert code == 130
    line = _one_line(captured.err)
    assert line == (f"interrupted while writing the report: the results are in {out / 'results.json'}; "
                    f"write the report with python -m reports.build {out}")
    assert len(read_results(out / "results.json")["records"]) == _planned(small)
    assert not (out / "report.html").exists()


def test_sigint_while_writing_the_results_says_to_resume(small, tmp_path, monkeypatch, capsys):
    from benchmark.results import write
    _signal_on(monkeypatch, write, "derive", signal.SIGINT)
    out = tmp_path / "out"
    code, captured = _run(["--suite", small, "--dataset", TINY, "--out", out, "--workers", "1", "--quiet"], capsys)
    assert code == 130
    n = _planned(small)
    assert _one_line(captured.err) == (f"interrupted while writing the results: all {n} cells are saved in "
                                       f"{out}; rerun with --resume --out {out} to write them")
    assert len(_cells(out)) == n and not (out / "results.json").exists()


def test_interrupt_after_one_cell_counts_it_and_resume_says_what_it_skips(small, tmp_path, monkeypatch, capsys):
    import benchmark.harness as harness
    _signal_on(monkeypatch, harness, "write_json_atomic", signal.SIGINT)   # during the first cell's write
    out = tmp_path / "out"
    argv = ["--suite", small, "--dataset", TINY, "--out", out, "--workers", "1", "--quiet"]
    code, captured = _run(argv, capsys)
    n = _planned(small)
    assert code == 130 and len(_cells(out)) == 1
    assert _one_line(captured.err) == (f"interrupted: 1 of {n} cells finished and saved in {out}; "
                                       f"rerun with --resume --out {out}")
    monkeypatch.undo()
    code, captured = _run([*argv, "--resume"], capsys)
    assert code == 0, captured.err
    assert _one_line(captured.err) == (f"resume: 1 of {n} cells already finished in {out}: skipping them, "
                                       f"running the other {n - 1}")


def test_sigterm_before_any_cell_says_none_finished(small, tmp_path, monkeypatch, capsys):
    import benchmark.harness as harness
    _signal_on(monkeypatch, harness, "_init_worker", signal.SIGTERM)   # before the first job runs
    out = tmp_path / "out"
    code, captured = _run(["--suite", small, "--dataset", TINY, "--out", out, "--workers", "1", "--quiet"], capsys)
    assert code == 130 and not _cells(out)
    assert _one_line(captured.err) == (f"interrupted: no cell had finished ({_planned(small)} planned), nothing "
                                       f"to keep in {out}; rerun with --resume --out {out}")


def test_the_handlers_before_main_are_put_back(small, tmp_path, capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code, _ = _run(["--suite", small, "--dataset", "/nonexistent", "--out", tmp_path / "o"], capsys)
    assert code == 2 and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
