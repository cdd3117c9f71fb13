"""The contract of every registered poisoning attack, checked on the tiny dataset.

A new attack registered with ``@register`` (and imported in ``attacks/__init__.py``) is tested
here for free. Expensive attacks declare small settings in ``test_params``.
"""
import re

import numpy as np
import pytest

import attacks  # noqa: F401  (fills the registry)
from attacks.base import REGISTRY, AttackContext, edit_count
from attacks.targets import choose_targets

POISONING_FAMILIES = {"noise", "shilling", "learned"}
POISONING = sorted(name for name, cls in REGISTRY.items() if cls.family in POISONING_FAMILIES)


def build(name, **params):
    cls = REGISTRY[name]
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
    cls = REGISTRY[name]
    assert cls.paper.strip(), f"{name} needs a non-empty `paper`"
    assert cls.__doc__ and re.search(r"(19|20)\d\d", cls.__doc__), f"{name}'s docstring needs a citation"
    assert "Example" in cls.__doc__ and "Args" in cls.__doc__


def test_declares_its_sweep(name):
    cls = REGISTRY[name]
    assert cls.budget_param and list(cls.default_sweep) == sorted(cls.default_sweep)
    for value in cls.default_sweep:
        assert build(name, **{cls.budget_param: value}).params[cls.budget_param] == value


def test_bad_parameters_refused_when_built(name):
    cls = REGISTRY[name]
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
    columns = ("users", "items", "ratings")
    assert all(np.array_equal(getattr(first, c), getattr(again, c)) for c in columns)
    assert not all(np.array_equal(getattr(first, c), getattr(other, c)) for c in columns)


def test_budget_honoured_exactly(name, context):
    cls, clean = REGISTRY[name], context.split.train
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
    clean = context.split.train
    out = build(name).poison(context, seed=0).train
    assert np.unique(out.keys()).size == len(out)
    assert out.ratings.min() >= clean.ratings.min() and out.ratings.max() <= clean.ratings.max()
