"""APR: adversarial training of a recommender's embeddings (a training-time defense).

Paper: He, He, Du, Chua, "Adversarial Personalized Ranking for Recommendation", SIGIR 2018.
The model minimises, per mini-batch (eq. 9/10 of the paper)::

    L_APR(theta) = L(theta) + lam * L(theta + delta_adv),
    delta_adv    = eps * g / ||g||,   g = dL(theta + delta)/d delta at delta = 0  (eq. 7/11)

with ``L`` the model's own training loss (``calculate_loss``: BPR for BPR and LightGCN, BCE for
NeuMF, ...), ``g`` normalised per embedding row as in the authors' code (``tf.nn.l2_normalize(
grad, 1)``; rows the batch does not touch get no perturbation), and ``delta_adv`` treated as a
constant: the adversarial term's gradient flows to ``theta`` through ``theta + delta``, never to
``delta``. Every user/item embedding table of the model is perturbed (``embedding_tables``:
BPR's two, NeuMF's four, LightGCN's ego embeddings), so any model with embedding tables works.

Choices and deviations from the paper, all documented here:

- Pre-training, as the paper: BPR trained to convergence, then APR. By default
  (``pretrain_epochs=None``) APR starts from the plain model's best state on the same train
  table and seed (the undefended job of the grid, shared, not retrained) and trains with a fresh
  Adam and its own early stopping; the starting state itself is never selected. The authors'
  code restores the pre-trained MF and builds a new optimiser the same way.
  ``pretrain_epochs=N`` instead runs N plain epochs in the same run (same optimiser) before the
  adversarial term switches on (``0``: adversarial from scratch, which the paper reports worse).
- Model selection. Early stopping keeps the best validation epoch of the adversarial phase; a
  pre-training epoch is a plain, undefended model and is never kept (``LeanTrainer``).
- Inner maximisation. ``steps=1`` (default) is the paper's one-step fast gradient. ``steps>1``
  is projected gradient ascent (Madry et al., ICLR 2018): each step moves
  ``step_size * eps`` along the row-normalised gradient at the current ``delta`` and projects
  every row back onto the eps-ball. ``step_size`` defaults to ``min(1, 2.5 / steps)`` (the
  2.5*eps/steps rule of Madry et al.'s code), which makes ``steps=1`` exactly FGSM.
- Radii per row. ``row_eps`` gives every table's rows the radius ``eps`` (``eps_mode:
  absolute``, the paper's) or ``eps`` times the row's own L2 norm at that batch (``eps_mode:
  relative``, as FGSM/PGD's relative mode: an extension, so that one budget means the same on
  models whose rows differ in length, e.g. LightGCN's twice BPR's); VAT and PamaCF
  (``defenses/vat.py``, ``defenses/pamacf.py``) override it with per-user radii
  (``per_user_eps``), FGSM and PGD alike.
- The paper's L2 regulariser on theta is left to the model / optimiser (RecBole's
  ``weight_decay`` and the model's own reg terms), as for plain training.
- Diagnostics: ``end_epoch`` returns ``adv_loss``, the mean unweighted adversarial term
  ``L(theta + delta_adv)`` over the epoch's batches. It is also measured (without gradient)
  during pre-training, so the history shows how vulnerable the plain model was before APR
  switched on and every epoch has a finite value.

Args:
    eps (float > 0, default 0.5): L2 norm of each embedding row's perturbation (paper: 0.5),
        or its ratio to the row's own norm with ``eps_mode: relative``.
    eps_mode ("absolute" or "relative", default "absolute").
    lam (float >= 0, default 1.0): weight of the adversarial term (paper's lambda: 1).
    pretrain_epochs (None or int >= 0, default None): None starts from the converged plain
        model; N runs N plain epochs before APR switches on.
    steps (int >= 1, default 1): inner maximisation steps (1 = FGSM, more = PGD).
    step_size (float in (0, 1] or None): PGD step as a fraction of eps; None = min(1, 2.5/steps).

Example::

    defense = get_defense("apr", eps=0.5, lam=1.0)
    trainer = LeanTrainer(built, users, items, settings, seed, validate=validate, defense=defense)
    trainer.fit(start_state=plain_state)   # history gains "adv_loss"
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from benchmark.core import params as check
from benchmark.core.embeddings import (
    EPS_MODES,
    embedding_tables,
    is_user_table,
    project_rows,
    reset_caches,
    row_normalise,
    row_radii,
    table_names,
)
from benchmark.core.params import Param
from benchmark.core.training import LossCall, as_loss
from defenses.base import PRETRAIN_EPOCHS, TrainingDefense, register


@register
class APR(TrainingDefense):
    """Adversarial Personalized Ranking: train on the loss plus the loss under an FGSM perturbation.

    Paper: He, He, Du, Chua, "Adversarial Personalized Ranking for Recommendation", SIGIR 2018.
    Loss L(theta) + lam * L(theta + eps * g/||g||) per batch (eq. 9-11), from the converged
    plain model (or after ``pretrain_epochs`` plain epochs); ``steps > 1``: PGD for the inner max.

    Args: eps (float > 0, 0.5), lam (float >= 0, 1.0), pretrain_epochs (None or int >= 0, None),
    steps (int >= 1, 1), step_size (fraction of eps in (0, 1], default min(1, 2.5/steps)),
    eps_mode ("absolute", or "relative": eps times each row's norm).

    Example::

        defense = get_defense("apr", eps=0.5)
        LeanTrainer(built, users, items, settings, seed, defense=defense).fit()
    """

    name = "apr"
    paper = "He, He, Du, Chua, Adversarial Personalized Ranking for Recommendation, SIGIR 2018"
    invalid_params = [{"eps": 0}, {"eps": -0.5}, {"eps": "big"}, {"eps": float("nan")},
                      {"lam": -1}, {"lam": "one"}, {"pretrain_epochs": -1}, {"pretrain_epochs": 1.5},
                      {"steps": 0}, {"steps": True}, {"step_size": 0}, {"step_size": 2},
                      {"eps_mode": "percent"}]
    test_params = {"pretrain_epochs": 1}
    parameters = {"eps": Param(0.5, check.positive), "lam": Param(1.0, check.number, low=0.0),
                  "pretrain_epochs": PRETRAIN_EPOCHS, "steps": Param(1, check.integer),
                  "step_size": Param(None, check.fraction, optional=True),
                  "eps_mode": Param("absolute", check.choice, options=EPS_MODES)}

    def __init__(self, **params):
        super().__init__(**params)
        self._adv_sum, self._adv_count = 0.0, 0
        self._loss_call = None

    def _derive(self):
        """``step_size`` not given: ``min(1, 2.5 / steps)``."""
        if self.step_size is None:
            self.step_size = self.params["step_size"] = min(1.0, 2.5 / self.steps)

    # -- the defense --------------------------------------------------------------------------
    def start(self, model, trainer) -> None:
        self._tables = embedding_tables(model)
        if not self._tables:
            raise ValueError(f"APR needs embedding tables; {type(model).__name__} has none")
        self._names = [f"model.{name}" for name in table_names(model, self._tables)]
        self._loss_call = LossCall(model)
        self._adv_sum, self._adv_count = 0.0, 0
        self._epoch = 0

    def perturbed_loss(self, batch, deltas) -> torch.Tensor:
        """L(theta + delta) with delta constant: the gradient reaches theta only."""
        weights = {name: table.weight + delta.detach()
                   for name, table, delta in zip(self._names, self._tables, deltas)}
        reset_caches(self._loss_call.model)
        loss = functional_call(self._loss_call, weights, (batch,), strict=False)
        reset_caches(self._loss_call.model)
        return loss

    def row_eps(self, batch) -> list:
        """The perturbation radius of each table's rows (``attacks.gradient.row_radii``). VAT and
        PamaCF override this with radii scaled per user."""
        return row_radii(self._tables, self.eps, self.eps_mode)

    def per_user_eps(self, batch, scale: torch.Tensor) -> list[torch.Tensor]:
        """Radii ``row_radii * scale`` from a factor per batch row (the row's user's; VAT, PamaCF).

        A user table's row gets its user's factor; an item table's row the mean factor of the
        batch rows that touch the item (positive or negative), the table-level counterpart of
        the per-interaction radii of VAT's and PamaCF's code; untouched rows keep their ``row_radii``."""
        model = self._loss_call.model
        users = batch[model.USER_ID]
        items = [batch[model.ITEM_ID]] + ([batch[model.NEG_ITEM_ID]] if model.NEG_ITEM_ID in batch else [])
        radii = []
        bases = row_radii(self._tables, self.eps, self.eps_mode)
        for name, table, base in zip(self._names, self._tables, bases):
            is_user = is_user_table(name)
            ids = users if is_user else torch.cat(items)
            factors = (scale if is_user else scale.repeat(len(items))).to(table.weight)
            total = torch.zeros(table.num_embeddings).to(table.weight).index_add_(0, ids, factors)
            count = torch.zeros_like(total).index_add_(0, ids, torch.ones_like(factors))
            mean = torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))
            radii.append(base * mean.unsqueeze(1))
        return radii

    def adversarial_deltas(self, batch, clean_loss) -> list[torch.Tensor]:
        """FGSM (one step from delta = 0, reusing the clean loss's graph) or PGD."""
        weights = [t.weight for t in self._tables]
        grads = torch.autograd.grad(clean_loss, weights, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
        radii = self.row_eps(batch)
        if self.steps == 1:
            return [r * row_normalise(g) for r, g in zip(radii, grads)]
        deltas = [project_rows(self.step_size * r * row_normalise(g), r) for r, g in zip(radii, grads)]
        for _ in range(self.steps - 1):
            deltas = [d.detach().requires_grad_(True) for d in deltas]
            weights = {name: table.weight.detach() + d
                       for name, table, d in zip(self._names, self._tables, deltas)}
            reset_caches(self._loss_call.model)
            loss = functional_call(self._loss_call, weights, (batch,), strict=False)
            grads = torch.autograd.grad(loss, deltas, allow_unused=True)
            grads = [torch.zeros_like(d) if g is None else g for d, g in zip(deltas, grads)]
            deltas = [project_rows(d.detach() + self.step_size * r * row_normalise(g), r)
                      for d, g, r in zip(deltas, grads, radii)]
        reset_caches(self._loss_call.model)
        return [d.detach() for d in deltas]

    def batch_loss(self, model, batch, epoch: int):
        if self._loss_call is None or self._loss_call.model is not model:
            self.start(model, None)
        self._epoch = epoch
        reset_caches(model)
        clean = as_loss(model.calculate_loss(batch))
        deltas = self.adversarial_deltas(batch, clean)
        if epoch < (self.pretrain_epochs or 0):
            with torch.no_grad():  # diagnostic only: how vulnerable is plain training
                adv = self.perturbed_loss(batch, deltas)
            self._record(adv)
            return clean
        adv = self.perturbed_loss(batch, deltas)
        self._record(adv)
        return clean + self.lam * adv

    def _record(self, adv) -> None:
        self._adv_sum += float(adv.detach())
        self._adv_count += 1

    def end_epoch(self, epoch: int) -> dict:
        mean = self._adv_sum / self._adv_count if self._adv_count else 0.0
        self._adv_sum, self._adv_count = 0.0, 0
        return {"adv_loss": mean}


class PerUserEpsAPR(APR):
    """APR whose perturbation radius is ``eps`` times a factor per user (VAT, PamaCF): a
    subclass defines ``user_scale(batch)``, one factor per batch row, in (0, ``user_lambda``)."""

    invalid_params = APR.invalid_params + [{"user_lambda": 0}, {"user_lambda": -1},
                                           {"user_lambda": "two"}, {"user_lambda": float("nan")}]
    parameters = {"user_lambda": Param(2.0, check.positive)}

    def __init__(self, **params):
        super().__init__(**params)
        self.last_scale = None

    def user_scale(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def row_eps(self, batch) -> list[torch.Tensor]:
        self.last_scale = self.user_scale(batch)
        return self.per_user_eps(batch, self.last_scale)

