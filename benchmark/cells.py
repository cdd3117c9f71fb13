"""A cell's identity, in one place: the job that trains one model and the cells it produces, their
ids, variant labels and file names, and the record each cell becomes.

A cell is (dataset, model, attack+budget, defense, seed). A job trains one model, so the cells
that share a trained model are one job: the clean cell of a (model, seed, defense) and every
gradient-attack cell on it, and the cells of the defense's other players (IRGAN's generator).
Records carry their variants and the attack's budget (parameter and value) as fields, so nothing
downstream parses an id or a label (``benchmark.results.records`` has the schema).
"""
from __future__ import annotations

import math
import re
import traceback
from dataclasses import dataclass, field

import numpy as np

from benchmark.core.kinds import Family, Kind
from benchmark.spec import AttackSpec, DefenseSpec

TRAIN_SEED_STRIDE = 7919   # replicate k of split seed s trains with seed s + k * 7919


@dataclass(frozen=True)
class Job:
    suite: str
    dataset: str
    rating_threshold: float | None
    model: str
    seed: int
    defense: DefenseSpec | None
    poisoning: AttackSpec | None
    evasions: tuple = ()
    training: tuple = ()          # sorted (key, value) pairs of TrainSettings overrides
    model_params: tuple = ()      # sorted (key, value) pairs of RecBole config
    targets: tuple = (("count", 5), ("policy", "unpopular"))
    replicate: int = 0            # 0: the cell; k >= 1: the k-th clean retrain (the noise floor)
    split: str = "random"         # benchmark.core.data.SPLITS: leave_one_out for sequential models
    device: str = field(default="cpu", compare=False)   # where it trains (not part of its identity)

    @property
    def train_seed(self) -> int:
        """The seed of model initialisation and sampling; the split and the targets follow
        ``seed``. A retrain changes only this (``TRAIN_SEED_STRIDE``)."""
        return self.seed + TRAIN_SEED_STRIDE * self.replicate

    def cells(self) -> list:
        """(cell_id, attack spec or None, player or None) of every cell this job produces."""
        first = [(cell_id(self, self.poisoning), self.poisoning, None)]
        players = [(cell_id(self, self.poisoning, p), self.poisoning, p) for p in self.players()]
        return first + [(cell_id(self, spec), spec, None) for spec in self.evasions] + players

    def players(self) -> tuple:
        """Players of a trainer defense evaluated besides the recommender (IRGAN's generator)."""
        return self.defense.cls.players if self.defense is not None and self.defense.kind == Kind.TRAINER else ()


def inapplicable(job: Job) -> str | None:
    """Why the job's defense does not apply to its cells (they are ``not_applicable``), or None.
    Decided from the classes, before any work: a model class of RecBole's traditional type has
    no embeddings for a trainer defense."""
    if job.defense is None:
        return None
    from recbole.utils import ModelType

    from benchmark.core.models import model_class
    family = job.poisoning.family if job.poisoning is not None else Family.CLEAN
    if family not in job.defense.cls.applies_to:
        return f"{job.defense.name} does not apply to {family} cells"
    if job.defense.kind == Kind.TRAINER and model_class(job.model).type == ModelType.TRADITIONAL:
        return f"{job.defense.name} needs embedding tables, {job.model} has none"
    return None


def params_suffix(params: dict) -> str:
    """Distinguishes variants of one attack or defense (e.g. two GAN temperatures) in cell ids."""
    return "[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]" if params else ""


def attack_variant(attack: AttackSpec | None) -> str:
    """``name@budget[params]`` of an attack cell, ``clean`` otherwise."""
    return attack.label + params_suffix(attack.params) if attack else "clean"


def defense_variant(defense: DefenseSpec | None, player: str | None = None) -> str:
    """``name[-player][params]`` of a defense, ``none`` without one."""
    if defense is None:
        return "none"
    return defense.name + (f"-{player}" if player else "") + params_suffix(defense.params)


def cell_id(job: Job, attack: AttackSpec | None, player: str | None = None) -> str:
    """``dataset/model/attack@budget[params]/defense[-player][params]/seedN`` (``/repK`` added for
    the k-th clean retrain)."""
    return (f"{job.dataset}/{job.model}/{attack_variant(attack)}/{defense_variant(job.defense, player)}"
            f"/seed{job.seed}" + (f"/rep{job.replicate}" if job.replicate else ""))


def safe_name(text: str) -> str:
    """``text`` as a file name: runs of other characters than letters, digits and ``@._-``
    become ``__``."""
    return re.sub(r"[^A-Za-z0-9@._-]+", "__", text)


def cell_filename(cell_id: str) -> str:
    return safe_name(cell_id) + ".json"


def record(job: Job, attack: AttackSpec | None, status: str, player: str | None = None, *,
           params: dict | None = None, budget: dict | None = None, **extra) -> dict:
    """A cell's record (``benchmark.results.records.RECORD_SCHEMA``). ``params``: the attack's
    parameters as the built attack describes them (else the suite's); ``budget``: what it spent."""
    attack_field = None
    if attack is not None:
        attack_field = {"name": attack.name, "family": attack.family,
                        "params": params if params is not None else attack.params, **attack.threat_model,
                        "budget_param": attack.budget_param, "budget_value": attack.budget,
                        "budget": budget or {attack.budget_param: attack.budget}}
    defense_field = None
    if job.defense is not None:
        defense_field = {"name": job.defense.name, "kind": job.defense.kind, "params": job.defense.params,
                         "variant": defense_variant(job.defense), "label": job.defense.cls.label or job.defense.name}
        if job.players():
            defense_field["player"] = player or "recommender"
    out = {"cell_id": cell_id(job, attack, player), "suite": job.suite, "dataset": job.dataset,
           "model": job.model, "attack": attack_field, "defense": defense_field,
           "variant": {"attack": attack_variant(attack), "defense": defense_variant(job.defense, player)},
           "seed": job.seed, "train_seed": job.train_seed, "replicate": job.replicate, "split": job.split,
           "status": status, "error": extra.pop("error", None),
           # a metric undefined on this data (NaN: no user to average over) is absent
           "metrics": {k: v for k, v in extra.pop("metrics", {}).items() if math.isfinite(v)},
           "cost": extra.pop("cost", {})}
    out.update(extra)
    return out


def not_applicable(job: Job, attack: AttackSpec | None, reason: str, player: str | None = None) -> dict:
    return record(job, attack, "not_applicable", player, error=reason)


def failed(job: Job, attack: AttackSpec | None, exc: BaseException, player: str | None = None) -> dict:
    message = f"{type(exc).__name__}: {exc}".strip()
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return record(job, attack, "failed", player, error=message + where)


def all_failed(job: Job, exc: BaseException) -> list[dict]:
    return [failed(job, spec, exc, player) for _, spec, player in job.cells()]


def all_not_applicable(job: Job, reason: str) -> list[dict]:
    return [not_applicable(job, spec, reason, player) for _, spec, player in job.cells()]


def top10(evaluation) -> list | None:
    """Each real user's top-10 item ids (our item index; None: no test items), the lists that
    ``benchmark.results.aggregate.derive`` compares between cells (RBO, Jaccard)."""
    if evaluation.top is None:
        return None
    return [[int(i) for i in row if i >= 0] or None for row in evaluation.top.tolist()]


def per_user(evaluation) -> dict:
    """Per-user values, 5 significant digits (a record stays small), None where not evaluated."""
    return {m: [None if np.isnan(v) else float(f"{v:.5g}") for v in values.tolist()]
            for m, values in evaluation.per_user.items()}
