"""What every attack is: a template method that validates and checks the budget around a hook.

Two families, as in the Adversarial Robustness Toolbox:
- ``PoisoningAttack`` changes the train table before training (noise, shilling, learned).
- ``EvasionAttack`` perturbs a trained model's embeddings at evaluation time (FGSM, PGD).

Parameters are checked when an attack is built (``ValueError``); ``poison()`` never mutates its
input and is deterministic for a given seed. Register a class with ``@register`` and the contract
tests in ``tests/test_attack_contracts.py`` cover it for free.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from benchmark.data import Interactions, Split

REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make an attack available by its ``name`` in suites and the CLI."""
    if cls.name in REGISTRY:
        raise ValueError(f"attack name '{cls.name}' registered twice")
    REGISTRY[cls.name] = cls
    return cls


def get_attack(name: str, **params):
    """Build a registered attack by name; unknown names and bad parameters raise ValueError."""
    import attacks  # noqa: F401  (imports every attack module, filling REGISTRY)
    if name not in REGISTRY:
        raise ValueError(f"unknown attack '{name}': choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


def check_fraction(name: str, value, *, allow_zero: bool = False, upper: float = 1.0) -> float:
    """A fraction in (0, upper] (or [0, upper] with allow_zero), as a float; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value > upper:
        bound = "[0" if allow_zero else "(0"
        raise ValueError(f"{name} must be in {bound}, {upper}], got {value}")
    return float(value)


def check_positive_int(name: str, value, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def edit_count(clean: Interactions, poisoned: Interactions) -> int:
    """Fewest row edits (add a row, remove one, or change one row's item or rating) that turn
    clean into poisoned: what ``PoisonResult.injected_interactions`` counts."""
    both, at_clean, at_poisoned = np.intersect1d(clean.keys(), poisoned.keys(), return_indices=True)
    rerated = np.count_nonzero(clean.ratings[at_clean] != poisoned.ratings[at_poisoned])
    return max(len(poisoned) - both.size, len(clean) - both.size) + int(rerated)


@dataclass(frozen=True)
class AttackContext:
    """What a poisoning attack may look at: the fixed split (train only is attackable) and the
    target items chosen for this seed. ``split.valid`` and ``split.test`` must never be read."""

    split: Split
    targets: np.ndarray  # item ids the attacker promotes (shilling / learned); may be empty


@dataclass(frozen=True)
class PoisonResult:
    """A poisoned train table plus the budget actually spent, in clear units."""

    train: Interactions
    budget: dict = field(default_factory=dict)   # e.g. fake_users, fake_user_fraction, filler_items
    injected_interactions: int = 0                # row edits versus clean train (see edit_count)
    n_fake_users: int = 0                         # fake users have ids >= split.n_real_users


class PoisoningAttack(ABC):
    """Template method: ``poison()`` checks inputs and outputs, ``_poison()`` does the work."""

    name: str = ""
    family: str = ""      # "noise" | "shilling" | "learned"
    paper: str = ""
    budget_param: str = ""        # the constructor argument a suite sweeps, e.g. "fraction"
    default_sweep: tuple = ()     # its default values in suites, smallest to largest
    invalid_params: tuple = ()    # kwargs that must raise ValueError when built (contract tests)
    test_params: dict = {}        # kwargs merged into the defaults in tests (small, fast settings)

    def __init__(self, **params):
        self.params = params

    def poison(self, context: AttackContext, seed: int) -> PoisonResult:
        train = context.split.train
        before = (train.users.copy(), train.items.copy(), train.ratings.copy())
        result = self._poison(context, np.random.default_rng(seed))
        if not (np.array_equal(before[0], train.users) and np.array_equal(before[1], train.items)
                and np.array_equal(before[2], train.ratings)):
            raise RuntimeError(f"attack {self.name} mutated its input")
        out = result.train
        if out.n_items != train.n_items or (len(out) and (out.items.min() < 0 or out.items.max() >= out.n_items)):
            raise RuntimeError(f"attack {self.name} produced item ids out of range")
        return result

    @abstractmethod
    def _poison(self, context: AttackContext, rng: np.random.Generator) -> PoisonResult:
        """Return the poisoned train table; never modify ``context``."""

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "params": dict(self.params)}
