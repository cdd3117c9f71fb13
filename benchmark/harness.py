"""The grid: plan jobs from a suite, run them on a process pool or Ray, write each cell as it ends.

Every finished cell is written atomically to ``OUT/cells/<cell>.json`` the moment its job
returns, so an interrupted run loses at most the jobs in flight; ``--resume`` skips the jobs
whose cells are all on disk (failed cells are run again). Jobs are self-contained and seeded,
so records do not depend on the backend, the worker count or the order of completion.

Only the main process writes under OUT: workers (pool processes or Ray tasks) return records and
never see the out directory, so two workers can never write the same file. A run holds an
exclusive ``flock`` on OUT while it works, so a second run on the same OUT is refused. A kill
can leave hidden ``.NAME.tmp`` files of unfinished atomic writes; they never match ``*.json``,
so they are ignored, and ``--resume`` deletes them.

``--cell-timeout`` is enforced inside whatever process runs the job (a pool worker, the main
process with one worker, or a Ray worker) by ``SIGALRM``: the job is interrupted between two
Python bytecodes, all of its cells are recorded as failed ("exceeded --cell-timeout"), and the
worker goes on with the next job. A job stuck inside one native call is stopped when it returns.
"""
from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import re
import shutil
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from benchmark.errors import BadInput
from benchmark.pipeline import Job, failed, run_job
from benchmark.records import RECORD_SCHEMA, write_json_atomic
from benchmark.spec import Suite

CELLS_DIR = "cells"
MIN_FREE_BYTES = 1 << 20   # refuse to start on a disk with less room than this


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
    files = [cell_filename(cid) for job in jobs for cid, _ in job.cells()]
    if len(set(files)) < len(files):  # one file per cell, written once: no two cells may share it
        twice = next(cid for job in jobs for cid, _ in job.cells() if files.count(cell_filename(cid)) > 1)
        raise BadInput(f"cell {twice} appears twice in suite {suite.name} (a model, attack budget or "
                       f"defense is listed twice): keep one of each")
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


class OutLock:
    """An exclusive ``flock`` on the out directory, held while a run writes there."""

    def __init__(self, out: Path):
        self.fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise BadInput(f"another run is writing to --out '{out}': wait for it to finish, "
                           f"or choose another --out directory") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def prepare_out(out: Path, resume: bool) -> OutLock:
    """Check the out directory before any work: writable, with free space, not in use by another
    run, and not silently overwritten. Returns the lock to release when the run ends."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out '{out}' is a file: pass a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        raise BadInput(f"--out '{out}' already holds results: pass --resume to continue that run, "
                       f"or choose a new --out directory")
    lock, created = None, not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = OutLock(out)
        (out / CELLS_DIR).mkdir(exist_ok=True)
        probe = out / ".write-probe.tmp"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
        stats = os.statvfs(out)
        free = stats.f_bavail * stats.f_frsize
        if free < MIN_FREE_BYTES:
            raise BadInput(f"--out '{out}' has only {free // 1024} KiB free: free some space or choose "
                           f"another --out directory")
    except (OSError, BadInput) as exc:
        if lock is not None:
            lock.release()
        if created:  # leave no trace of a run that never started
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, BadInput):
            raise
        raise BadInput(f"cannot write to --out '{out}' ({exc.strerror}): choose a writable directory "
                       f"with free space") from None
    if resume:  # leftovers of atomic writes cut short by a kill (this run holds the lock)
        for tmp in [*out.glob(".*.tmp"), *(out / CELLS_DIR).glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
    return lock


def _where(frame) -> str:
    """``file:line`` of the innermost frame in our own code (else the innermost one)."""
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    inner = frame
    while frame is not None and not frame.f_code.co_filename.startswith(ours):
        frame = frame.f_back
    frame = frame or inner
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame else "?"


class CellTimeout(BaseException):
    """Raised by SIGALRM inside a job that exceeds ``--cell-timeout``. Not an ``Exception``, so
    no ``except Exception`` on the way (ours or a library's) can swallow it."""


def run_limited(job: Job, timeout: float | None = None) -> list[dict]:
    """``run_job`` with a wall-clock limit; over it, every cell of the job is a failed record.
    Runs in the calling process's main thread (pool workers, Ray workers and the main process
    all run jobs there)."""
    if not timeout:
        return run_job(job)

    def on_alarm(signum, frame):
        raise CellTimeout(f"exceeded --cell-timeout of {timeout:g} s (stopped in {_where(frame)})")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return run_job(job)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CellTimeout as exc:
        exc = exc.with_traceback(None)  # the message says where the job was stopped
        return [failed(job, spec, exc) for _, spec in job.cells()]
    finally:
        signal.signal(signal.SIGALRM, previous)


def _init_worker():
    import warnings

    import torch
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Import what jobs use now, so that --cell-timeout never counts (or cuts) a worker's imports.
    import recbole.config  # noqa: F401
    import recbole.data  # noqa: F401
    import recbole.model.general_recommender  # noqa: F401

    import attacks  # noqa: F401
    import defenses  # noqa: F401
    from benchmark import evaluation, models, training  # noqa: F401


def execute(jobs: list[Job], out: Path, workers: int = 1, backend: str = "local",
            ray_address: str | None = None, on_done=None, cell_timeout: float | None = None) -> list[dict]:
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
        _run_ray(todo, workers, ray_address, finish, cell_timeout)
    elif workers <= 1:
        _init_worker()
        for job in todo:
            finish(run_limited(job, cell_timeout))
    else:
        _run_pool(todo, workers, finish, cell_timeout)
    return [done[cid] for job in jobs for cid, _ in job.cells() if cid in done]


def _run_pool(jobs, workers, finish, cell_timeout=None):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        pending = {pool.submit(run_limited, job, cell_timeout): job for job in jobs}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                pending.pop(future)
                finish(future.result())


def _run_ray(jobs, workers, address, finish, cell_timeout=None):
    """Jobs as Ray tasks. A local Ray started here keeps its session files in a fresh temp folder,
    deleted at shutdown; ``--cell-timeout`` works in Ray workers as in pool workers."""
    import tempfile

    import ray
    started_here, temp_dir = False, None
    if not ray.is_initialized():
        if not address:
            temp_dir = tempfile.mkdtemp(prefix="ray-")
        kwargs = dict(address=address) if address else dict(
            num_cpus=workers, include_dashboard=False, _temp_dir=temp_dir)
        ray.init(log_to_driver=False, logging_level="ERROR", **kwargs)
        started_here = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_job)
        pending = {remote.remote(job, cell_timeout): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                finish(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_job(job, cell_timeout=None):
    _init_worker()
    return run_limited(job, cell_timeout)
