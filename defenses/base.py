"""What every defense is, split by kind as in the Adversarial Robustness Toolbox.

- ``DataDefense`` (kind ``detector`` or ``preprocessor``): looks at the (possibly poisoned) train
  table before training and returns a cleaned one, e.g. with flagged fake profiles removed.
- ``TrainingDefense`` (kind ``trainer``): changes how the model is trained (APR, GAN, T-CE) by
  supplying the loss of one batch; the lean trainer in ``benchmark.core.training`` calls it.
- ``InferenceDefense`` (kind ``inference``): changes the trained model's scores before ranking
  (re-ranking, filtering of recommendations); the pipeline wraps the scorer with ``rescore``
  for every evaluation, validation included.

Parameters are declared once per class, ``parameters = {name: Param(default, check)}``
(``benchmark.core.params``), extending the base's; building checks them (``ValueError``) and
records them in ``params``; ``_derive()`` is the hook for checks across parameters and derived
attributes. Defenses are deterministic per seed. Register with ``@register``;
``tests/test_defense_contracts.py`` covers every registered one.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from benchmark.core import params as check
from benchmark.core.data import Interactions, Split
from benchmark.core.kinds import ALL_FAMILIES, Kind
from benchmark.core.params import Param, Parameterised
from benchmark.core.registry import DEFENSES

register = DEFENSES.register


def get_defense(name: str, **params):
    """Build a registered defense by name; unknown names and bad parameters raise ValueError."""
    return DEFENSES.build(name, **params)


class Defense(Parameterised, ABC):
    """Name, kind, paper, the attack families it is meant for, and the built parameters:
    declared in ``parameters`` and checked, filled and recorded in ``params`` by
    ``Parameterised``."""

    name: str = ""
    label: str = ""               # what tables and the report call it, when the name alone misleads
    kind: Kind
    paper: str = ""
    # attack families this defense is meant for; others get status not_applicable
    applies_to: tuple = ALL_FAMILIES
    invalid_params: tuple = ()    # kwargs that must raise ValueError when built (contract tests)
    test_params: dict = {}        # kwargs merged into the defaults in tests (small, fast settings)

    def describe(self) -> dict:
        return {"name": self.name, "kind": str(self.kind), "params": dict(self.params)}


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


# ``pretrain_epochs`` as the trainer defenses declare it (TrainingDefense.pretrain_epochs)
PRETRAIN_EPOCHS = Param(None, check.integer, optional=True, low=0)


class TrainingDefense(Defense):
    """A training-time defense: it supplies the loss of a batch given the model.

    The ``trainer`` that ``unsupported`` and ``start`` get is used through
    ``benchmark.core.training.DefenseTrainer`` only (the train rows, the batches' layout and
    builder, a negative sampler, the seed, the settings); a model's loss as one tensor, also
    with swapped weights, is ``benchmark.core.training.as_loss`` / ``LossCall``."""

    kind = Kind.TRAINER
    # None (the default of APR and GAN): start from the plain model of the same train table and
    # seed, trained to its validation plateau (as APR and IRGAN start), shared with the
    # undefended job of the grid; the defense's own phase then has its own early stopping.
    # N: N plain epochs in the same run before the defense switches on; the trainer neither
    # validates nor selects them, so early stopping never hands back an undefended model.
    pretrain_epochs: int | None = None
    # False: the defense makes its own tensors on the CPU, so its jobs train there whatever
    # ``--device`` says (benchmark.core.device).
    runs_on_device: bool = True
    # Players evaluated besides the recommender (IRGAN's generator), each as a cell variant.
    players: tuple = ()

    @property
    def starts_from_plain(self) -> bool:
        return self.pretrain_epochs is None

    def player_scorer(self, player: str, built, n_items: int):
        """A scorer (``benchmark.core.evaluation.Scorer`` interface) of an extra player."""
        raise KeyError(player)

    def unsupported(self, model, trainer) -> str | None:
        """Why this defense cannot train ``model`` (its cells are then ``not_applicable`` with this
        reason, decided before training), or None; default: any model with embedding tables."""
        from benchmark.core.embeddings import embedding_tables
        if not embedding_tables(model):
            return f"{self.name} needs embedding tables, {type(model).__name__} has none"
        return None

    def start(self, model, trainer) -> None:
        """Called once before training (e.g. to build a generator), ``trainer`` a
        ``DefenseTrainer``; default: nothing."""

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


class InferenceDefense(Defense):
    """A defense at recommendation time: new scores from the model's, before masking and top-k."""

    kind = Kind.INFERENCE

    def fit(self, split: Split, seed: int) -> None:
        """Look at the (possibly poisoned) train table once before scoring; default: nothing."""

    @abstractmethod
    def rescore(self, users: np.ndarray, scores):
        """Scores (len(users), n_items) to rank by, from the model's ``scores`` (a torch tensor)."""


class RescoredScorer:
    """A scorer whose scores pass through an inference defense (``Scorer``'s interface)."""

    def __init__(self, scorer, defense: InferenceDefense):
        self.scorer, self.defense, self.built = scorer, defense, scorer.built

    def batches(self, users):
        for chunk, scores in self.scorer.batches(users):
            yield chunk, self.defense.rescore(chunk, scores)
