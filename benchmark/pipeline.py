"""One job of the grid: poison -> clean -> train -> evaluate (-> evasion attacks on that model).

A job trains one model, so the cells that share a trained model are run together: the clean cell
of a (model, seed, defense) and every gradient-attack cell on it. Poisoning cells train their
own model. Each job returns one record per cell (see ``benchmark.records``).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from benchmark.data import Interactions, Split, load_dataset, split_dataset
from benchmark.spec import AttackSpec, DefenseSpec


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

    def cells(self) -> list:
        """(cell_id, attack spec or None) of every cell this job produces."""
        first = [(cell_id(self, self.poisoning), self.poisoning)]
        return first + [(cell_id(self, spec), spec) for spec in self.evasions]


def _params_suffix(params: dict) -> str:
    """Distinguishes variants of one attack or defense (e.g. two GAN temperatures) in cell ids."""
    return "[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]" if params else ""


def cell_id(job: Job, attack: AttackSpec | None) -> str:
    """``dataset/model/attack@budget[params]/defense[params]/seedN``; the last four parts never
    contain a slash (``split_cell_id``)."""
    defense = job.defense.name + _params_suffix(job.defense.params) if job.defense else "none"
    attack_label = attack.label + _params_suffix(attack.params) if attack else "clean"
    return f"{job.dataset}/{job.model}/{attack_label}/{defense}/seed{job.seed}"


def split_cell_id(cell: str) -> tuple[str, str, str, str]:
    """(dataset/model, attack label or 'clean', defense label or 'none', 'seedN')."""
    prefix, attack, defense, seed = cell.rsplit("/", 3)
    return prefix, attack, defense, seed


@lru_cache(maxsize=8)
def fixed_split(dataset: str, rating_threshold, seed: int) -> Split:
    """The split of a seed, made once per process and shared by every job of that seed."""
    return split_dataset(load_dataset(dataset, rating_threshold), seed)


@lru_cache(maxsize=8)
def seed_targets(dataset: str, rating_threshold, seed: int, policy: str, count: int) -> np.ndarray:
    from attacks.targets import choose_targets
    return choose_targets(fixed_split(dataset, rating_threshold, seed).train, policy, count, seed)


def _record(job: Job, attack: AttackSpec | None, attack_obj, status: str, **extra) -> dict:
    attack_field = None
    if attack is not None:
        described = attack_obj.describe() if attack_obj is not None else {"params": attack.params}
        attack_field = {"name": attack.name, "family": attack.family,
                        "params": described.get("params", {}),
                        "budget": extra.pop("budget", None) or {attack.budget_param: attack.budget}}
    defense_field = None
    if job.defense is not None:
        defense_field = {"name": job.defense.name, "kind": job.defense.kind, "params": job.defense.params}
    record = {"cell_id": cell_id(job, attack), "suite": job.suite, "dataset": job.dataset,
              "model": job.model, "attack": attack_field, "defense": defense_field,
              "seed": job.seed, "status": status, "error": extra.pop("error", None),
              "metrics": extra.pop("metrics", {}), "cost": extra.pop("cost", {})}
    record.update(extra)
    return record


def not_applicable(job: Job, attack: AttackSpec | None, reason: str) -> dict:
    return _record(job, attack, None, "not_applicable", error=reason)


def failed(job: Job, attack: AttackSpec | None, exc: BaseException) -> dict:
    message = f"{type(exc).__name__}: {exc}".strip()
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return _record(job, attack, None, "failed", error=message + where)


def run_job(job: Job, prepared: Prepared | None = None) -> list[dict]:
    """Run one job (on ``prepared``, its shared train table, if given) and return its records;
    failures become ``failed`` records, never raise."""
    try:
        return _run(job, prepared)
    except Exception as exc:  # a crashing cell must not take the suite down
        return [failed(job, spec, exc) for _, spec in job.cells()]


@dataclass
class Prepared:
    """The train table a job's model learns from (poisoned, then cleaned by a data defense), what
    making it cost, and what it adds to the records (budget, detection scores)."""
    train: Interactions
    cost: dict
    extra: dict


def inapplicable(job: Job) -> str | None:
    """Why the job's defense does not apply to its cells (they are ``not_applicable``), or None.
    Decided before any work: a model class of RecBole's traditional type has no embeddings."""
    if job.defense is None:
        return None
    from benchmark.models import model_class
    from recbole.utils import ModelType
    defense = job.defense.build()
    family = job.poisoning.family if job.poisoning is not None else "clean"
    if family not in defense.applies_to:
        return f"{defense.name} does not apply to {family} cells"
    if defense.kind == "trainer" and model_class(job.model).type == ModelType.TRADITIONAL:
        return f"{defense.name} needs embedding tables, {job.model} has none"
    return None


