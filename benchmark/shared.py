"""What jobs share, by content: the seed's split and target items (made once per process), and
the keys under which the scheduler shares a prepared train table and an undefended model.
Everything shared is deterministic per seed, so sharing it changes no record."""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from benchmark.cells import Job, attack_variant, cell_id, defense_variant, inapplicable
from benchmark.core.data import Split, load_dataset, make_split
from benchmark.core.kinds import DATA_KINDS, Kind


@lru_cache(maxsize=8)
def fixed_split(dataset: str, rating_threshold, seed: int, split: str = "random") -> Split:
    """The split of a seed (``benchmark.core.data.SPLITS``), made once per process and shared by
    every job of that seed and kind of split."""
    return make_split(load_dataset(dataset, rating_threshold), seed, split)


def job_split(job: Job) -> Split:
    """The fixed split of the job's seed, of the job's kind (random, or leave-one-out by time)."""
    return fixed_split(job.dataset, job.rating_threshold, job.seed, job.split)


@lru_cache(maxsize=8)
def seed_targets(dataset: str, rating_threshold, seed: int, policy: str, count: int) -> np.ndarray:
    """The seed's target items, chosen on its random split's train (one set per seed, whatever
    split a job trains on: sequential cells promote the same items as the others)."""
    from benchmark.core.targets import choose_targets
    return choose_targets(fixed_split(dataset, rating_threshold, seed).train, policy, count, seed)


def job_targets(job: Job) -> np.ndarray:
    """The target items of the job's seed under its suite's target settings."""
    settings = dict(job.targets)
    return seed_targets(job.dataset, job.rating_threshold, job.seed, settings["policy"], int(settings["count"]))


def cleans_data(job: Job) -> bool:
    """Whether the job's defense acts on the train table (a detector or preprocessor)."""
    return job.defense is not None and job.defense.kind in DATA_KINDS


def prepare_key(job: Job) -> str | None:
    """What identifies the job's prepared train table, shared by every model and trainer defense:
    None when the job trains on the clean split or does not apply."""
    if (job.poisoning is None and not cleans_data(job)) or inapplicable(job):
        return None
    defense = defense_variant(job.defense) if cleans_data(job) else "none"
    return (f"{job.dataset}/{job.rating_threshold}/{job.split}/seed{job.seed}/targets{dict(job.targets)}/"
            f"{attack_variant(job.poisoning)}/{defense}")


def plain_key(job: Job) -> str:
    """What identifies the undefended model a trainer-defense job starts from: the undefended
    cell of the same model, train table and seed, under the same settings."""
    return (f"{cell_id(replace(job, defense=None), job.poisoning)}|{job.rating_threshold}|{job.split}|"
            f"{job.training}|{job.model_params}|{job.targets}")


def needs_plain(job: Job) -> bool:
    """Whether the job's trainer defense starts from the undefended model (and applies)."""
    if job.defense is None or job.defense.kind != Kind.TRAINER or inapplicable(job):
        return False
    return job.defense.starts_from_plain
