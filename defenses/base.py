"""What every defense is, split by kind as in the Adversarial Robustness Toolbox.

- ``DataDefense`` (kind ``detector`` or ``preprocessor``): looks at the (possibly poisoned) train
  table before training and returns a cleaned one, e.g. with flagged fake profiles removed.
- ``TrainingDefense`` (kind ``trainer``): changes how the model is trained (APR, GAN, T-CE) by
  supplying the loss of one batch; the lean trainer in ``benchmark.training`` calls it.

Parameters are checked when a defense is built (``ValueError``); defenses are deterministic per
seed. Register with ``@register``; ``tests/test_defense_contracts.py`` covers every registered one.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from benchmark.data import Interactions, Split

REGISTRY: dict[str, type] = {}


def register(cls):
    if cls.name in REGISTRY:
        raise ValueError(f"defense name '{cls.name}' registered twice")
    REGISTRY[cls.name] = cls
    return cls


def get_defense(name: str, **params):
    """Build a registered defense by name; unknown names and bad parameters raise ValueError."""
    import defenses  # noqa: F401  (imports every defense module, filling REGISTRY)
    if name not in REGISTRY:
        raise ValueError(f"unknown defense '{name}': choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


class Defense(ABC):
    name: str = ""
    kind: str = ""        # "detector" | "preprocessor" | "trainer"
    paper: str = ""
    # attack families this defense is meant for; others get status not_applicable
    applies_to: tuple = ("clean", "noise", "shilling", "learned", "gradient")

    def __init__(self, **params):
        self.params = params

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "params": dict(self.params)}


@dataclass(frozen=True)
class CleanResult:
    """A cleaned train table and what the data defense did."""

    train: Interactions
    flagged_users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    info: dict = field(default_factory=dict)


class DataDefense(Defense):
    """Template method: ``clean()`` checks the contract, ``_clean()`` does the work."""

    def clean(self, split: Split, seed: int) -> CleanResult:
        train = split.train
        before = (train.users.copy(), train.items.copy())
        result = self._clean(split, np.random.default_rng(seed))
        if not (np.array_equal(before[0], train.users) and np.array_equal(before[1], train.items)):
            raise RuntimeError(f"defense {self.name} mutated its input")
        return result

    @abstractmethod
    def _clean(self, split: Split, rng: np.random.Generator) -> CleanResult:
        """Return the cleaned train table; the split's valid and test must not be read."""


class TrainingDefense(Defense):
    """A training-time defense: it supplies the loss of a batch given the model."""

    kind = "trainer"
    # None (the default of APR and GAN): start from the plain model of the same train table and
    # seed, trained to its validation plateau (as APR and IRGAN start), shared with the
    # undefended job of the grid; the defense's own phase then has its own early stopping.
    # N: N plain epochs in the same run before the defense switches on; the trainer neither
    # validates nor selects them, so early stopping never hands back an undefended model.
    pretrain_epochs: int | None = None
    # Players evaluated besides the recommender (IRGAN's generator), each as a cell variant.
    players: tuple = ()

    @property
    def starts_from_plain(self) -> bool:
        return self.pretrain_epochs is None

    def player_scorer(self, player: str, built, n_items: int):
        """A scorer (``benchmark.evaluation.Scorer`` interface) of an extra player."""
        raise KeyError(player)

    def start(self, model, trainer) -> None:
        """Called once before training (e.g. to build a generator); default: nothing."""

    @abstractmethod
    def batch_loss(self, model, batch, epoch: int):
        """The loss to minimise on one batch (a RecBole Interaction)."""

    def end_epoch(self, epoch: int) -> dict:
        """Per-epoch diagnostics (e.g. both GAN players' losses); default: none."""
        return {}

    def state(self) -> dict:
        """The defense's own weights (IRGAN's generator), kept with the model's best epoch."""
        return {}

    def restore(self, state: dict) -> None:
        """Go back to ``state()`` of the kept epoch; default: nothing to restore."""
