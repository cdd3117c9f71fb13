"""The grid: plan jobs from a suite, run them on a process pool or Ray, write each cell as it ends.

Every finished cell is written atomically to ``OUT/cells/<cell>.json`` the moment its job
returns, so an interrupted run loses at most the jobs in flight; ``--resume`` skips the jobs
whose cells are all on disk (failed cells are run again). Jobs are self-contained and seeded,
so records do not depend on the backend, the worker count or the order of completion.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from benchmark.errors import BadInput
from benchmark.pipeline import Job, run_job
from benchmark.records import RECORD_SCHEMA, write_json_atomic
from benchmark.spec import Suite

CELLS_DIR = "cells"


def plan(suite: Suite) -> list[Job]:
    """One job per (seed, model, defense, poisoning cell); evasion cells ride on the clean job."""
    evasions = tuple(a for a in suite.attacks if a.family == "gradient")
    poisonings = [a for a in suite.attacks if a.family != "gradient"]
    common = dict(suite=suite.name, dataset=suite.dataset, rating_threshold=suite.rating_threshold,
                  training=tuple(sorted(suite.training.items())),
                  targets=tuple(sorted(suite.targets.items())))
    jobs = []
    for seed in range(suite.seeds):
        for model in suite.models:
            params = tuple(sorted((suite.model_params.get(model) or {}).items()))
            for defense in [None, *suite.defenses]:
                base = dict(common, model=model, seed=seed, defense=defense, model_params=params)
                jobs.append(Job(poisoning=None, evasions=evasions, **base))
                jobs.extend(Job(poisoning=attack, **base) for attack in poisonings)
    return jobs


def cell_filename(cell_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]+", "__", cell_id) + ".json"


def load_cells(out: Path) -> dict[str, dict]:
    """Finished cell records on disk, by cell id; unreadable or invalid files are ignored."""
    import jsonschema
    records = {}
    folder = out / CELLS_DIR
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            jsonschema.validate(record, RECORD_SCHEMA)
        except (OSError, ValueError, jsonschema.ValidationError):
            continue
        if cell_filename(record["cell_id"]) == path.name:
            records[record["cell_id"]] = record
    return records


def prepare_out(out: Path, resume: bool) -> None:
    """Check the out directory before any work: writable, and not silently overwritten."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out '{out}' is a file: pass a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        raise BadInput(f"--out '{out}' already holds results: pass --resume to continue that run, "
                       f"or choose a new --out directory")
    try:
        (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write to --out '{out}' ({exc.strerror}): choose a writable directory "
                       f"with free space") from None


def _init_worker():
    import warnings

    import torch
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def execute(jobs: list[Job], out: Path, workers: int = 1, backend: str = "local",
            ray_address: str | None = None, on_done=None) -> list[dict]:
    """Run jobs (skipping those whose cells are on disk); return every record of the plan."""
    done = load_cells(out)
    todo = [job for job in jobs
            if not all(cid in done and done[cid]["status"] != "failed" for cid, _ in job.cells())]
    skipped = sum(len(job.cells()) for job in jobs) - sum(len(job.cells()) for job in todo)

    def finish(records):
        for record in records:
            write_json_atomic(out / CELLS_DIR / cell_filename(record["cell_id"]), record)
            done[record["cell_id"]] = record
        if on_done:
            on_done(records)

    if on_done and skipped:
        on_done(None, skipped=skipped)
    if backend == "ray":
        _run_ray(todo, workers, ray_address, finish)
    elif workers <= 1:
        _init_worker()
        for job in todo:
            finish(run_job(job))
    else:
        _run_pool(todo, workers, finish)
    return [done[cid] for job in jobs for cid, _ in job.cells() if cid in done]


def _run_pool(jobs, workers, finish):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        pending = {pool.submit(run_job, job): job for job in jobs}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                pending.pop(future)
                finish(future.result())


def _run_ray(jobs, workers, address, finish):
    import tempfile

    import ray
    started_here = False
    if not ray.is_initialized():
        kwargs = dict(address=address) if address else dict(
            num_cpus=workers, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
        ray.init(log_to_driver=False, logging_level="ERROR", **kwargs)
        started_here = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_job)
        pending = {remote.remote(job): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                finish(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()


def _ray_job(job):
    _init_worker()
    return run_job(job)
