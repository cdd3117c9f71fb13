"""One job of the grid: poison -> clean -> train -> evaluate (-> evasion attacks on that model).

A job trains one model, so the cells that share a trained model are run together: the clean cell
of a (model, seed, defense) and every gradient-attack cell on it, and the cells of the defense's
other players (IRGAN's generator). Poisoning cells train their own model. Each job returns one
record per cell (see ``benchmark.results.records``) and, when it trained an undefended model, that
model's best state: trainer defenses start from it (``PlainModel``), as APR and IRGAN start
from the converged plain model. Every cell is scored on the seed's clean candidates
(``benchmark.core.evaluation``).
"""
from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from benchmark.core.data import Interactions, Split, load_dataset, split_dataset
from benchmark.core.kinds import DATA_KINDS, Family, Kind
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
        """(cell_id, attack spec or None, player or None) of every cell this job produces."""
        first = [(cell_id(self, self.poisoning), self.poisoning, None)]
        players = [(cell_id(self, self.poisoning, p), self.poisoning, p) for p in self.players()]
        return first + [(cell_id(self, spec), spec, None) for spec in self.evasions] + players

    def players(self) -> tuple:
        """Players of a trainer defense evaluated besides the recommender (IRGAN's generator)."""
        return self.defense.build().players if self.defense is not None and self.defense.kind == Kind.TRAINER else ()


@dataclass
class PlainModel:
    """An undefended model's best state and what training it cost: where trainer defenses start."""
    state: dict
    train_s: float
    best_epoch: int
    epochs: int


@dataclass
class JobResult:
    """A job's records, and its undefended model if it trained one (else None)."""
    records: list
    plain: PlainModel | None = None


def params_suffix(params: dict) -> str:
    """Distinguishes variants of one attack or defense (e.g. two GAN temperatures) in cell ids."""
    return "[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]" if params else ""


def attack_variant(attack: AttackSpec | None) -> str:
    """``name@budget[params]`` of an attack cell, ``clean`` otherwise."""
    return attack.label + params_suffix(attack.params) if attack else "clean"


def defense_variant(job: Job, player: str | None = None) -> str:
    """``name[-player][params]`` of the job's defense, ``none`` without one."""
    if job.defense is None:
        return "none"
    return job.defense.name + (f"-{player}" if player else "") + params_suffix(job.defense.params)


def cell_id(job: Job, attack: AttackSpec | None, player: str | None = None) -> str:
    """``dataset/model/attack@budget[params]/defense[-player][params]/seedN``; records also carry
    the two variants as fields (``variant``), so nothing ever parses a cell id."""
    return f"{job.dataset}/{job.model}/{attack_variant(attack)}/{defense_variant(job, player)}/seed{job.seed}"


@lru_cache(maxsize=8)
def fixed_split(dataset: str, rating_threshold, seed: int) -> Split:
    """The split of a seed, made once per process and shared by every job of that seed."""
    return split_dataset(load_dataset(dataset, rating_threshold), seed)


@lru_cache(maxsize=8)
def seed_targets(dataset: str, rating_threshold, seed: int, policy: str, count: int) -> np.ndarray:
    from benchmark.core.targets import choose_targets
    return choose_targets(fixed_split(dataset, rating_threshold, seed).train, policy, count, seed)


def plain_key(job: Job) -> str:
    """What identifies the undefended model a trainer-defense job starts from: the undefended
    cell of the same model, train table and seed, under the same settings."""
    return (f"{cell_id(replace(job, defense=None), job.poisoning)}|{job.rating_threshold}|"
            f"{job.training}|{job.model_params}|{job.targets}")


def needs_plain(job: Job) -> bool:
    """Whether the job's trainer defense starts from the undefended model (and applies)."""
    if job.defense is None or job.defense.kind != "trainer" or inapplicable(job):
        return False
    return job.defense.build().starts_from_plain


def _record(job: Job, attack: AttackSpec | None, attack_obj, status: str, player: str | None = None,
            **extra) -> dict:
    attack_field = None
    if attack is not None:
        described = attack_obj.describe() if attack_obj is not None else {"params": attack.params}
        attack_field = {"name": attack.name, "family": attack.family,
                        "params": described.get("params", {}), **attack.threat_model,
                        "budget": extra.pop("budget", None) or {attack.budget_param: attack.budget}}
    defense_field = None
    if job.defense is not None:
        defense_field = {"name": job.defense.name, "kind": job.defense.kind, "params": job.defense.params}
        if job.players():
            defense_field["player"] = player or "recommender"
    record = {"cell_id": cell_id(job, attack, player), "suite": job.suite, "dataset": job.dataset,
              "model": job.model, "attack": attack_field, "defense": defense_field,
              "variant": {"attack": attack_variant(attack), "defense": defense_variant(job, player)},
              "seed": job.seed, "status": status, "error": extra.pop("error", None),
              "metrics": extra.pop("metrics", {}), "cost": extra.pop("cost", {})}
    record.update(extra)
    return record


