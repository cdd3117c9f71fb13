"""T-CE: truncated loss, a training-time defense against noisy (false-positive) interactions.

Paper: Wang, Feng, He, Nie, Chua, "Denoising Implicit Feedback for Recommendation", WSDM 2021
(Adaptive Denoising Training, "Truncated Loss"). Reference implementation read:
WenjieWWJ/DenoisingRec, ``T_CE/loss.py`` (``loss_function``), ``T_CE/main.py``
(``drop_rate_schedule``, the training loop) and its logs (settings). The paper's full text was
not available here (its abstract was); the schedule formula below is the paper's as recalled and
matches the reference's code.

The observation: noisy positive interactions keep a large loss in the early stage of training,
before the model memorises them. T-CE therefore drops, in every batch, the positive interactions
with the largest loss, with a drop rate that grows linearly with the iteration count ``T``::

    eps(T) = max_drop_rate * min(T / num_gradual, 1)       (paper: eps(T) = min(alpha T, eps_max))

``T`` counts iterations (mini-batches), as in the paper and the reference (``count`` is increased
once per batch; ``num_gradual`` defaults to 30000 there), not epochs.

As implemented, per batch:

1. every row is scored with the model's ``predict`` (no gradient, eval mode: no dropout);
2. pairwise models (BPR, LightGCN: rows are (u, i, j) triples and ``calculate_loss`` is the
   batch mean of the BPR loss -log sigmoid(s_ui - s_uj)): a row's loss is decreasing in the
   margin ``s_ui - s_uj``, so the ``n - int((1 - eps) n)`` triples with the smallest margin
   are the largest-loss ones and are dropped (each triple holds one positive interaction);
   pointwise models (NeuMF, BiasedMF: positives with label 1 and sampled negatives with label
   0, ``calculate_loss`` the batch mean of the BCE): a positive's BCE ``-log sigma(s)`` is
   decreasing in its score, so the ``n_pos - int((1 - eps) n_pos)`` positives with the lowest
   score are dropped; negatives are never dropped (the reference's ``loss * t``);
3. the loss is the model's own ``calculate_loss`` on the kept rows: the mean over the kept
   rows, as the reference's ``BCE(y[ind_update], t[ind_update])``, with the model's own
   regularisers (LightGCN's) included. So any RecBole model trained on (u, i, j) triples or on
   labelled positives and negatives with a loss per row works. Refused with a ``ValueError``:
   traditional models (Pop, ItemKNN), models whose loss is over whole user histories (the
   autoencoders MultiVAE, MultiDAE, RecVAE, MacridVAE, RaCT, CDAE, DiffRec; ENMF) and pointwise
   models trained without sampled negatives.

Start: from scratch (``pretrain_epochs=0``, the default), as in the paper and the reference.
T-CE's signal is the loss of noisy interactions *before* they are memorised; the converged
plain model has already fitted them (that is what early stopping keeps), so truncating from it
would drop whichever interactions are hard for it then, not the noisy ones.
``pretrain_epochs=N`` runs N plain epochs first (the ramp starts at the first T-CE batch);
``None`` starts from the plain model of the grid, for comparison only.

Deviations from the paper and the reference, documented:

- Pairwise models: the paper instantiates T-CE on pointwise BCE only. Here a BPR triple's loss
  decides, so a positive is dropped together with the sampled negative of that triple; with
  ``sample_num > 1`` a positive appears in several triples and each is judged on its own.
- The drop rate is a fraction of the batch's *positive* interactions (T-CE drops large-loss
  positive interactions; the paper's exact denominator could not be checked here). The
  reference keeps ``int((1 - eps) * len(batch))`` rows of the whole batch (positives and
  negatives) with the negatives always kept, so it drops ``eps * len(batch)`` positives: 2 eps
  of them with one negative each.
- At least one positive of a batch is kept (the reference's ``int((1 - eps) n)`` is 0 for a
  last batch of one row, whose mean loss would then be undefined).
- Schedule: ``eps(T) = max_drop_rate * min(T / num_gradual, 1)`` (the paper's formula with
  ``alpha = max_drop_rate / num_gradual``); the reference's ``linspace(0, max, num_gradual)``
  differs by one step. The reference's ``exponent`` (1 in all its runs) is not kept.
- Default ``num_gradual``: 1000 iterations (the reference used 1000 to 30000 on data sets of
  0.4M-1M interactions with batches of 1024). On ml-100k at batch 2048 an epoch is about 39
  iterations, so 1000 is about 25 epochs; pass a smaller value for a faster ramp.
- Model selection: the benchmark's early stopping on validation NDCG@10 (the reference keeps
  the epoch of the lowest T-CE loss on validation); every T-CE epoch is selectable, including
  those before the drop rate reaches its maximum, as in the reference.
- Ranking scores come from an extra ``predict`` call without gradient and in eval mode instead
  of from the training forward pass (so that the model's own ``calculate_loss`` and
  regularisers can be reused): for models with dropout (NeuMF) interactions are ranked by their
  loss without dropout noise (the reference ranks the training pass, with its dropout of 0).

Measured (ml-100k, BPR, seed 0, lr 0.005, patience 5; ``benchmarks/suites/tce_check.yaml``):
test NDCG@10 without / with T-CE: clean 0.277 / 0.265, noise_insert 10% 0.255 / 0.267, 20%
0.255 / 0.265, noise_flip 10% 0.257 / 0.267, 20% 0.242 / 0.257, random profiles 5% 0.270 /
0.264. The 20% largest-loss triples held 44-48% of the injected rows (their share: 17-20%).
A fast ramp (``num_gradual=200``) lowered every cell to 0.21-0.23. APR did better on all cells.

``end_epoch`` returns ``drop_rate`` (the mean scheduled rate over the epoch's T-CE batches)
and ``dropped`` (the fraction of the epoch's positive interactions actually dropped).

Args:
    max_drop_rate (float in [0, 1), default 0.2): eps_max, the final drop rate (reference runs:
        0.05-0.2). 0 is plain training (a control).
    num_gradual (int >= 1, default 1000): iterations over which the drop rate rises from 0.
    pretrain_epochs (None or int >= 0, default 0): plain epochs before T-CE switches on; None
        starts from the converged plain model.

Example::

    defense = get_defense("tce", max_drop_rate=0.2, num_gradual=1000)
    trainer = LeanTrainer(built, users, items, settings, seed, validate=validate, defense=defense)
    trainer.fit()   # history gains "drop_rate" and "dropped"
"""
from __future__ import annotations