def _data_defense(job: Job) -> bool:
    return job.defense is not None and job.defense.kind in ("detector", "preprocessor")


def prepare_key(job: Job) -> str | None:
    """What identifies the job's prepared train table, shared by every model and trainer defense:
    None when the job trains on the clean split or does not apply."""
    if (job.poisoning is None and not _data_defense(job)) or inapplicable(job):
        return None
    attack = job.poisoning.label + _params_suffix(job.poisoning.params) if job.poisoning else "clean"
    defense = job.defense.name + _params_suffix(job.defense.params) if _data_defense(job) else "none"
    return (f"{job.dataset}/{job.rating_threshold}/seed{job.seed}/targets{dict(job.targets)}/"
            f"{attack}/{defense}")


def prepare(job: Job, poisoned: Prepared | None = None) -> Prepared:
    """Poison the seed's split (or take ``poisoned``, made by the same attack), then let the data
    defense clean it. Deterministic per seed, so sharing it across jobs changes no record."""
    split = fixed_split(job.dataset, job.rating_threshold, job.seed)
    train_split, cost, extra = split, {"attack_s": 0.0, "defense_s": 0.0, "injected_interactions": 0}, {}
    if poisoned is not None:
        train_split, cost, extra = split.with_train(poisoned.train), dict(poisoned.cost), dict(poisoned.extra)
    elif job.poisoning is not None:
        from attacks.base import AttackContext
        targets_cfg = dict(job.targets)
        targets = seed_targets(job.dataset, job.rating_threshold, job.seed, targets_cfg["policy"],
                               int(targets_cfg["count"]))
        attack_obj = job.poisoning.build()
        t = time.perf_counter()
        result = attack_obj.poison(AttackContext(split=split, targets=targets), seed=job.seed)
        cost["attack_s"] = time.perf_counter() - t
        cost["injected_interactions"] = result.injected_interactions
        extra["budget"] = {**result.budget}
        train_split = split.with_train(result.train)
    if _data_defense(job):
        defense = job.defense.build()
        t = time.perf_counter()
        cleaned = defense.clean(train_split, seed=job.seed)
        cost["defense_s"] = time.perf_counter() - t
        extra.update(_detection(cleaned, train_split, split.n_real_users, defense.kind))
        train_split = train_split.with_train(cleaned.train)
    return Prepared(train_split.train, cost, extra)


