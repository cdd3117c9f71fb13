"""Shared work done once, for any backend: the order in which tasks are submitted and what each
hands to the next (train tables, plain models).

Each distinct poisoned train table (attack, budget, seed) is made by one task, then cleaned once
per data defense, and handed to every model and trainer defense that learns from it; a trainer
defense that starts from the converged plain model waits for the undefended job of the same
model, table and seed and takes its model (or, when that job's cells are already on disk, one
task trains it). Work is keyed by content: when a data defense leaves its table unchanged (a
detector that flags nobody), its jobs take the weights of the undefended model of that table
instead of training again. Records do not depend on who made a table or a plain model (both are
deterministic per seed).
"""
from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import replace

from benchmark.cells import Job
from benchmark.limits import run_limited
from benchmark.pipeline import PlainModel, Prepared, prepare, train_plain
from benchmark.shared import (
    cleans_data,
    job_split,
    needs_plain,
    plain_key,
    prepare_key,
)


def prepare_shared(job: Job, poisoned: Prepared | None = None) -> Prepared | None:
    """A task that makes one shared train table; None if that fails (each job that needed it then
    makes its own, and records the failure in its cells)."""
    try:
        return prepare(job, poisoned)
    except Exception:
        return None


class Scheduler:
    """The shared work of one run and its states.

    Tables: a key of ``tables_for`` is *planned*; it is *being made* while in ``making`` (by the
    job in ``maker``), *made* once its digest is in ``digests``. A data defense's table waits in
    ``cleaned_after`` for the poisoned table it cleans. Plain models: a plain key in
    ``planned_plain`` will be made by an undefended job of this run; it is *available* once in
    ``plains``; jobs that start from it are *held* in ``held`` until then. A task is *ready* in
    ``ready`` until a worker is free, and ready tasks start in plan order (a table ranks as the
    first job that trains on it, so an anytime plan is not held up by tables its first cells do
    not need): at most ``capacity`` tasks are submitted at once, so a submitted task is a
    started one, the plan's order is the order of work, and once
    ``deadline`` (a ``clock()`` time) has passed no task starts: they stay ready, and
    ``--resume`` runs them. ``pending`` maps every submitted task to what it does ("prepare",
    "plain" or "job").
    """

    def __init__(self, jobs: list[Job], submit, cell_timeout: float | None = None, capacity: int = 1,
                 deadline: float | None = None, clock=None):
        self.submit, self.cell_timeout = submit, cell_timeout
        self.capacity, self.deadline, self.clock = max(1, capacity), deadline, clock or time.monotonic
        self.ready: list[tuple] = []                     # heap of (rank, n, fn, args, what, subject) not yet submitted
        self.rank = {id(job): i for i, job in enumerate(jobs)}   # plan order
        self.table_rank: dict[str, int] = {}             # prepare key -> rank of its first job (or cleaner's)
        self.jobs_of: dict[str, list[Job]] = {}          # prepare key -> the jobs that train on it
        for job in jobs:
            key = prepare_key(job)
            if key is not None:
                self.jobs_of.setdefault(key, []).append(job)
                self.table_rank.setdefault(key, self.rank[id(job)])
        self.poison_of = {key: prepare_key(replace(group[0], defense=None)) if group[0].poisoning else None
                          for key, group in self.jobs_of.items()}
        self.cleaned_after: dict[str, list[str]] = {}    # poison key -> data-defense keys made from it
        for key, poison in self.poison_of.items():
            if poison is not None and poison != key:
                self.cleaned_after.setdefault(poison, []).append(key)
                self.table_rank[poison] = min(self.table_rank.get(poison, len(jobs)), self.table_rank[key])
        self.planned_plain = {plain_key(job) for job in jobs if job.defense is None}
        self.plains: dict[str, PlainModel | None] = {}
        self.held: dict[str, list] = {}                  # plain key -> [(job, prepared)] waiting
        self.maker: dict[str, Job] = {}                  # prepare key -> the job its task runs
        self.digests: dict[str, str] = {}                # prepare key -> digest of its made table
        self.pending: dict = {}                          # task handle -> (what, key or job)
        self.jobs = jobs
        self._count = itertools.count()                  # ties in rank keep the order of queueing

    def start(self) -> None:
        """Submit every table that needs no other, and every job that needs no table."""
        for poison in sorted({p for p in self.poison_of.values() if p is not None}):
            group = [poison, *self.cleaned_after.get(poison, [])]
            representative = next(j for k in group for j in self.jobs_of.get(k, []))
            self._make_table(poison, replace(representative, defense=None))
        for key, poison in self.poison_of.items():
            if poison is None:                          # a data defense on the clean split
                self._make_table(key, self.jobs_of[key][0])
        for job in self.jobs:
            if prepare_key(job) is None:
                self._start_job(job)

    def finished(self, handle, result, finish, on_poisoned=None) -> None:
        """Hand a finished task's result on: records to ``finish``, tables and models to the
        tasks that wait for them."""
        what, subject = self.pending.pop(handle)
        if what == "job":
            finish(subject, result.records)
            if subject.defense is None:
                self._release(plain_key(subject), result.plain)
        elif what == "plain":
            self._release(subject, result)
        else:
            self._table_made(subject, result, on_poisoned)

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def pump(self) -> None:
        """Submit ready tasks, in order, while a worker is free and there is time."""
        while self.ready and len(self.pending) < self.capacity and not self.out_of_time:
            *_, fn, args, what, subject = heapq.heappop(self.ready)
            self.pending[self.submit(fn, *args)] = (what, subject)

    def _queue(self, rank: int, fn, args: tuple, what: str, subject) -> None:
        heapq.heappush(self.ready, (rank, next(self._count), fn, args, what, subject))

    def _run(self, job: Job, prepared=None, plain=None) -> None:
        self._queue(self.rank[id(job)], run_limited, (job, self.cell_timeout, prepared, plain), "job", job)

    def _make_table(self, key: str, job: Job, poisoned: Prepared | None = None) -> None:
        self.maker[key] = job
        self._queue(self.table_rank[key], prepare_shared, (job, poisoned), "prepare", key)

    def _source_digest(self, key: str, job: Job) -> str:
        """The digest of the table a data defense cleaned: the poisoned one, or the clean split."""
        source = self.poison_of.get(key)
        if source is not None and source != key:
            return self.digests.get(source, "")
        return job_split(job).train.digest()

    def _table_made(self, key: str, prepared: Prepared | None, on_poisoned) -> None:
        maker = self.maker[key]
        if on_poisoned and prepared is not None and maker.poisoning and maker.defense is None:
            on_poisoned(maker, prepared)
        if prepared is not None:
            self.digests[key] = prepared.train.digest()
        unchanged = (prepared is not None and cleans_data(maker)
                     and self.digests[key] == self._source_digest(key, maker))
        for job in self.jobs_of.get(key, []):
            (self._start_unchanged if unchanged else self._start_job)(job, prepared)
        for cleaned in self.cleaned_after.get(key, []):
            self._make_table(cleaned, self.jobs_of[cleaned][0], prepared)

    def _start_unchanged(self, job: Job, prepared) -> None:
        """A job whose cleaned table equals the table its undefended twin trains on."""
        key = plain_key(job)
        if key in self.plains:
            self._run(job, prepared, self.plains[key])
        elif key in self.planned_plain:
            self.held.setdefault(key, []).append((job, prepared))
        else:
            self._start_job(job, prepared)

    def _start_job(self, job: Job, prepared=None) -> None:
        if not needs_plain(job):
            self._run(job, prepared)
            return
        key = plain_key(job)
        if key in self.plains:
            self._run(job, prepared, self.plains[key])
            return
        if key not in self.planned_plain and key not in self.held:   # its undefended job is not in this run
            self._queue(self.rank[id(job)], train_plain, (job, prepared), "plain", key)
        self.held.setdefault(key, []).append((job, prepared))

    def _release(self, key: str, plain: PlainModel | None) -> None:
        self.plains[key] = plain
        for job, prepared in self.held.pop(key, []):
            self._run(job, prepared, plain)


def schedule(jobs: list[Job], submit, wait_any, finish, cell_timeout: float | None = None,
             on_poisoned=None, capacity: int = 1, deadline: float | None = None) -> None:
    """Run jobs, doing shared work once (``Scheduler``), starting none after ``deadline``
    (``time.monotonic()``). ``submit(fn, *args)`` returns a handle and
    ``wait_any(handles)`` the finished ones with their results, so the pool, Ray and the serial
    loop share this logic; ``capacity`` is how many run at once. ``on_poisoned(job, prepared)``
    sees each poisoned table once, in this process, as soon as it is made (``--export-poisoned``)."""
    scheduler = Scheduler(jobs, submit, cell_timeout, capacity, deadline)
    scheduler.start()
    scheduler.pump()
    while scheduler.pending:
        for handle, result in wait_any(list(scheduler.pending)):
            scheduler.finished(handle, result, finish, on_poisoned)
        scheduler.pump()
