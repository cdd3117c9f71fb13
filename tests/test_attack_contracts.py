"""The contract of every registered attack, poisoning and evasion, checked on the tiny dataset.

A new attack is one file in ``attacks/`` with a class registered by ``@register``; it is tested
here for free. Expensive attacks declare small settings in ``test_params``.
"""
import re

import numpy as np
import pytest
import torch

import attacks  # noqa: F401  (fills the registry)
from attacks.base import (
    ATTACKS,
    AttackContext,
    EvasionAttack,
    PoisoningAttack,
    PollutionAttack,
    edit_count,
)
from benchmark.core.targets import choose_targets

POISONING = sorted(name for name, cls in ATTACKS.classes.items() if issubclass(cls, PoisoningAttack))


def build(name, **params):
    cls = ATTACKS.classes[name]
    return cls(**{**cls.test_params, **params})


def snapshot(split):
    return [np.array(a) for part in (split.train, split.valid, split.test)
            for a in (part.users, part.items, part.ratings)]


@pytest.fixture(scope="module")
def context(tiny_split):   # tests/data/tiny split with seed 0 (tests/conftest.py)
    return AttackContext(tiny_split, choose_targets(tiny_split.train, "unpopular", count=3, seed=0))


@pytest.fixture(scope="module", params=POISONING)
def name(request):
    return request.param


def test_registry_has_the_heuristic_attacks():
    expected = {"noise_insert", "noise_remove", "noise_flip", "noise_rating",
                "random", "average", "bandwagon", "segment"}
    assert expected <= set(POISONING)


def test_documented_with_a_paper(name):
    cls = ATTACKS.classes[name]
    assert cls.paper.strip(), f"{name} needs a non-empty `paper`"
    assert cls.__doc__ and re.search(r"(19|20)\d\d", cls.__doc__), f"{name}'s docstring needs a citation"
    assert "Example" in cls.__doc__ and "Args" in cls.__doc__


def test_declares_its_sweep(name):
    cls = ATTACKS.classes[name]
    assert cls.budget_param and list(cls.default_sweep) == sorted(cls.default_sweep)
    for value in cls.default_sweep:
        assert build(name, **{cls.budget_param: value}).params[cls.budget_param] == value


def test_bad_parameters_refused_when_built(name):
    cls = ATTACKS.classes[name]
    assert cls.invalid_params, f"{name} must list invalid_params"
    for bad in cls.invalid_params:
        with pytest.raises(ValueError):
            build(name, **bad)


def test_input_never_mutated_and_split_unchanged(name, context):
    before = snapshot(context.split)
    targets = context.targets.copy()
    result = build(name).poison(context, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(context.split)))
    assert np.array_equal(targets, context.targets)
    assert result.train is not context.split.train


def test_deterministic_per_seed(name, context):
    attack = build(name)
    first, again, other = (attack.poison(context, seed=s).train for s in (0, 0, 1))
    def same(a, b):   # a shuffled sequence changes only times; a table may have none
        return all(np.array_equal(*(np.asarray(getattr(t, c), dtype=np.float64) for t in (a, b)), equal_nan=True)
                   for c in ("users", "items", "ratings")) and \
            (a.timestamps is None) == (b.timestamps is None) and \
            (a.timestamps is None or np.array_equal(a.timestamps, b.timestamps, equal_nan=True))
    assert same(first, again)
    differs = not same(first, other)
    assert differs == attack.seeded


def test_budget_honoured_exactly(name, context):
    cls, clean = ATTACKS.classes[name], context.split.train
    attack = build(name)
    result = attack.poison(context, seed=0)
    assert result.budget[cls.budget_param] == attack.params[cls.budget_param]
    assert result.injected_interactions == edit_count(clean, result.train) > 0
    n_real = context.split.n_real_users
    assert result.n_fake_users == result.budget.get("fake_users", 0)
    if "fake_users" in result.budget:
        assert result.n_fake_users == max(1, round(result.budget["fake_user_fraction"] * n_real))
    if "interactions" in result.budget:
        assert result.budget["interactions"] == round(result.budget["fraction"] * len(clean))


def test_ids_in_range_and_fake_users_apart(name, context):
    clean, n_real = context.split.train, context.split.n_real_users
    result = build(name).poison(context, seed=0)
    out = result.train
    assert out.n_items == clean.n_items and out.n_users == n_real + result.n_fake_users
    assert out.users.min() >= 0 and out.users.max() < out.n_users
    assert out.items.min() >= 0 and out.items.max() < out.n_items
    fake = np.unique(out.users[out.users >= n_real])
    assert np.array_equal(fake, np.arange(n_real, n_real + result.n_fake_users))
    if result.n_fake_users:   # fake profiles come on top: real users' rows are untouched
        real = out.take(out.users < n_real)
        assert np.array_equal(np.sort(real.keys()), np.sort(clean.keys()))


