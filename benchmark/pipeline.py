"""One job's work: poison -> clean -> train -> evaluate (-> evasion attacks on that model).

Each job (``benchmark.cells.Job``) returns one record per cell and, when it trained an undefended
model, that model's best state: trainer defenses start from it (``PlainModel``), as APR and IRGAN
start from the converged plain model. Every cell is scored on the seed's clean candidates
(``benchmark.core.evaluation``). Objects are built here, where the work is done; everything about
a cell's identity is in ``benchmark.cells``, what jobs share in ``benchmark.shared``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from benchmark.cells import (
    Job,
    all_failed,
    all_not_applicable,
    failed,
    inapplicable,
    not_applicable,
    per_user,
    record,
    top10,
)
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import Family, Kind
from benchmark.shared import cleans_data, job_split, job_targets


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


def prepare(job: Job, poisoned: Prepared | None = None) -> Prepared:
    """Poison the seed's split (or take ``poisoned``, made by the same attack), then let the data
    defense clean it. Deterministic per seed, so sharing it across jobs changes no record."""
    split = job_split(job)
    train_split, cost, extra = split, {"attack_s": 0.0, "defense_s": 0.0, "injected_interactions": 0}, {}
    if poisoned is not None:
        train_split, cost, extra = split.with_train(poisoned.train), dict(poisoned.cost), dict(poisoned.extra)
    elif job.poisoning is not None:
        from attacks.base import AttackContext
        attack = job.poisoning.build()
        t = time.perf_counter()
        result = attack.poison(AttackContext(split=split, targets=job_targets(job)), seed=job.seed)
        cost["attack_s"] = time.perf_counter() - t
        cost["injected_interactions"] = result.injected_interactions
        extra["budget"] = {**result.budget}
        train_split = split.with_train(result.train)
        if np.any(train_split.train.users >= split.n_real_users):   # fake users were injected
            t = time.perf_counter()
            extra["stealth"] = stealth(train_split, split.n_real_users, job.seed)
            cost["stealth_s"] = time.perf_counter() - t
    if cleans_data(job):
        defense = job.defense.build()
        t = time.perf_counter()
        cleaned = defense.clean(train_split, seed=job.seed)
        cost["defense_s"] = time.perf_counter() - t
        extra.update(_detection(cleaned, train_split, split.n_real_users, defense.kind))
        train_split = train_split.with_train(cleaned.train)
    return Prepared(train_split.train, cost, extra)


@dataclass
class _Setup:
    """A job's model, built on its train table, with its evaluators and the trainer it would use."""
    split: Split
    train: Interactions
    built: object
    scorer: object
    testing: object
    trainer_for: object      # trainer_for(defense or None) -> LeanTrainer
    fallback_users: int      # real users without train rows, scored by popularity
    history: object = None   # a sequential model's test-time histories (core.sequences.Sequences)
    rescored: object = None  # rescored(scorer): the scorer as the job's inference defense re-ranks it


def _setup(job: Job, train: Interactions, defense) -> _Setup:
    from benchmark.core.evaluation import Evaluator, with_fallback
    from benchmark.core.models import build_model
    from benchmark.core.sequences import training_data
    from benchmark.core.training import LeanTrainer, TrainSettings
    split = job_split(job)
    on_device = defense is None or getattr(defense, "runs_on_device", True)
    built = build_model(job.model, split.with_train(train), dict(job.model_params), seed=job.train_seed,
                        device=job.device if on_device else "cpu")
    validating, scorer = _scorers(built, split)
    history = getattr(scorer, "history", None)
    reranking = defense if defense is not None and defense.kind == Kind.INFERENCE else None
    if reranking is not None:   # re-ranking: every evaluation
        reranking.fit(split.with_train(train), seed=job.seed)

    def rescored(plain):
        """``plain`` as the job's inference defense re-ranks it (itself without one)."""
        from defenses.base import RescoredScorer
        return RescoredScorer(plain, reranking) if reranking is not None else plain
    validating, scorer = rescored(validating), rescored(scorer)
    if not built.sequential:   # real users left without train rows (a sequential model reads the history)
        validating = scorer = with_fallback(scorer, train, split.n_real_users)
    fallback_users = getattr(scorer, "users", 0)
    # The seed's clean candidates in every cell (module docstring of benchmark.core.evaluation).
    validation = Evaluator(validating, split.train, split.valid, split.n_real_users)
    testing = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid,
                        targets=job_targets(job))
    settings = TrainSettings.from_config(built.config, **dict(job.training))
    sequences = training_data(built.model, train, built.ids.item, built.ids.user) if built.sequential else None

    def trainer_for(with_defense):
        return LeanTrainer(built, built.ids.users(train.users), built.ids.items(train.items), settings,
                           job.train_seed, validate=lambda model: validation()["ndcg@10"], defense=with_defense,
                           sequences=sequences)

    return _Setup(split, train, built, scorer, testing, trainer_for, fallback_users, history, rescored)


