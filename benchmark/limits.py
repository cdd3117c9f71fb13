"""``--cell-timeout``: a wall-clock limit on one job, enforced inside whatever process runs it
(a pool worker, the main process with one worker, or a Ray worker) by ``SIGALRM``. The job is
interrupted between two Python bytecodes, all of its cells are recorded as failed ("exceeded
--cell-timeout"), and the worker goes on with the next job. A job stuck inside one native call
is stopped when it returns. The shared tasks that make a train table or a plain model for
several jobs (``benchmark.schedule``) run without that limit."""
from __future__ import annotations

import os
import signal

from benchmark.cells import Job, all_failed
from benchmark.pipeline import JobResult, PlainModel, Prepared, run_job


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

    import torch
    grad_enabled = torch.is_grad_enabled()   # a job stopped between two bytecodes may leave it half-set
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return run_job(job, prepared, plain)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CellTimeout as exc:
        exc = exc.with_traceback(None)  # the message says where the job was stopped
        torch.set_grad_enabled(grad_enabled)   # (inside torch.no_grad's __enter__, say): the next job trains
        return JobResult(all_failed(job, exc))
    finally:
        signal.signal(signal.SIGALRM, previous)
