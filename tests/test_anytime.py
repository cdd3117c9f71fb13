"""Anytime runs: the plan's order puts the most informative cells first, and a deadline stops
new jobs (running ones finish), so any prefix of a run is a usable result (``--time-budget``)."""
import json

from benchmark.harness import execute
from benchmark.plan import plan
from benchmark.schedule import schedule
from benchmark.spec import parse_suite
from tests.conftest import TINY, run_cli

SUITE = {"name": "anytime", "dataset": TINY, "models": ["BPR"], "seeds": 2, "noise_floor": 1,
         "training": {"epochs": 2, "batch_size": 256},
         "targets": {"policy": "unpopular", "count": 3},
         "attacks": [{"name": "random", "budgets": [0.01, 0.03, 0.05], "params": {"filler_items": 5}},
                     {"name": "fgsm", "budgets": [0.5]}],
         "defenses": [{"name": "pca_detector"}]}


def test_clean_and_noise_floor_first_then_reference_budgets_then_defenses_then_the_rest():
    jobs = plan(parse_suite(SUITE))
    labels = [(j.seed, j.replicate, j.poisoning.budget if j.poisoning else None,
               j.defense.name if j.defense else None) for j in jobs]
    first_seed = [label for label in labels if label[0] == 0]
    assert labels[:len(first_seed)] == first_seed                    # seed 0 before seed 1
    assert first_seed[:2] == [(0, 0, None, None), (0, 1, None, None)]   # clean, then its retrain
    assert first_seed[2] == (0, 0, 0.03, None)                       # random at its default budget
    assert set(first_seed[3:5]) == {(0, 0, None, "pca_detector"), (0, 0, 0.03, "pca_detector")}
    assert {b for _, _, b, _ in first_seed[5:]} == {0.01, 0.05}      # the other budgets last


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_no_job_starts_after_the_deadline_and_running_ones_finish(monkeypatch):
    """Serial backend with a fake clock: the deadline passes while the second job runs; it
    finishes and is recorded, nothing after it starts."""
    import benchmark.schedule as scheduling
    jobs = [j for j in plan(parse_suite(SUITE)) if j.poisoning is None and j.defense is None]
    clock = Clock()
    ran = []

    def fake_run(job, timeout=None, prepared=None, plain=None):
        ran.append(job)
        clock.now += 10.0
        from benchmark.pipeline import JobResult
        return JobResult([])

    monkeypatch.setattr(scheduling, "run_limited", fake_run)
    monkeypatch.setattr(scheduling.time, "monotonic", clock)

    class Deferred:
        def __init__(self, fn, *args):
            self.fn, self.args = fn, args

    finished = []
    schedule(jobs, Deferred, lambda handles: [(handles[0], handles[0].fn(*handles[0].args))],
             lambda job, records: finished.append(job), deadline=15.0)
    assert ran == jobs[:2] and finished == jobs[:2] and len(jobs) > 2


def test_a_deadline_already_past_starts_nothing_and_resume_completes(tmp_path):
    import time
    jobs = plan(parse_suite({**SUITE, "seeds": 1, "attacks": [], "defenses": []}))
    (tmp_path / "cells").mkdir()   # what prepare_out makes
    assert execute(jobs, tmp_path, deadline=time.monotonic() - 1) == []
    assert len(execute(jobs, tmp_path)) == sum(len(j.cells()) for j in jobs)


def test_a_time_budget_run_reports_its_share_and_resume_finishes(tmp_path):
    """End to end: a budget the run cannot meet still writes results and a report over the cells
    it did (perhaps none), says how many, and --resume without a budget completes the grid."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({**SUITE, "seeds": 1, "defenses": []}))
    out = tmp_path / "out"
    first = run_cli("benchmark.run", "--suite", suite, "--out", out, "--workers", "1", "--quiet",
                    "--time-budget", "0.0001")
    assert first.returncode == 0, first.stderr
    assert "time budget of 0.0001 min spent" in first.stderr and "--resume" in first.stderr
    done = run_cli("benchmark.run", "--suite", suite, "--out", out, "--workers", "1", "--quiet", "--resume")
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["run"]["cells_done"] == document["run"]["cells_planned"] == len(document["records"])
    assert (out / "report.html").exists()


def test_a_defense_at_reference_faces_each_attack_at_its_reference_budget_only():
    suite = {**SUITE, "seeds": 1, "defenses": [{"name": "pca_detector", "at": "reference"}]}
    jobs = plan(parse_suite(suite))
    defended = {(j.poisoning.budget if j.poisoning else None) for j in jobs if j.defense is not None}
    undefended = {(j.poisoning.budget if j.poisoning else None) for j in jobs if j.defense is None}
    assert defended == {None, 0.03} and undefended == {None, 0.01, 0.03, 0.05}
    assert len(plan(parse_suite({**suite, "defenses": [{"name": "pca_detector"}]}))) == len(jobs) + 2


def test_work_starts_in_plan_order_tables_ranked_as_their_first_job(monkeypatch):
    """One worker, every task finishing at once: the clean cells and their retrains start before
    any poisoned table is made, and each table is made right before the first job that trains on
    it (a table ranks as its first job in the plan), so the run follows ``anytime_order``."""
    import benchmark.schedule as scheduling
    from benchmark.pipeline import JobResult
    jobs = plan(parse_suite(SUITE))
    started = []

    def fake_run(job, timeout=None, prepared=None, plain=None):
        started.append(("job", job))
        return JobResult([])

    def fake_prepare(job, poisoned=None):
        started.append(("table", job))
        return None

    monkeypatch.setattr(scheduling, "run_limited", fake_run)
    monkeypatch.setattr(scheduling, "prepare_shared", fake_prepare)

    class Deferred:
        def __init__(self, fn, *args):
            self.fn, self.args = fn, args

    schedule(jobs, Deferred, lambda handles: [(handles[0], handles[0].fn(*handles[0].args))],
             lambda job, records: None)
    order = [job for what, job in started if what == "job"]
    assert order == jobs                                   # every job, in plan order
    first_table = next(i for i, (what, _) in enumerate(started) if what == "table")
    assert all(job.poisoning is None for _, job in started[:first_table])
    assert started[first_table + 1][1].poisoning == started[first_table][1].poisoning   # made when needed
