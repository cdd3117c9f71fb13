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
The shared tasks that make a poisoned or cleaned train table for several jobs (``schedule``) run
without that limit; the jobs that use the table are limited as usual.
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
from dataclasses import replace
from pathlib import Path

from benchmark.errors import BadInput
from benchmark.kinds import Family
from benchmark.pipeline import (Job, JobResult, PlainModel, Prepared, all_failed, needs_plain, plain_key,
                                prepare, prepare_key, run_job, train_plain)
from benchmark.records import RECORD_SCHEMA, write_json_atomic
from benchmark.spec import Suite

CELLS_DIR = "cells"
SETTINGS_FILE = "settings.json"
MIN_FREE_BYTES = 1 << 20   # refuse to start on a disk with less room than this


def plan(suite: Suite) -> list[Job]:
    """One job per (seed, model, defense, poisoning cell); evasion cells ride on the clean job.
    A defense with ``against`` is planned only against those families (no cells elsewhere)."""
    evasions = tuple(a for a in suite.attacks if a.family == Family.GRADIENT)
    poisonings = [a for a in suite.attacks if a.family != Family.GRADIENT]
    common = dict(suite=suite.name, dataset=suite.dataset, rating_threshold=suite.rating_threshold,
                  training=tuple(sorted(suite.training.items())),
                  targets=tuple(sorted(suite.targets.items())))
    jobs = []
    for seed in range(suite.seeds):
        for model in suite.models:
            params = tuple(sorted((suite.model_params.get(model) or {}).items()))
            for defense in [None, *suite.defenses]:
                base = dict(common, model=model, seed=seed, defense=defense, model_params=params)
                covered = (lambda a: True) if defense is None else (lambda a: defense.covers(a.family))
                if defense is None or defense.covers("clean"):
                    jobs.append(Job(poisoning=None, evasions=tuple(filter(covered, evasions)), **base))
                jobs.extend(Job(poisoning=attack, **base) for attack in poisonings if covered(attack))
    files = [cell_filename(cid) for job in jobs for cid, *_ in job.cells()]
    if len(set(files)) < len(files):  # one file per cell, written once: no two cells may share it
        twice = next(cid for job in jobs for cid, *_ in job.cells() if files.count(cell_filename(cid)) > 1)
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


def check_settings(out: Path, suite: Suite) -> None:
    """Refuse to mix cells made under different settings in one OUT (BadInput, nothing written).

    A cell id names the model, attack, defense and seed, not the data and training settings
    every cell depends on; they are kept in ``OUT/settings.json`` when a run starts (or when a
    run from before this file existed is resumed), and a ``--resume`` with other ones is refused
    instead of silently mixing two grids."""
    settings = json.loads(json.dumps({"dataset": suite.dataset, "rating_threshold": suite.rating_threshold,
                                      "training": suite.training, "model_params": suite.model_params,
                                      "targets": suite.targets}))
    path = out / SETTINGS_FILE
    if not path.exists():
        write_json_atomic(path, settings)
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict):
        raise BadInput(f"cannot read the settings in {path}: --resume needs the settings of the run "
                       f"it continues; choose a new --out")
    changed = [key for key in settings if earlier.get(key) != settings[key]]
    if changed:
        key = changed[0]
        raise BadInput(f"--out '{out}' was run with other settings ({key}: {_brief(earlier.get(key))} "
                       f"there, {_brief(settings[key])} now): --resume continues a run with its own "
                       f"settings; use them again or choose a new --out")