def _scorers(built, split: Split):
    """The scorers of validation and of testing: one for a general model; for a sequential one,
    each user's clean train sequence as the history to validate from, plus the valid item to
    test from (the poisoned table changes what the model learns, never what a user has done)."""
    from benchmark.core.evaluation import Scorer, SequenceScorer
    from benchmark.core.sequences import histories
    n_items = split.train.n_items
    if not built.sequential:
        scorer = Scorer(built, n_items)
        return scorer, scorer
    max_len, n_users = int(built.model.max_seq_length), split.n_real_users
    seen = split.train, split.train.concat(split.valid)
    return tuple(SequenceScorer(built, n_items, histories(inter, n_users, max_len, built.ids.item, built.ids.user))
                 for inter in seen)


def _train(setup: _Setup, defense, plain: PlainModel | None, cost: dict):
    """Train the job's model (or take ``plain``'s weights where the table and settings are its
    own); the trainer, the history and, for a job without defense, the undefended model made."""
    from benchmark.core.embeddings import reset_caches
    model = setup.built.model
    trainer_defense = defense if defense is not None and defense.kind == Kind.TRAINER else None
    start_state = None
    if trainer_defense is not None and trainer_defense.starts_from_plain:
        if plain is None:  # not handed over by the scheduler: train it here, as the plain job does
            plain = _plain_model(setup.trainer_for(None))
        start_state = plain.state
        cost.update(start_train_s=plain.train_s, start_epoch=plain.best_epoch)
    trainer = setup.trainer_for(trainer_defense)
    if trainer_defense is None and plain is not None:
        # A data defense that changed nothing: the same table, settings and seed as the undefended
        # model handed over, so its weights are this model's (work keyed by content).
        model.load_state_dict(plain.state)
        reset_caches(model)
        model.eval()
        cost.update(train_s=0.0, shared_train_s=plain.train_s, epochs=plain.epochs, best_epoch=plain.best_epoch)
        return trainer, {}, None
    fit = trainer.fit(start_state=start_state)
    cost.update(train_s=fit.seconds, epochs=fit.epochs_run, best_epoch=fit.best_epoch)
    made = None
    if defense is None and not trainer.traditional:
        made = PlainModel(_on_cpu(model.state_dict()), fit.seconds, fit.best_epoch, fit.epochs_run)
    return trainer, fit.history, made


def _timed(evaluator):
    t0 = time.perf_counter()
    evaluation = evaluator.run()
    return evaluation, time.perf_counter() - t0


def _run(job: Job, prepared: Prepared | None = None, plain: PlainModel | None = None) -> JobResult:
    torch.set_num_threads(1)
    reason = inapplicable(job)
    if reason is not None:
        return JobResult(all_not_applicable(job, reason))
    defense = job.defense.build() if job.defense else None
    prepared = prepared if prepared is not None else prepare(job)
    cost, extra = dict(prepared.cost), {k: (dict(v) if isinstance(v, dict) else v)
                                        for k, v in prepared.extra.items()}
    setup = _setup(job, prepared.train, defense)
    trainer_defense = defense if defense is not None and defense.kind == Kind.TRAINER else None
    if trainer_defense is not None:
        reason = trainer_defense.unsupported(setup.built.model, setup.trainer_for(None))
        if reason:
            return JobResult(all_not_applicable(job, reason))
    trainer, history, made = _train(setup, defense, plain, cost)

    params = job.poisoning.recorded_params if job.poisoning is not None else None
    common = {"candidates": setup.testing.candidates, "fallback_users": setup.fallback_users}
    evaluation, eval_s = _timed(setup.testing)
    records = [record(job, job.poisoning, "ok", params=params, metrics=evaluation.metrics,
                      per_user=per_user(evaluation), top10=top10(evaluation), cost={**cost, "eval_s": eval_s},
                      history={k: v for k, v in history.items() if v} or None, **common, **extra)]
    for spec in job.evasions:
        if defense is not None and spec.family not in defense.applies_to:
            records.append(not_applicable(job, spec, f"{defense.name} does not apply to {spec.family} cells"))
        else:
            records.append(_evasion(job, spec, setup, trainer, cost))
    for player in job.players():
        from benchmark.core.evaluation import Evaluator, with_fallback
        split = setup.split
        scorer = with_fallback(trainer_defense.player_scorer(player, setup.built, split.train.n_items),
                               setup.train, split.n_real_users)
        player_testing = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid,
                                   targets=job_targets(job))
        evaluation, eval_s = _timed(player_testing)
        records.append(record(job, job.poisoning, "ok", player, params=params, metrics=evaluation.metrics,
                              per_user=per_user(evaluation), top10=top10(evaluation),
                              cost={**cost, "eval_s": eval_s}, **common, **extra))
    return JobResult(records, made)


def _plain_model(trainer) -> PlainModel:
    fit = trainer.fit()
    return PlainModel(_on_cpu(trainer.model.state_dict()), fit.seconds, fit.best_epoch, fit.epochs_run)