def not_applicable(job: Job, attack: AttackSpec | None, reason: str, player: str | None = None) -> dict:
    return _record(job, attack, None, "not_applicable", player, error=reason)


def failed(job: Job, attack: AttackSpec | None, exc: BaseException, player: str | None = None) -> dict:
    message = f"{type(exc).__name__}: {exc}".strip()
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return _record(job, attack, None, "failed", player, error=message + where)


def all_failed(job: Job, exc: BaseException) -> list[dict]:
    return [failed(job, spec, exc, player) for _, spec, player in job.cells()]


def run_job(job: Job, prepared: Prepared | None = None, plain: PlainModel | None = None) -> JobResult:
    """Run one job (on ``prepared``, its shared train table, and from ``plain``, the undefended
    model a trainer defense starts from, when given) and return its records; failures become
    ``failed`` records, never raise."""
    try:
        return _run(job, prepared, plain)
    except Exception as exc:  # a crashing cell must not take the suite down
        return JobResult(all_failed(job, exc))


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
    from recbole.utils import ModelType

    from benchmark.core.models import model_class
    defense = job.defense.build()
    family = job.poisoning.family if job.poisoning is not None else Family.CLEAN
    if family not in defense.applies_to:
        return f"{defense.name} does not apply to {family} cells"
    if defense.kind == Kind.TRAINER and model_class(job.model).type == ModelType.TRADITIONAL:
        return f"{defense.name} needs embedding tables, {job.model} has none"
    return None


def _data_defense(job: Job) -> bool:
    return job.defense is not None and job.defense.kind in DATA_KINDS


def prepare_key(job: Job) -> str | None:
    """What identifies the job's prepared train table, shared by every model and trainer defense:
    None when the job trains on the clean split or does not apply."""
    if (job.poisoning is None and not _data_defense(job)) or inapplicable(job):
        return None
    attack = attack_variant(job.poisoning)
    defense = defense_variant(job) if _data_defense(job) else "none"
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


def _run(job: Job, prepared: Prepared | None = None, plain: PlainModel | None = None) -> JobResult:
    from benchmark.core.embeddings import reset_caches
    from benchmark.core.evaluation import Evaluator, Scorer
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings

    torch.set_num_threads(1)
    reason = inapplicable(job)
    if reason is not None:
        return JobResult([not_applicable(job, spec, reason, player) for _, spec, player in job.cells()])
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
    train = prepared.train

    built = build_model(job.model, split.with_train(train), dict(job.model_params), seed=job.seed)
    trainer_defense = defense if defense is not None and defense.kind == Kind.TRAINER else None
    scorer = Scorer(built, split.train.n_items)
    if defense is not None and defense.kind == Kind.INFERENCE:   # re-ranking: every evaluation
        from defenses.base import RescoredScorer
        defense.fit(split.with_train(train), seed=job.seed)
        scorer = RescoredScorer(scorer, defense)
    # The seed's clean candidates in every cell (module docstring of benchmark.core.evaluation).
    validation = Evaluator(scorer, split.train, split.valid, split.n_real_users)
    testing = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid,
                        targets=targets)

    def validate(model):
        return validation()["ndcg@10"]

    settings = TrainSettings.from_config(built.config, **dict(job.training))

    def trainer_for(with_defense):
        return LeanTrainer(built, built.ids.users(train.users), built.ids.items(train.items), settings,
                           job.seed, validate=validate, defense=with_defense)

    if trainer_defense is not None:
        reason = trainer_defense.unsupported(built.model, trainer_for(None))
        if reason:
            return JobResult([not_applicable(job, spec, reason, player) for _, spec, player in job.cells()])

    start_state = None
    if trainer_defense is not None and trainer_defense.starts_from_plain:
        if plain is None:  # not handed over by the scheduler: train it here, as the plain job does
            plain = _plain_model(trainer_for(None))
        start_state = plain.state
        cost.update(start_train_s=plain.train_s, start_epoch=plain.best_epoch)
    trainer = trainer_for(trainer_defense)
    made = None
    if trainer_defense is None and plain is not None:
        # A data defense that changed nothing: the same table, settings and seed as the undefended
        # model handed over, so its weights are this model's (work keyed by content).
        built.model.load_state_dict(plain.state)
        reset_caches(built.model)
        built.model.eval()
        history = {}
        cost.update(train_s=0.0, shared_train_s=plain.train_s, epochs=plain.epochs, best_epoch=plain.best_epoch)
    else:
        fit = trainer.fit(start_state=start_state)
        history = fit.history
        cost.update(train_s=fit.seconds, epochs=fit.epochs_run, best_epoch=fit.best_epoch)
        if defense is None and not trainer.traditional:
            made = PlainModel(copy.deepcopy(built.model.state_dict()), fit.seconds, fit.best_epoch, fit.epochs_run)

    def test_metrics(evaluator=testing):
        t0 = time.perf_counter()
        evaluation = evaluator.run()
        return evaluation, time.perf_counter() - t0

    common = {"candidates": testing.candidates}
    evaluation, eval_s = test_metrics()
    history = {k: v for k, v in history.items() if v} or None
    records = [_record(job, job.poisoning, attack_obj, "ok", metrics=evaluation.metrics,
                       per_user=_per_user(evaluation), cost={**cost, "eval_s": eval_s},
                       history=history, **common, **extra)]
    for spec in job.evasions:
        if defense is not None and spec.family not in defense.applies_to:
            records.append(not_applicable(job, spec, f"{defense.name} does not apply to {spec.family} cells"))
        else:
            records.append(_evasion(job, spec, built, trainer, test_metrics, cost, common))
    for player in job.players():
        player_testing = Evaluator(trainer_defense.player_scorer(player, built, split.train.n_items),
                                   split.train, split.test, split.n_real_users, also_mask=split.valid,
                                   targets=targets)
        evaluation, eval_s = test_metrics(player_testing)
        records.append(_record(job, job.poisoning, attack_obj, "ok", player, metrics=evaluation.metrics,
                               per_user=_per_user(evaluation), cost={**cost, "eval_s": eval_s},
                               **common, **extra))
    return JobResult(records, made)


