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

from benchmark.data import Split, load_dataset, split_dataset
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


def run_job(job: Job) -> list[dict]:
    """Run one job and return its records; failures become ``failed`` records, never raise."""
    try:
        return _run(job)
    except Exception as exc:  # a crashing cell must not take the suite down
        return [failed(job, spec, exc) for _, spec in job.cells()]


def _run(job: Job) -> list[dict]:
    from benchmark.evaluation import Scorer, evaluate
    from benchmark.models import build_model, has_embeddings
    from benchmark.training import LeanTrainer, TrainSettings

    torch.set_num_threads(1)
    split = fixed_split(job.dataset, job.rating_threshold, job.seed)
    targets_cfg = dict(job.targets)
    targets = seed_targets(job.dataset, job.rating_threshold, job.seed, targets_cfg["policy"],
                           int(targets_cfg["count"]))
    defense = job.defense.build() if job.defense else None
    families = {"clean"} if job.poisoning is None else {job.poisoning.family}
    if defense is not None and not families & set(defense.applies_to):
        return [not_applicable(job, spec, f"{defense.name} does not apply to "
                               f"{(spec.family if spec else 'clean')} cells") for _, spec in job.cells()]

    cost: dict = {"attack_s": 0.0, "defense_s": 0.0, "injected_interactions": 0}
    extra: dict = {}
    attack_obj = None
    train_split = split
    if job.poisoning is not None:
        from attacks.base import AttackContext
        attack_obj = job.poisoning.build()
        t = time.perf_counter()
        poisoned = attack_obj.poison(AttackContext(split=split, targets=targets), seed=job.seed)
        cost["attack_s"] = time.perf_counter() - t
        cost["injected_interactions"] = poisoned.injected_interactions
        extra["budget"] = {**poisoned.budget}
        train_split = split.with_train(poisoned.train)
    if defense is not None and defense.kind in ("detector", "preprocessor"):
        t = time.perf_counter()
        cleaned = defense.clean(train_split, seed=job.seed)
        cost["defense_s"] = time.perf_counter() - t
        extra.update(_detection(cleaned, train_split, split.n_real_users, defense.kind))
        train_split = train_split.with_train(cleaned.train)

    built = build_model(job.model, train_split, dict(job.model_params), seed=job.seed)
    if defense is not None and defense.kind == "trainer" and not has_embeddings(built.model):
        return [not_applicable(job, spec, f"{defense.name} needs embedding tables, "
                               f"{job.model} has none") for _, spec in job.cells()]
    scorer = Scorer(built, split.train.n_items)
    train = train_split.train

    def validate(model):
        return evaluate(scorer, train, split.valid, split.n_real_users)["ndcg@10"]

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
        metrics = evaluate(scorer, train, split.test, split.n_real_users, also_mask=split.valid,
                           targets=targets)
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