def test_no_duplicate_rows_and_ratings_on_the_scale(name, context):
    """A fake sequence may repeat a target (``repeats_targets``: Yue et al.'s t, x, t, x ...
    pattern); nothing else repeats."""
    clean = context.split.train
    out = build(name).poison(context, seed=0).train
    repeatable = np.zeros(len(out), bool)
    if getattr(ATTACKS.classes[name], "repeats_targets", False):
        repeatable = (out.users >= context.split.n_real_users) & np.isin(out.items, context.targets)
    assert np.unique(out.keys()[~repeatable]).size == (~repeatable).sum()
    assert out.ratings.min() >= clean.ratings.min() and out.ratings.max() <= clean.ratings.max()


# ---- evasion attacks: every registered one, on a trained BPR ------------------------------

EVASION = sorted(name for name, cls in ATTACKS.classes.items() if issubclass(cls, EvasionAttack))
# attacks at test time on the histories a sequential model reads (tests/test_sequential.py runs them)
POLLUTION = sorted(name for name, cls in ATTACKS.classes.items() if issubclass(cls, PollutionAttack))


@pytest.fixture(scope="module")
def trained(tiny_split):
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    built = build_model("BPR", tiny_split, seed=0)
    trainer = LeanTrainer(built, built.ids.users(tiny_split.train.users),
                          built.ids.items(tiny_split.train.items), TrainSettings(epochs=2, batch_size=256), 0)
    trainer.fit()
    return built.model, trainer


def _batches(trainer, seed=7):
    def make():
        trainer.generator.manual_seed(seed)
        return trainer.batches()
    return make


def test_every_attack_is_poisoning_evasion_or_pollution():
    assert POLLUTION and set(POISONING) | set(EVASION) | set(POLLUTION) == set(ATTACKS.classes)


@pytest.mark.parametrize("name", EVASION + POLLUTION)
def test_evasion_attack_is_documented_and_refuses_bad_parameters(name):
    cls = ATTACKS.classes[name]
    assert cls.paper.strip() and cls.__doc__ and re.search(r"(19|20)\d\d", cls.__doc__)
    assert cls.budget_param and list(cls.default_sweep) == sorted(cls.default_sweep)
    assert cls.invalid_params
    for bad in cls.invalid_params:
        with pytest.raises(ValueError):
            build(name, **bad)


@pytest.mark.parametrize("name", EVASION)
def test_evasion_perturbs_inside_the_block_and_restores_the_weights(name, trained):
    model, trainer = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = build(name)
    with attack.perturbed(model, _batches(trainer)):
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    after = model.state_dict()
    assert any(not torch.equal(inside[k], before[k]) for k in before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(RuntimeError, match="inside"):   # restored even when the block fails
        with attack.perturbed(model, _batches(trainer)):
            raise RuntimeError("inside")
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)


@pytest.mark.parametrize("name", EVASION)
def test_evasion_is_deterministic_and_grows_with_the_budget(name, trained):
    model, trainer = trained
    cls = ATTACKS.classes[name]
    small, large = cls.default_sweep[0], cls.default_sweep[-1]

    def deltas(budget):
        with build(name, **{cls.budget_param: budget}).perturbed(model, _batches(trainer)) as d:
            return [x.clone() for x in d]
    first, again, bigger = deltas(small), deltas(small), deltas(large)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sum(float(d.norm()) for d in bigger) > sum(float(d.norm()) for d in first)


def test_declares_knowledge_and_surrogate(name):
    from benchmark.core.kinds import KNOWLEDGE
    attack = build(name)
    described = attack.describe()
    assert described["knowledge"] in KNOWLEDGE
    assert isinstance(described["surrogate"], str) and isinstance(ATTACKS.classes[name].surrogate, str)
    if ATTACKS.classes[name].family == "learned":
        assert described["surrogate"], f"learned attack {name} must name its surrogate"


def test_fake_profiles_hold_every_target_and_exactly_their_fillers(name, context):
    """Every fake-profile attack: each fake user holds all targets, plus exactly its budget's
    filler (and selected) items, all among the items real users rated in train."""
    from attacks.base import FakeProfileAttack
    if not issubclass(ATTACKS.classes[name], FakeProfileAttack):
        pytest.skip("not a fake-profile attack")
    split, targets = context.split, np.unique(context.targets)
    result = build(name).poison(context, seed=2)
    fake = result.train.take(result.train.users >= split.n_real_users)
    attack = build(name)
    per_profile = attack.profile_length(result.budget["filler_items"], len(targets),
                                        result.budget.get("selected_items", 0))
    assert (fake.user_counts()[split.n_real_users:] == per_profile).all()
    held = np.unique(fake.keys()[np.isin(fake.items, targets)]) % fake.n_items
    holders = np.bincount(held, minlength=fake.n_items)[targets]
    assert (holders == result.n_fake_users).all()
    rated = np.unique(split.train.items[split.train.users < split.n_real_users])
    assert np.isin(fake.items, np.concatenate([rated, targets])).all()