def _plain_model(trainer) -> PlainModel:
    fit = trainer.fit()
    return PlainModel(copy.deepcopy(trainer.model.state_dict()), fit.seconds, fit.best_epoch, fit.epochs_run)


def train_plain(job: Job, prepared: Prepared | None = None) -> PlainModel | None:
    """The undefended model a trainer-defense job starts from, without evaluating it (for a
    resumed run whose undefended cells are already on disk); None if it cannot be trained."""
    try:
        result = _run(replace(job, defense=None, evasions=()), prepared)
    except Exception:
        return None
    return result.plain


def _per_user(evaluation) -> dict:
    """Per-user values, 5 significant digits (a record stays small), None where not evaluated."""
    return {m: [None if np.isnan(v) else float(f"{v:.5g}") for v in values.tolist()]
            for m, values in evaluation.per_user.items()}


def _evasion(job, spec, built, trainer, test_metrics, base_cost, common) -> dict:
    from benchmark.core.embeddings import has_embeddings, mean_row_norms
    if not has_embeddings(built.model):
        return not_applicable(job, spec, f"{job.model} has no embedding tables to perturb")
    try:
        attack = spec.build()
        norms = mean_row_norms(built.model)

        def batches():
            trainer.generator.manual_seed(job.seed + 7919)
            return trainer.batches()

        t = time.perf_counter()
        with attack.perturbed(built.model, batches):
            attack_s = time.perf_counter() - t
            evaluation, eval_s = test_metrics()
        cost = {**base_cost, "attack_s": attack_s, "eval_s": eval_s, "injected_interactions": 0}
        return _record(job, spec, attack, "ok", metrics=evaluation.metrics, per_user=_per_user(evaluation),
                       cost=cost, embedding_norms=norms, **common)
    except Exception as exc:
        return failed(job, spec, exc)


def _detection(cleaned, poisoned_split: Split, n_real_users: int, kind: str) -> dict:
    """Precision, recall, F1 of flagged users against the known fake ones (sklearn.metrics, the
    fake users being the positive class); FPR on real users. Recall and F1 are absent when the
    table has no fake user (a clean cell); precision is 0 when nobody is flagged."""
    from sklearn.metrics import precision_recall_fscore_support
    n_users = poisoned_split.train.n_users
    flagged = np.zeros(n_users, bool)
    flagged[np.asarray(cleaned.flagged_users, dtype=np.int64)] = True
    fake = np.arange(n_users) >= n_real_users
    precision, recall, f1, _ = precision_recall_fscore_support(fake, flagged, average="binary",
                                                               zero_division=0)
    tp, fp = int((flagged & fake).sum()), int((flagged & ~fake).sum())
    detection = {"flagged": float(flagged.sum()), "true_positives": float(tp), "false_positives": float(fp),
                 "fpr": fp / n_real_users, "precision": float(precision)}
    if fake.any():
        detection.update(recall=float(recall), f1=float(f1))
    return {"detection": detection, **({"defense_info": cleaned.info} if cleaned.info else {})}
