"""What every attack is: one ``Attack`` base, two families beneath it, one base for fake profiles.

As in the Adversarial Robustness Toolbox:
- ``PoisoningAttack`` changes the train table before training (noise, shilling, learned): a
  template method, ``poison()`` validates and checks the result around the ``_poison()`` hook.
- ``EvasionAttack`` perturbs a trained model at evaluation time (FGSM, PGD): ``perturbed()``
  is a context manager inside which the model carries the perturbation, restored on exit.
- ``PollutionAttack`` changes the histories a trained sequential model scores users from
  (profile pollution at inference): ``polluted()`` returns the changed histories.
- ``FakeProfileAttack`` (a ``PoisoningAttack``) owns what every profile-injecting attack needs:
  the target check, the fake-user ids (``train.n_users, ...``, after every user of the table it
  poisons), the budget (fake users = ``max(1, round(fake_user_fraction * n_real_users))``, filler
  count defaulting to the mean real profile length), single-thread execution, the fake rows'
  timestamps (a profile's items in the order the recipe gives them: a fake *sequence* for
  sequential models), and the ``PoisonResult`` with its budget in clear units. A recipe
  implements ``profiles()``.

Parameters are declared once per class, ``parameters = {name: Param(default, check)}``
(``benchmark.core.params``), extending the base's (``FakeProfileAttack`` declares
``fake_user_fraction`` and ``filler_items`` for every recipe); building checks them
(``ValueError``) and records them in ``params``; ``_derive()`` is the hook for checks across
parameters and derived attributes. ``poison()`` never mutates its input and is deterministic
for a given seed. Register a class with ``@register`` and ``tests/test_attack_contracts.py``
covers it for free.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from benchmark.core import params as check
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import Family
from benchmark.core.params import Param, Parameterised
from benchmark.core.registry import ATTACKS

register = ATTACKS.register


def get_attack(name: str, **params):
    """Build a registered attack by name; unknown names and bad parameters raise ValueError."""
    return ATTACKS.build(name, **params)


def edit_count(clean: Interactions, poisoned: Interactions) -> int:
    """Fewest row edits (add a row, remove one, or change one row's item, rating or place in its
    user's sequence) that turn clean into poisoned: what ``PoisonResult.injected_interactions``
    counts. Where both tables are timed, a row kept by both has moved when its rank among its
    user's kept rows differs (a shuffled sequence); new times that keep the order are no edit."""
    both, at_clean, at_poisoned = np.intersect1d(clean.keys(), poisoned.keys(), return_indices=True)
    changed = clean.ratings[at_clean] != poisoned.ratings[at_poisoned]
    if clean.timestamps is not None and poisoned.timestamps is not None and both.size:
        changed |= _ranks(clean.take(at_clean)) != _ranks(poisoned.take(at_poisoned))
    return max(len(poisoned) - both.size, len(clean) - both.size) + int(np.count_nonzero(changed))


def _ranks(table: Interactions) -> np.ndarray:
    """Each row's position in the table's time order (users first, so equal tables of the same
    rows per user give equal ranks exactly when every user's order is the same)."""
    from benchmark.core.data import time_order
    rank = np.empty(len(table), dtype=np.int64)
    rank[time_order(table)] = np.arange(len(table))
    return rank


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


class Attack(Parameterised, ABC):
    """Name, family, paper, the parameter a suite sweeps, and the built parameters: declared in
    ``parameters`` and checked, filled and recorded in ``params`` by ``Parameterised``."""

    name: str = ""
    family: Family
    paper: str = ""
    budget_param: str = ""        # the constructor argument a suite sweeps, e.g. "fraction"
    default_sweep: tuple = ()     # its default values in suites, smallest to largest
    invalid_params: tuple = ()    # kwargs that must raise ValueError when built (contract tests)
    test_params: dict = {}        # kwargs merged into the defaults in tests (small, fast settings)
    knowledge: str = "white-box"  # benchmark.core.kinds.KNOWLEDGE: what the attacker is assumed to know
    surrogate: str = ""           # the model the attacker optimises against ("" for none)
    seeded: bool = True           # its result depends on the seed (False: the same for every seed)

    def describe(self) -> dict:
        return {"name": self.name, "family": str(self.family), "knowledge": self.knowledge,
                "surrogate": self.surrogate, "params": dict(self.params)}


class PoisoningAttack(Attack):
    """Template method: ``poison()`` checks inputs and outputs, ``_poison()`` does the work."""

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


class EvasionAttack(Attack):
    """Perturbs a trained model inside ``with attack.perturbed(model, batches_fn):``; the
    model's weights are restored when the block ends, whatever happens inside."""

    family = Family.GRADIENT

    @staticmethod
    def applies_to(model) -> bool:
        return True

    @abstractmethod
    def perturbed(self, model, batches_fn):
        """A context manager yielding the perturbation; ``batches_fn()`` yields train batches."""


class PollutionAttack(Attack):
    """Changes real users' histories at recommendation time (a sequential model's input): a
    trained model scores every user from ``polluted(model, history, targets, rng)`` instead of
    ``history`` (``benchmark.core.sequences.Sequences`` in RecBole ids); nothing is retrained."""

    family = Family.POLLUTION

    @staticmethod
    def unsupported(model) -> str | None:
        """Why the attack cannot run on ``model`` (its cells are then ``not_applicable``), or None."""
        return None

    @abstractmethod
    def polluted(self, model, history, targets, rng: np.random.Generator):
        """The histories after the attack (a new ``Sequences``; ``history`` is not modified);
        ``targets`` are the target items in the model's (RecBole's) ids."""


@dataclass(frozen=True)
class Profiles:
    """What a fake-profile recipe returns: one row per fake user (items, and their ratings)."""
    items: np.ndarray              # (fake users, items per profile) item ids, or a ragged list
    ratings: np.ndarray | None     # same shape; None: every item at the train's maximum rating
    budget: dict = field(default_factory=dict)   # what the recipe adds to the budget


class FakeProfileAttack(PoisoningAttack):
    """Push attacks by injected fake users (shilling and learned). Subclasses implement
    ``profiles(context, targets, n_fake, fillers, rng) -> Profiles``; the base does the rest."""

    budget_param = "fake_user_fraction"
    default_sweep = (0.01, 0.03, 0.05)
    single_thread = False     # learned attacks: thousands of small torch ops, faster on 1 thread

    parameters = {"fake_user_fraction": Param(0.03, check.fraction),
                  "filler_items": Param(None, check.integer, optional=True)}

    def targets(self, context: AttackContext) -> np.ndarray:
        """The seed's target items, sorted and distinct; ValueError when there are none."""
        n_items = context.split.train.n_items
        targets = np.unique(np.asarray(context.targets, dtype=np.int64))
        if targets.size == 0 or targets[0] < 0 or targets[-1] >= n_items:
            raise ValueError(f"the {self.name} attack needs target item ids in [0, {n_items}): got "
                             f"{targets.tolist()}; draw them with benchmark.core.targets.choose_targets")
        return targets

    repeats_targets = False   # a recipe whose sequences hold a target more than once (fake_sequences)

    @staticmethod
    def profile_length(fillers: int, n_targets: int, selected: int = 0) -> int:
        """Rows per fake profile: its fillers, selected items and every target once."""
        return fillers + n_targets + selected

    def n_fake(self, split: Split) -> int:
        return max(1, round(self.fake_user_fraction * split.n_real_users))

    def fillers(self, split: Split) -> int:
        """Fillers per profile: the parameter, else the mean real train profile length."""
        real = np.count_nonzero(split.train.users < split.n_real_users)
        return self.filler_items or max(1, round(real / split.n_real_users))

    @staticmethod
    def allowed_fillers(split: Split, targets: np.ndarray, fillers: int) -> np.ndarray:
        """Which items a filler may be (bool per item): rated by a real user in train and not a
        target. ValueError when fewer than ``fillers`` items qualify."""
        train = split.train
        allowed = np.bincount(train.items[train.users < split.n_real_users], minlength=train.n_items) > 0
        allowed[targets] = False
        if fillers > allowed.sum():
            raise ValueError(f"filler_items={fillers} exceeds the {int(allowed.sum())} rated items "
                             f"left besides the targets: lower filler_items")
        return allowed

    @abstractmethod
    def profiles(self, context: AttackContext, targets: np.ndarray, n_fake: int, fillers: int,
                 rng: np.random.Generator) -> Profiles:
        """The fake users' items (targets included) and ratings."""

    def _poison(self, context, rng):
        split, train = context.split, context.split.train
        targets = self.targets(context)
        n_fake, fillers = self.n_fake(split), self.fillers(split)
        with _threads(1 if self.single_thread else None):
            made = self.profiles(context, targets, n_fake, fillers, rng)
        rows = [np.asarray(r, np.int64) for r in made.items]
        users = np.repeat(np.arange(train.n_users, train.n_users + n_fake), [len(r) for r in rows])
        items = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        ratings = (np.full(items.size, train.ratings.max(), np.float32) if made.ratings is None
                   else np.concatenate([np.asarray(r, np.float32) for r in made.ratings]))
        fake = Interactions.build(users, items, ratings, train.n_users + n_fake, train.n_items,
                                  profile_times(train, [len(r) for r in rows]))
        budget = {"fake_user_fraction": self.fake_user_fraction, "fake_users": n_fake,
                  "filler_items": fillers, **made.budget, "targets": int(targets.size)}
        return PoisonResult(train.concat(fake), budget, len(fake), n_fake)


def profile_times(train: Interactions, lengths) -> np.ndarray | None:
    """Timestamps for injected profiles of these lengths on a timed table (None on an untimed
    one): each profile's items one second apart in the order given, after the table's last
    time, so that a sequential model reads a fake user's sequence as the attack wrote it."""
    if train.timestamps is None:
        return None
    start = np.nanmax(train.timestamps) + 1 if len(train) and not np.isnan(train.timestamps).all() else 0.0
    lengths = np.asarray(lengths, dtype=np.int64)
    return start + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))


@contextmanager
def _threads(n: int | None):
    """Run the block on ``n`` torch threads (None: leave them), restoring the count after."""
    if n is None:
        yield
        return
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