import torch

from benchmark.core import params as check
from benchmark.core.embeddings import reset_caches
from benchmark.core.params import Param
from benchmark.core.training import as_loss
from defenses.base import TrainingDefense, register

# RecBole models whose loss reads the batch's users only (whole-history losses), besides the
# autoencoders (``AutoEncoderMixin``: MultiVAE, MultiDAE, RecVAE, MacridVAE, RaCT, CDAE, DiffRec).
USER_LEVEL_LOSSES = ("ENMF",)


@register
class TCE(TrainingDefense):
    """T-CE (Truncated Cross-Entropy): drop the largest-loss positives, at a linearly rising rate.

    Paper: Wang, Feng, He, Nie, Chua, "Denoising Implicit Feedback for Recommendation", WSDM 2021.
    Per batch, the ``eps(T)`` fraction of positive interactions with the largest loss (BPR
    triples for pairwise models, labelled positives for pointwise ones) is left out of the
    model's loss; ``eps(T) = max_drop_rate * min(T / num_gradual, 1)``, T in iterations.

    Args: max_drop_rate (float in [0, 1), 0.2), num_gradual (int >= 1 iterations, 1000),
    pretrain_epochs (None or int >= 0, 0: from scratch as in the paper).

    Example::

        defense = get_defense("tce", max_drop_rate=0.1, num_gradual=500)
        LeanTrainer(built, users, items, settings, seed, defense=defense).fit()
    """

    name = "tce"
    label = "T-CE (pairwise adaptation)"
    paper = ("Wang, Feng, He, Nie, Chua, Denoising Implicit Feedback for Recommendation, "
             "WSDM 2021")
    # Built against natural noise (the paper); injected profiles' random fillers and pushed
    # targets are large-loss positives too, so it is measured on shilling and learned cells as
    # well. It does nothing against an evasion attack on the trained weights.
    applies_to = ("clean", "noise", "shilling", "learned")
    invalid_params = [{"max_drop_rate": -0.1}, {"max_drop_rate": 1}, {"max_drop_rate": "x"},
                      {"max_drop_rate": float("nan")}, {"num_gradual": 0}, {"num_gradual": 10.0},
                      {"num_gradual": True}, {"pretrain_epochs": -1}, {"pretrain_epochs": 0.5}]
    test_params = {"num_gradual": 20}
    parameters = {"max_drop_rate": Param(0.2, check.number, low=0.0, high=1.0, high_open=True),
                  "num_gradual": Param(1000, check.integer),
                  "pretrain_epochs": Param(0, check.integer, optional=True, low=0)}

    def __init__(self, **params):
        super().__init__(**params)
        self._model = None

    def drop_rate(self, iteration: int) -> float:
        """eps(T): 0 at the first T-CE batch, ``max_drop_rate`` from ``num_gradual`` on."""
        return self.max_drop_rate * min(iteration / self.num_gradual, 1.0)

    # -- the defense --------------------------------------------------------------------------
    def unsupported(self, model, trainer) -> str | None:
        from recbole.model.abstract_recommender import AutoEncoderMixin
        from recbole.utils import ModelType
        name = type(model).__name__
        if getattr(model, "type", None) == ModelType.TRADITIONAL:
            return f"T-CE needs a model trained by gradient; {name} is not"
        if isinstance(model, AutoEncoderMixin) or name in USER_LEVEL_LOSSES:
            return (f"T-CE needs a loss per (user, item) row; {name}'s loss is over whole user "
                    f"histories, so there is no interaction to drop")
        if trainer is not None and not trainer.pairwise and not trainer.negatives:
            return f"T-CE needs (u, i, j) triples or labelled negatives; {name} trains without sampled negatives"
        return None

    def start(self, model, trainer) -> None:
        self._model = model
        self._iteration = 0
        self._rate_sum, self._batches, self._positives, self._dropped = 0.0, 0, 0, 0

    def kept_rows(self, model, batch, rate: float) -> tuple[torch.Tensor, int, int]:
        """Indices of the rows to train on, the number of positives and of dropped ones."""
        from recbole.data.interaction import Interaction
        uid, iid = model.USER_ID, model.ITEM_ID
        label = getattr(model, "LABEL", None)
        users, items = batch[uid], batch[iid]
        rows = torch.arange(users.shape[0], device=users.device)
        if model.NEG_ITEM_ID in batch:                                   # pairwise: triples
            positives = rows
            both = Interaction({uid: torch.cat([users, users]),
                                iid: torch.cat([items, batch[model.NEG_ITEM_ID]])})
            score = self._scores(model, both)
            loss_order = score[:rows.shape[0]] - score[rows.shape[0]:]   # margin: small = large loss
        elif label is not None and label in batch:                       # pointwise: labelled
            positives = rows[batch[label] > 0]
            loss_order = self._scores(model, Interaction({uid: users[positives], iid: items[positives]}))
        else:
            raise ValueError(f"T-CE needs (u, i, j) triples or labelled negatives; the batch of "
                             f"{type(model).__name__} has neither")
        n = positives.shape[0]
        n_drop = n - max(int((1.0 - rate) * n), 1) if n else 0   # a short last batch keeps a row
        if n_drop == 0:
            return rows, n, 0
        dropped = positives[torch.argsort(loss_order, stable=True)[:n_drop]]
        keep = torch.ones_like(rows, dtype=torch.bool)
        keep[dropped] = False
        return rows[keep], n, n_drop

    @staticmethod
    def _scores(model, interaction) -> torch.Tensor:
        """``predict`` without gradient in eval mode (no dropout), the model's mode restored."""
        training = model.training
        model.eval()
        reset_caches(model)
        try:
            with torch.no_grad():
                return model.predict(interaction).reshape(-1)
        finally:
            model.train(training)
            reset_caches(model)

    def batch_loss(self, model, batch, epoch: int):
        if self._model is not model:
            self.start(model, None)
        reset_caches(model)
        if epoch < (self.pretrain_epochs or 0):
            return as_loss(model.calculate_loss(batch))
        rate = self.drop_rate(self._iteration)
        self._iteration += 1
        rows, n, n_drop = self.kept_rows(model, batch, rate)
        self._rate_sum += rate
        self._batches += 1
        self._positives += n
        self._dropped += n_drop
        if n_drop:
            from recbole.data.interaction import Interaction
            batch = Interaction({key: value[rows] for key, value in batch.interaction.items()})
        reset_caches(model)
        return as_loss(model.calculate_loss(batch))

    def end_epoch(self, epoch: int) -> dict:
        out = {"drop_rate": self._rate_sum / self._batches if self._batches else 0.0,
               "dropped": self._dropped / self._positives if self._positives else 0.0}
        self._rate_sum, self._batches, self._positives, self._dropped = 0.0, 0, 0, 0
        return out
