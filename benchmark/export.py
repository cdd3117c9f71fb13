"""Poisoned train tables as RecBole atomic files (``python -m benchmark.run ... --export-poisoned DIR``).

Each poisoned table a run makes (one per attack variant and seed) is written, in the main
process, as soon as it is made, to ``DIR/<attack variant>/seed<k>/``:

- ``poisoned.train.inter``, ``poisoned.valid.inter``, ``poisoned.test.inter``: RecBole
  benchmark files (load them with ``benchmark_filename: [train, valid, test]``): the poisoned
  train table and the seed's untouched valid and test parts, users and items by the dataset's
  own tokens, fake users as ``fake-1``, ``fake-2``, ...; ``user_id:token item_id:token
  rating:float``;
- ``attack.json``: the attack (name, family, parameters, budget spent, threat model), the seed,
  the dataset and rating threshold, the target items (token and title) and the fake users'
  tokens.

So a user can train any other pipeline on exactly what was attacked. ``read_export`` reads a
folder back into this project's ids.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.cells import Job, attack_variant, safe_name
from benchmark.core.atomic import write_json_atomic, write_text_atomic
from benchmark.core.data import Interactions, Split
from benchmark.pipeline import Prepared
from benchmark.shared import job_split, seed_targets

PARTS = ("train", "valid", "test")
FAKE_PREFIX = "fake-"


def export_folder(root: Path, job: Job) -> Path:
    return Path(root) / safe_name(attack_variant(job.poisoning)) / f"seed{job.seed}"


def _tokens(split: Split, n_users: int) -> np.ndarray:
    real = split.dataset.user_tokens.astype(object)
    return np.concatenate([real, [f"{FAKE_PREFIX}{k}" for k in range(1, n_users - len(real) + 1)]])


def _inter_text(table: Interactions, user_tokens, item_tokens) -> str:
    frame = pd.DataFrame({"user_id:token": user_tokens[table.users], "item_id:token": item_tokens[table.items],
                          "rating:float": table.ratings.astype(float)})
    return frame.to_csv(sep="\t", index=False)


def export_poisoned(root: Path, job: Job, prepared: Prepared) -> Path:
    """Write one poisoned table (and the seed's valid and test) with its ``attack.json``."""
    split = job_split(job)
    folder = export_folder(root, job)
    folder.mkdir(parents=True, exist_ok=True)
    users, items = _tokens(split, prepared.train.n_users), split.dataset.item_tokens.astype(object)
    for part, table in zip(PARTS, (prepared.train, split.valid, split.test)):
        write_text_atomic(folder / f"poisoned.{part}.inter", _inter_text(table, users, items))
    chosen = dict(job.targets)
    targets = seed_targets(job.dataset, job.rating_threshold, job.seed, chosen["policy"], int(chosen["count"]))
    titles = split.dataset.item_titles
    write_json_atomic(folder / "attack.json", {
        "attack": {"name": job.poisoning.name, "family": str(job.poisoning.family),
                   "params": {**job.poisoning.params, job.poisoning.budget_param: job.poisoning.budget},
                   **job.poisoning.threat_model},
        "budget": prepared.extra.get("budget", {}), "injected_interactions": prepared.cost.get("injected_interactions"),
        "seed": job.seed, "dataset": job.dataset, "rating_threshold": job.rating_threshold,
        "targets": [{"token": str(items[t]), "title": titles[t] if titles else ""} for t in targets],
        "fake_users": users[split.n_real_users:].tolist(),
    })
    return folder


def read_export(folder: Path, split: Split) -> Interactions:
    """The poisoned train table of an export folder, in this project's ids for ``split`` (its
    seed's split): real users and items by their tokens, fake users after the real ones."""
    frame = pd.read_csv(Path(folder) / "poisoned.train.inter", sep="\t", dtype={"user_id:token": str,
                                                                               "item_id:token": str})
    user_index = {t: i for i, t in enumerate(split.dataset.user_tokens.astype(str))}
    fake = frame["user_id:token"].str.startswith(FAKE_PREFIX)
    users = np.where(fake, split.n_real_users - 1 + frame["user_id:token"].str[len(FAKE_PREFIX):]
                     .where(fake, "0").astype(int), frame["user_id:token"].map(user_index).fillna(-1)).astype(np.int64)
    item_index = {t: i for i, t in enumerate(split.dataset.item_tokens.astype(str))}
    items = frame["item_id:token"].map(item_index).to_numpy(dtype=np.int64)
    n_users = int(max(users.max() + 1, split.n_real_users))
    return Interactions.build(users, items, frame["rating:float"].to_numpy(np.float32), n_users,
                              split.train.n_items)


def exporter(root: Path):
    """``on_poisoned`` for ``benchmark.schedule.schedule``: exports every table it is shown."""
    return lambda job, prepared: export_poisoned(root, job, prepared)