def _run(job: Job, prepared: Prepared | None = None) -> list[dict]:
    from benchmark.evaluation import Evaluator, Scorer
    from benchmark.models import build_model, has_embeddings
    from benchmark.training import LeanTrainer, TrainSettings

    torch.set_num_threads(1)
    reason = inapplicable(job)
    if reason is not None:
        return [not_applicable(job, spec, reason) for _, spec in job.cells()]
    split = fixed_split(job.dataset, job.rating_threshold, job.seed)
    targets_cfg = dict(job.targets)
    targets = seed_targets(job.dataset, job.rating_threshold, job.seed, targets_cfg["policy"],
                           int(targets_cfg["count"]))
    defense = job.defense.build() if job.defense else None
    if prepared is None:
        prepared = prepare(job)
    cost, extra = dict(prepared.cost), {k: (dict(v) if isinstance(v, dict) else v)
                                        for k, v in prepared.extra.items()}
    attack_obj = job.poisoning.build() if job.poisoning is not None else None
    train_split = split.with_train(prepared.train)

    built = build_model(job.model, train_split, dict(job.model_params), seed=job.seed)
    if defense is not None and defense.kind == "trainer" and not has_embeddings(built.model):
        return [not_applicable(job, spec, f"{defense.name} needs embedding tables, "
                               f"{job.model} has none") for _, spec in job.cells()]
    scorer = Scorer(built, split.train.n_items)
    train = train_split.train
    validation = Evaluator(scorer, train, split.valid, split.n_real_users)
    testing = Evaluator(scorer, train, split.test, split.n_real_users, also_mask=split.valid,
                        targets=targets)

    def validate(model):
        return validation()["ndcg@10"]

    settings = TrainSettings.from_config(built.config, **dict(job.training))
    trainer = LeanTrainer(built, built.ids.users(train.users), built.ids.items(train.items), settings,
                          job.seed, validate=validate,
                          defense=defense if defense is not None and defense.kind == "trainer" else None)
    fit = trainer.fit()
    cost["train_s"] = fit.seconds
    cost["epochs"] = fit.epochs_run
    cost["best_epoch"] = fit.best_epoch

    def test_metrics():
        t0 = time.perf_counter()
        metrics = testing()
        return metrics, time.perf_counter() - t0

    metrics, eval_s = test_metrics()
    history = {k: v for k, v in fit.history.items() if v} or None
    records = [_record(job, job.poisoning, attack_obj, "ok", metrics=metrics,
                       cost={**cost, "eval_s": eval_s}, history=history, **extra)]
    for spec in job.evasions:
        if defense is not None and spec.family not in defense.applies_to:
            records.append(not_applicable(job, spec, f"{defense.name} does not apply to {spec.family} cells"))
        else:
            records.append(_evasion(job, spec, built, trainer, test_metrics, cost))
    return records


def _evasion(job, spec, built, trainer, test_metrics, base_cost) -> dict:
    from benchmark.models import has_embeddings
    if not has_embeddings(built.model):
        return not_applicable(job, spec, f"{job.model} has no embedding tables to perturb")
    try:
        attack = spec.build()

        def batches():
            trainer.generator.manual_seed(job.seed + 7919)
            return trainer.batches()

        t = time.perf_counter()
        with attack.perturbed(built.model, batches):
            attack_s = time.perf_counter() - t
            metrics, eval_s = test_metrics()
        cost = {**base_cost, "attack_s": attack_s, "eval_s": eval_s, "injected_interactions": 0}
        return _record(job, spec, attack, "ok", metrics=metrics, cost=cost)
    except Exception as exc:
        return failed(job, spec, exc)


def _detection(cleaned, poisoned_split: Split, n_real_users: int, kind: str) -> dict:
    """Precision, recall, F1 of flagged users against the known fake ones; FPR on real users."""
    flagged = np.unique(np.asarray(cleaned.flagged_users, dtype=np.int64))
    n_users = poisoned_split.train.n_users
    fake = np.arange(n_real_users, n_users)
    tp = int(np.isin(flagged, fake).sum())
    fp = int(len(flagged) - tp)
    precision = tp / len(flagged) if len(flagged) else 0.0
    recall = tp / len(fake) if len(fake) else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if len(fake) and precision + recall > 0 else 0.0
    detection = {"flagged": float(len(flagged)), "true_positives": float(tp), "false_positives": float(fp),
                 "fpr": fp / n_real_users, "precision": precision, "f1": f1}
    if len(fake):
        detection["recall"] = recall
    else:
        detection.pop("f1")
    return {"detection": detection, **({"defense_info": cleaned.info} if cleaned.info else {})}
