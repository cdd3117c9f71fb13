"""The grid's backends: run planned jobs serially, on a process pool or on Ray, and write each
cell as it ends.

Every finished cell is written atomically to ``OUT/cells/<cell>.json`` the moment its job
returns, so an interrupted run loses at most the jobs in flight; ``--resume`` skips the jobs
whose cells are all on disk (failed cells are run again). Jobs are self-contained and seeded,
so records do not depend on the backend, the worker count or the order of completion.

Only the main process writes under OUT: workers (pool processes or Ray tasks) return records and
never see the out directory, so two workers can never write the same file. The rest of the
grid lives in rooms of its own: ``benchmark.plan`` (jobs from a suite), ``benchmark.outdir``
(the out directory, its lock and settings), ``benchmark.limits`` (``--cell-timeout``) and
``benchmark.schedule`` (shared work done once).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from benchmark.cells import Job, cell_filename
from benchmark.core.atomic import write_json_atomic
from benchmark.core.errors import BackendLost
from benchmark.outdir import CELLS_DIR, load_cells
from benchmark.schedule import schedule


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
    from benchmark.core import evaluation, models, training  # noqa: F401


def execute(jobs: list[Job], out: Path, workers: int = 1, backend: str = "local",
            ray_address: str | None = None, on_done=None, cell_timeout: float | None = None,
            export_poisoned: Path | None = None, deadline: float | None = None) -> list[dict]:
    """Run jobs (skipping those whose cells are on disk); return the records of the plan's
    finished cells (every cell, unless ``deadline``, a ``time.monotonic()`` time after which no
    job starts, cut the run short). With ``export_poisoned``, every poisoned table made is also
    written there (``benchmark.export``)."""
    done = load_cells(out)
    todo = [job for job in jobs
            if not all(cid in done and done[cid]["status"] != "failed" for cid, *_ in job.cells())]
    pending = {id(job) for job in todo}
    skipped = [job for job in jobs if id(job) not in pending]

    def finish(job, records):
        for record in records:
            write_json_atomic(out / CELLS_DIR / cell_filename(record["cell_id"]), record)
            done[record["cell_id"]] = record
        if on_done:
            on_done(job, records)

    if on_done and skipped:
        on_done(None, None, skipped=skipped)
    on_poisoned = None
    if export_poisoned is not None:
        from benchmark.export import exporter
        on_poisoned = exporter(export_poisoned)
    if backend == "ray":
        _run_ray(todo, workers, ray_address, finish, cell_timeout, on_poisoned, deadline)
    elif workers <= 1:
        _init_worker()
        schedule(todo, _Deferred, _run_first, finish, cell_timeout, on_poisoned, 1, deadline)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            try:
                schedule(todo, pool.submit, _finished_futures, finish, cell_timeout, on_poisoned, workers, deadline)
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM) or failed: stop the workers now rather than wait
                # for their jobs (whose cells would be lost anyway). Python 3.14 has
                # terminate_workers(); before it, the pool's processes are only in _processes.
                for process in list((pool._processes or {}).values()):
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
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


def _run_ray(jobs, workers, address, finish, cell_timeout=None, on_poisoned=None, deadline=None):
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

        capacity = workers if not address else max(workers, int(ray.cluster_resources().get("CPU", workers)))
        schedule(jobs, lambda fn, *args: remote.remote(fn, *args), wait_any, finish, cell_timeout,
                 on_poisoned, capacity, deadline)
    except (ray.exceptions.LocalRayletDiedError, ray.exceptions.NodeDiedError,
            ray.exceptions.RaySystemError) as exc:
        raise BackendLost(f"the Ray node this driver was attached to died ({type(exc).__name__})") from None
    finally:
        if started_here:
            ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_call(fn, *args):
    _init_worker()
    return fn(*args)
