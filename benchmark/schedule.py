"""Shared work done once, for any backend: the order in which tasks are submitted and what each
hands to the next (train tables, plain models)."""
from __future__ import annotations

from dataclasses import replace

from benchmark.core.kinds import DATA_KINDS
from benchmark.limits import run_limited
from benchmark.pipeline import (
    Job,
    PlainModel,
    Prepared,
    fixed_split,
    needs_plain,
    plain_key,
    prepare,
    prepare_key,
    train_plain,
)


def prepare_shared(job: Job, poisoned: Prepared | None = None) -> Prepared | None:
    """A task that makes one shared train table; None if that fails (each job that needed it then
    makes its own, and records the failure in its cells)."""
    try:
        return prepare(job, poisoned)
    except Exception:
        return None


def schedule(jobs: list[Job], submit, wait_any, finish, cell_timeout: float | None = None,
             on_poisoned=None) -> None:
    """Run jobs, doing shared work once. Each distinct poisoned train table (attack, budget,
    seed) is made by one task, then cleaned once per data defense, and handed to every model and
    trainer defense that learns from it; a trainer defense that starts from the converged plain
    model waits for the undefended job of the same model, table and seed and takes its model
    (or, when that job's cells are already on disk, one task trains it). ``submit(fn, *args)``
    returns a handle and ``wait_any(handles)`` the finished ones with their results, so the
    pool, Ray and the serial loop share this logic. Records do not depend on who made the table
    or the plain model (both are deterministic per seed). Work is keyed by content: when a data
    defense leaves its table unchanged (a detector that flags nobody), its jobs take the weights
    of the undefended model of that table instead of training again. ``on_poisoned(job, prepared)`` sees
    each poisoned table once, in this process, as soon as it is made (``--export-poisoned``)."""
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

    made_by: dict[str, Job] = {}                  # prepare key -> the job its task runs
    digests: dict[str, str] = {}                  # prepare key -> content digest of its table

    def source_digest(key: str, job: Job) -> str:
        """The digest of the table a data defense cleaned: the poisoned one, or the clean split."""
        source = poison_of.get(key)
        if source is not None and source != key:
            return digests.get(source, "")
        return fixed_split(job.dataset, job.rating_threshold, job.seed).train.digest()

    def start_unchanged(job, prepared):
        """A job whose cleaned table equals the table its undefended twin trains on."""
        key = plain_key(job)
        if key in plains:
            pending[submit(run_limited, job, cell_timeout, prepared, plains[key])] = ("job", job)
        elif key in planned_plain:
            held.setdefault(key, []).append((job, prepared))
        else:
            start_job(job, prepared)

    def start_prepare(key, job, poisoned=None):
        made_by[key] = job
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
                finish(what, result.records)
                if what.defense is None:
                    release(plain_key(what), result.plain)
            elif kind == "plain":
                release(what, result)
            else:
                maker = made_by[what]
                if on_poisoned and result is not None and maker.poisoning and maker.defense is None:
                    on_poisoned(maker, result)
                if result is not None:
                    digests[what] = result.train.digest()
                unchanged = (result is not None and maker.defense is not None and maker.defense.kind in DATA_KINDS
                             and digests[what] == source_digest(what, maker))
                for job in by_key.get(what, []):
                    (start_unchanged if unchanged else start_job)(job, result)
                for key in cleaned_after.get(what, []):
                    start_prepare(key, by_key[key][0], result)