def _brief(value, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


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


def run_limited(job: Job, timeout: float | None = None, prepared: Prepared | None = None,
                plain: PlainModel | None = None) -> JobResult:
    """``run_job`` with a wall-clock limit; over it, every cell of the job is a failed record.
    Runs in the calling process's main thread (pool workers, Ray workers and the main process
    all run jobs there)."""
    if not timeout:
        return run_job(job, prepared, plain)

    def on_alarm(signum, frame):
        raise CellTimeout(f"exceeded --cell-timeout of {timeout:g} s (stopped in {_where(frame)})")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return run_job(job, prepared, plain)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CellTimeout as exc:
        exc = exc.with_traceback(None)  # the message says where the job was stopped
        return JobResult(all_failed(job, exc))
    finally:
        signal.signal(signal.SIGALRM, previous)


def prepare_shared(job: Job, poisoned: Prepared | None = None) -> Prepared | None:
    """A task that makes one shared train table; None if that fails (each job that needed it then
    makes its own, and records the failure in its cells)."""
    try:
        return prepare(job, poisoned)
    except Exception:
        return None


def schedule(jobs: list[Job], submit, wait_any, finish, cell_timeout: float | None = None) -> None:
    """Run jobs, doing shared work once. Each distinct poisoned train table (attack, budget,
    seed) is made by one task, then cleaned once per data defense, and handed to every model and
    trainer defense that learns from it; a trainer defense that starts from the converged plain
    model waits for the undefended job of the same model, table and seed and takes its model
    (or, when that job's cells are already on disk, one task trains it). ``submit(fn, *args)``
    returns a handle and ``wait_any(handles)`` the finished ones with their results, so the
    pool, Ray and the serial loop share this logic. Records do not depend on who made the table
    or the plain model (both are deterministic per seed)."""
    by_key: dict[str, list[Job]] = {}
    for job in jobs:
        key = prepare_key(job)
        if key is not None:
            by_key.setdefault(key, []).append(job)
    poison_of = {key: prepare_key(replace(group[0], defense=None)) if group[0].poisoning else None
                 for key, group in by_key.items()}
    cleaned_after: dict[str, list[str]] = {}      # poison key -> data-defense keys made from it
    for key, poison in poison_of.items():
        if poison is not None and poison != key:
            cleaned_after.setdefault(poison, []).append(key)
    planned_plain = {plain_key(job) for job in jobs if job.defense is None}
    plains: dict[str, PlainModel | None] = {}     # plain key -> the undefended model, once made
    held: dict[str, list] = {}                    # plain key -> (job, prepared) waiting for it
    pending: dict = {}

    def start_prepare(key, job, poisoned=None):
        pending[submit(prepare_shared, job, poisoned)] = ("prepare", key)

    def start_job(job, prepared=None):
        if not needs_plain(job):
            pending[submit(run_limited, job, cell_timeout, prepared)] = ("job", job)
            return
        key = plain_key(job)
        if key in plains:
            pending[submit(run_limited, job, cell_timeout, prepared, plains[key])] = ("job", job)
            return
        if key not in planned_plain and key not in held:   # its undefended job is not in this run
            pending[submit(train_plain, job, prepared)] = ("plain", key)
        held.setdefault(key, []).append((job, prepared))

    def release(key, plain):
        plains[key] = plain
        for job, prepared in held.pop(key, []):
            pending[submit(run_limited, job, cell_timeout, prepared, plain)] = ("job", job)

    for poison in sorted({p for p in poison_of.values() if p is not None}):
        representative = next(j for k in [poison, *cleaned_after.get(poison, [])] for j in by_key.get(k, []))
        start_prepare(poison, replace(representative, defense=None))
    for key, poison in poison_of.items():
        if poison is None:                          # a data defense on the clean split
            start_prepare(key, by_key[key][0])
    for job in jobs:
        if prepare_key(job) is None:
            start_job(job)
    while pending:
        for handle, result in wait_any(list(pending)):
            kind, what = pending.pop(handle)
            if kind == "job":
                finish(result.records)
                if what.defense is None:
                    release(plain_key(what), result.plain)
            elif kind == "plain":
                release(what, result)
            else:
                for job in by_key.get(what, []):
                    start_job(job, result)
                for key in cleaned_after.get(what, []):
                    start_prepare(key, by_key[key][0], result)


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
            if not all(cid in done and done[cid]["status"] != "failed" for cid, *_ in job.cells())]
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
        schedule(todo, _Deferred, _run_first, finish, cell_timeout)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            schedule(todo, pool.submit, _finished_futures, finish, cell_timeout)
    return [done[cid] for job in jobs for cid, *_ in job.cells() if cid in done]


class _Deferred:
    """A task of the serial backend, run in this process when it is waited for."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args


def _run_first(handles):
    """``wait_any`` of the serial backend: run the oldest task (tasks run in submission order)."""
    return [(handles[0], handles[0].fn(*handles[0].args))]


def _finished_futures(handles):
    finished, _ = wait(handles, return_when=FIRST_COMPLETED)
    return [(future, future.result()) for future in finished]


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
        remote = ray.remote(num_cpus=1)(_ray_call)

        def wait_any(refs):
            ready, _ = ray.wait(refs, num_returns=1)
            return [(ref, ray.get(ref)) for ref in ready]

        schedule(jobs, lambda fn, *args: remote.remote(fn, *args), wait_any, finish, cell_timeout)
    finally:
        if started_here:
            ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_call(fn, *args):
    _init_worker()
    return fn(*args)
