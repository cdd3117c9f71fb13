"""The contract of every registered defense, checked on the tiny dataset.

A new defense registered with ``@register`` (and imported in ``defenses/__init__.py``) is tested
here for free. Expensive defenses declare small settings in ``test_params``; every defense lists
``invalid_params`` (kwargs that must be refused with ValueError when it is built).
"""
import json
import re

import numpy as np
import pytest

import defenses  # noqa: F401  (fills the registry)
from attacks.base import AttackContext, get_attack
from benchmark.core.data import load_dataset, split_dataset
from benchmark.core.targets import choose_targets
from defenses.base import (
    DEFENSES,
    CleanResult,
    DataDefense,
    TrainingDefense,
    get_defense,
)

KINDS = {"detector", "preprocessor", "trainer"}
FAMILIES = {"clean", "noise", "shilling", "learned", "gradient", "pollution"}
NAMES = sorted(DEFENSES.classes)
DATA_DEFENSES = sorted(n for n, c in DEFENSES.classes.items() if issubclass(c, DataDefense))


def build(name, **params):
    cls = DEFENSES.classes[name]
    return cls(**{**getattr(cls, "test_params", {}), **params})


@pytest.fixture(scope="module")
def poisoned_split():
    split = split_dataset(load_dataset("tests/data/tiny"), seed=0)
    targets = choose_targets(split.train, "unpopular", count=3, seed=0)
    poisoned = get_attack("random", fake_user_fraction=0.1).poison(AttackContext(split, targets), seed=0)
    assert poisoned.n_fake_users > 0
    return split.with_train(poisoned.train)


def snapshot(split):
    return [np.array(a) for part in (split.train, split.valid, split.test)
            for a in (part.users, part.items, part.ratings)]


def test_registry_is_not_empty_and_unknown_names_refused():
    assert NAMES
    with pytest.raises(ValueError, match="unknown defense"):
        get_defense("no_such_defense")


@pytest.mark.parametrize("name", NAMES)
def test_documented_with_a_paper(name):
    cls = DEFENSES.classes[name]
    assert cls.paper.strip(), f"{name} needs a non-empty `paper`"
    assert cls.__doc__ and cls.__doc__.strip(), f"{name} needs a docstring"
    assert re.search(r"(19|20)\d\d", cls.__doc__), f"{name}'s docstring needs a citation with a year"


@pytest.mark.parametrize("name", NAMES)
def test_declares_kind_and_families(name):
    cls = DEFENSES.classes[name]
    assert cls.kind in KINDS
    assert set(cls.applies_to) <= FAMILIES and cls.applies_to
    assert issubclass(cls, TrainingDefense) == (cls.kind == "trainer")
    assert issubclass(cls, DataDefense) == (cls.kind in ("detector", "preprocessor"))


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_refused_when_built(name):
    cls = DEFENSES.classes[name]
    bad_list = getattr(cls, "invalid_params", ())
    assert bad_list, f"{name} must list invalid_params"
    for bad in bad_list:
        with pytest.raises(ValueError):
            build(name, **bad)
        with pytest.raises(ValueError):
            get_defense(name, **{**getattr(cls, "test_params", {}), **bad})


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_describes_itself_as_json(name):
    defense = build(name)
    described = defense.describe()
    assert described["name"] == name and described["kind"] == DEFENSES.classes[name].kind
    json.dumps(described)   # params go into result records
    if isinstance(defense, TrainingDefense):
        assert callable(getattr(defense, "batch_loss", None))