def _on_cpu(state: dict) -> dict:
    """A copy of a model's weights in CPU memory: shared between workers whatever their device."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def train_plain(job: Job, prepared: Prepared | None = None) -> PlainModel | None:
    """The undefended model a trainer-defense job starts from, without evaluating it (for a
    resumed run whose undefended cells are already on disk); None if it cannot be trained."""
    try:
        result = _run(replace(job, defense=None, evasions=()), prepared)
    except Exception:
        return None
    return result.plain


def _pollution(job: Job, spec, setup: _Setup, cost: dict) -> dict:
    """One profile-pollution cell: the job's trained model scores every real user from the
    histories the attack changed (the seed's clean candidates, as every cell)."""
    from benchmark.core.evaluation import Evaluator, SequenceScorer
    model = setup.built.model
    try:
        attack = spec.build()
        reason = attack.unsupported(model)
        if reason:
            return not_applicable(job, spec, reason)
        split = setup.split
        targets = setup.built.ids.items(job_targets(job))
        t = time.perf_counter()
        history = attack.polluted(model, setup.history, targets, np.random.default_rng(job.seed))
        attack_s = time.perf_counter() - t
        changed = int((history.items != setup.history.items).sum())
        scorer = setup.rescored(SequenceScorer(setup.built, split.train.n_items, history))
        testing = Evaluator(scorer, split.train, split.test,
                            split.n_real_users, also_mask=split.valid, targets=job_targets(job))
        evaluation, eval_s = _timed(testing)
        return record(job, spec, "ok", params=spec.recorded_params, metrics=evaluation.metrics,
                      per_user=per_user(evaluation), top10=top10(evaluation), candidates=testing.candidates,
                      fallback_users=setup.fallback_users,
                      budget={spec.budget_param: spec.budget, "changed_items": changed},
                      cost={**cost, "attack_s": attack_s, "eval_s": eval_s, "injected_interactions": changed})
    except Exception as exc:
        return failed(job, spec, exc)


def _evasion(job: Job, spec, setup: _Setup, trainer, cost: dict) -> dict:
    """One evasion cell on the job's trained model: a gradient attack (weights restored
    afterwards), or profile pollution (``_pollution``)."""
    from benchmark.core.embeddings import has_embeddings, mean_row_norms
    if spec.family == Family.POLLUTION:
        return _pollution(job, spec, setup, cost)
    model = setup.built.model
    if not has_embeddings(model):
        return not_applicable(job, spec, f"{job.model} has no embedding tables to perturb")
    try:
        attack = spec.build()
        norms = mean_row_norms(model)

        def batches():
            trainer.generator.manual_seed(job.train_seed + 7919)
            return trainer.batches()

        t = time.perf_counter()
        with attack.perturbed(model, batches):
            attack_s = time.perf_counter() - t
            evaluation, eval_s = _timed(setup.testing)
        return record(job, spec, "ok", params=spec.recorded_params, metrics=evaluation.metrics,
                      per_user=per_user(evaluation), top10=top10(evaluation), embedding_norms=norms,
                      candidates=setup.testing.candidates,
                      fallback_users=setup.fallback_users,
                      cost={**cost, "attack_s": attack_s, "eval_s": eval_s, "injected_interactions": 0})
    except Exception as exc:
        return failed(job, spec, exc)


STEALTH_DETECTORS = ("pca_detector", "degree_sad", "fap")   # the unsupervised detectors


def stealth(poisoned: Split, n_real_users: int, seed: int) -> dict:
    """How well each unsupervised detector (``STEALTH_DETECTORS``, default parameters) separates a
    poisoned table's fake users from its real users: the ROC AUC (sklearn) of its user scores,
    oriented so that higher is more suspicious, over the users with train rows (fake = positive).
    0.5: no better than chance; 1: every fake user above every real one; below 0.5: the fakes
    look *less* suspicious than real users. The scores are those the detector flags by (FAP: its
    seeds first, then the propagated probability), with the seed's generator, as ``clean`` does.
    A detector that cannot score the table is left out (its failure is the defense cell's to
    report, not every cell's of the table)."""
    from sklearn.metrics import roc_auc_score

    from defenses.base import get_defense
    from defenses.detection import ScoredDetector
    out = {}
    for name in STEALTH_DETECTORS:
        detector = get_defense(name)
        try:
            if isinstance(detector, ScoredDetector):
                users, score = detector.scores(poisoned.train, np.random.default_rng(seed))
                score = detector.sign * np.asarray(score, dtype=np.float64)
            else:   # FAP: the seeds are flagged first, then the rest by spam probability
                users, p, seeds = detector.scores(poisoned, seed)
                score = np.asarray(p, dtype=np.float64) + seeds * (np.ptp(p) + 1.0 if len(p) else 0.0)
        except Exception:
            continue
        fake = np.asarray(users) >= n_real_users
        if fake.any() and not fake.all():
            out[name] = float(roc_auc_score(fake, score))
    return out


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