@pytest.mark.parametrize("name", DATA_DEFENSES)
def test_data_defense_contract(name, poisoned_split):
    split = poisoned_split
    train = split.train
    before = snapshot(split)
    defense = build(name)
    result = defense.clean(split, seed=0)
    assert isinstance(result, CleanResult)
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(split))), "input mutated"

    out = result.train
    assert out.n_items == train.n_items and out.n_users <= train.n_users
    # a subset of the input rows, ratings unchanged
    both, at_in, at_out = np.intersect1d(train.keys(), out.keys(), return_indices=True)
    assert both.size == len(out) == np.unique(out.keys()).size
    assert np.array_equal(train.ratings[at_in], out.ratings[at_out])

    flagged = np.asarray(result.flagged_users)
    assert flagged.ndim == 1 and np.issubdtype(flagged.dtype, np.integer)
    if flagged.size:
        assert flagged.min() >= 0 and flagged.max() < train.n_users
        assert not np.isin(out.users, flagged).any(), "flagged users keep rows"
    json.dumps(result.info)


@pytest.mark.parametrize("name", DATA_DEFENSES)
def test_data_defense_deterministic_per_seed(name, poisoned_split):
    first, again = (build(name).clean(poisoned_split, seed=3) for _ in range(2))
    assert np.array_equal(first.flagged_users, again.flagged_users)
    for field in ("users", "items", "ratings"):
        assert np.array_equal(getattr(first.train, field), getattr(again.train, field))


def test_an_inference_defense_needs_no_pipeline_edit(tmp_path):
    """A re-ranking defense defined outside the package, registered, runs through the grid:
    its rescored ranking is what every evaluation of the job sees."""
    import torch

    from benchmark.harness import execute
    from benchmark.plan import plan
    from benchmark.spec import parse_suite
    from defenses.base import InferenceDefense, register
    from tests.conftest import TINY

    class BanTargets(InferenceDefense):
        """Never recommend the seed's target items (a test re-ranker; no paper, 2024)."""
        name, paper = "ban_targets_test", "none"

        def fit(self, split, seed):
            from benchmark.shared import seed_targets
            self.banned = torch.from_numpy(seed_targets(TINY, None, seed, "unpopular", 3))

        def rescore(self, users, scores):
            return scores.index_fill(1, self.banned, -1e9)

    register(BanTargets)
    try:
        suite = parse_suite({"name": "t", "dataset": TINY, "models": ["BPR"], "targets": {"count": 3},
                             "training": {"epochs": 2, "batch_size": 256},
                             "attacks": [{"name": "random", "budgets": [0.2], "params": {"filler_items": 5}}],
                             "defenses": [{"name": "ban_targets_test"}]})
        (tmp_path / "cells").mkdir()
        records = {r["cell_id"]: r for r in execute(plan(suite), tmp_path, workers=1)}
    finally:
        DEFENSES.classes.pop("ban_targets_test")
    banned = records[f"{TINY}/BPR/random@0.2[filler_items=5]/ban_targets_test/seed0"]
    plain = records[f"{TINY}/BPR/random@0.2[filler_items=5]/none/seed0"]
    assert banned["status"] == "ok" and banned["defense"]["kind"] == "inference"
    assert banned["metrics"]["target_hr@50"] == 0.0 < plain["metrics"]["target_hr@50"]
    assert banned["metrics"]["target_rank"] > plain["metrics"]["target_rank"]


TRAINERS = sorted(n for n, c in DEFENSES.classes.items() if issubclass(c, TrainingDefense))


@pytest.mark.parametrize("model_name", ["BPR", "LightGCN", "MultiVAE"])
@pytest.mark.parametrize("name", TRAINERS)
def test_a_trainer_defense_says_which_models_it_cannot_train(name, model_name):
    """``unsupported`` (what the grid asks before training, to record not_applicable) and
    training agree: a reason means the trainer refuses with it, no reason means it trains."""
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    split = split_dataset(load_dataset("tests/data/tiny"), seed=0)
    built = build_model(model_name, split, {}, seed=0)
    defense = build(name, pretrain_epochs=0)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings(epochs=1, batch_size=256), seed=0, defense=defense)
    reason = defense.unsupported(built.model, trainer)
    if reason is None:
        assert trainer.fit().epochs_run == 1
    else:
        assert isinstance(reason, str) and model_name in reason
        with pytest.raises(ValueError, match=reason[:20]):
            trainer.fit()
