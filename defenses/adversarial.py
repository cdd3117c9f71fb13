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
- Where the perturbation lands (``target``, an extension for graph models). ``ego`` (APR's
  default): the embedding tables, as above. ``propagated`` (VAT's and PamaCF's default, as
  their reference code): on a graph model whose ``forward()`` returns the final user and item
  representations (``propagates``: RecBole's LightGCN), the delta is added to that output
  within the model's own ``calculate_loss`` (``forward`` swapped for the batch, then restored),
  its gradient and radii taken on the propagated rows; on models without propagation it is
  the tables, with the same numbers.
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
    target ("ego" or "propagated", default "ego"): perturb the embedding tables, or a graph
        model's propagated representations (see above).

Example::

    defense = get_defense("apr", eps=0.5, lam=1.0)
    trainer = LeanTrainer(built, users, items, settings, seed, validate=validate, defense=defense)
    trainer.fit(start_state=plain_state)   # history gains "adv_loss"
"""
from __future__ import annotations

import contextlib
import inspect

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

# What the perturbation is added to: the embedding tables, or the representations a graph model
# computes from them and scores with (``propagates``); on other models both are the tables.
TARGETS = ("ego", "propagated")
PROPAGATED_SITES = ("propagated.user.rows", "propagated.item.rows")   # names as is_user_table reads them


def propagates(model) -> bool:
    """Whether the model is a graph model whose ``forward()`` (no arguments) returns the final
    user and item representations its loss and scores use (RecBole's LightGCN, NGCF, NCL ...:
    the ones that cache them as ``restore_user_e`` for evaluation)."""
    if not hasattr(model, "restore_user_e"):
        return False
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


def radii_of(rows, eps: float, eps_mode: str) -> torch.Tensor:
    """A column of each row's radius, as ``row_radii`` for one tensor of rows (no gradient)."""
    if eps_mode == "absolute":
        radius = torch.full((rows.shape[0], 1), eps, dtype=rows.dtype, device=rows.device)
    else:
        radius = eps * rows.detach().norm(dim=1, keepdim=True)
    radius[0] = 0.0
    return radius


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
                      {"eps_mode": "percent"}, {"target": "output"}]
    test_params = {"pretrain_epochs": 1}
    parameters = {"eps": Param(0.5, check.positive), "lam": Param(1.0, check.number, low=0.0),
                  "pretrain_epochs": PRETRAIN_EPOCHS, "steps": Param(1, check.integer),
                  "step_size": Param(None, check.fraction, optional=True),
                  "eps_mode": Param("absolute", check.choice, options=EPS_MODES),
                  "target": Param("ego", check.choice, options=TARGETS)}

    def __init__(self, **params):
        super().__init__(**params)
        self._adv_sum, self._adv_count = 0.0, 0
        self._loss_call = None
        self._propagated, self._outputs = False, None

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
        self._propagated = self.target == "propagated" and propagates(model)
        self._outputs = None

    # -- where the perturbation lands -------------------------------------------------------------
    @property
    def site_names(self) -> list[str]:
        """The perturbed row sets: the tables' parameter names (``model.user_embedding.weight``),
        or (``target: propagated`` on a graph model) the propagated user and item rows."""
        return list(PROPAGATED_SITES) if self._propagated else self._names

    def site_rows(self) -> list[torch.Tensor]:
        """The perturbed rows as they are now, without gradient: the tables' weights, or the
        model's propagated user and item representations (those of this batch's clean loss)."""
        if not self._propagated:
            return [t.weight.detach() for t in self._tables]
        outputs = self._outputs if self._outputs is not None else self._propagation(grad=False)
        return [outputs[0].detach(), outputs[1].detach()]

    def _propagation(self, grad: bool) -> tuple:
        """The model's own ``forward()`` (its class's, never a patch): (user rows, item rows,
        anything else it returns)."""
        model = self._loss_call.model
        with torch.set_grad_enabled(grad):
            outputs = type(model).forward(model)
        sizes = [t.num_embeddings for t in self._tables]
        if not (isinstance(outputs, tuple) and len(outputs) >= 2
                and [outputs[0].shape[0], outputs[1].shape[0]] == [sizes[0], sizes[-1]]):
            raise ValueError(f"{type(model).__name__}.forward() does not return user and item rows: "
                             f"use target: ego")
        return outputs

    @contextlib.contextmanager
    def _forward(self, base=None, deltas=None, capture=None):
        """Within the block, ``model.forward()`` returns ``base`` (None: the model's propagation)
        with ``deltas`` added to its user and item rows; ``capture`` (a list) gets what the
        model's propagation returned. The model's own ``forward`` is back after the block."""
        model = self._loss_call.model
        own = "forward" in vars(model)
        previous = vars(model).get("forward")

        def forward(*args, **kwargs):
            outputs = self._propagation(grad=torch.is_grad_enabled()) if base is None else base
            if capture is not None:
                capture.append(outputs)
            if deltas is None:
                return outputs
            return (outputs[0] + deltas[0], outputs[1] + deltas[1], *outputs[2:])

        model.forward = forward
        try:
            yield
        finally:
            if own:
                model.forward = previous
            else:
                del model.forward

    def _detached_outputs(self) -> tuple:
        outputs = self._outputs if self._outputs is not None else self._propagation(grad=False)
        return tuple(o.detach() if torch.is_tensor(o) else o for o in outputs)

    def perturbed_loss(self, batch, deltas) -> torch.Tensor:
        """L(theta + delta) with delta constant: the gradient reaches theta only."""
        if self._propagated:   # delta on the propagated rows; the gradient reaches theta through them
            reset_caches(self._loss_call.model)
            with self._forward(base=self._outputs, deltas=[d.detach() for d in deltas]):
                loss = self._loss_call(batch)
            reset_caches(self._loss_call.model)
            return loss
        weights = {name: table.weight + delta.detach()
                   for name, table, delta in zip(self._names, self._tables, deltas)}
        reset_caches(self._loss_call.model)
        loss = functional_call(self._loss_call, weights, (batch,), strict=False)
        reset_caches(self._loss_call.model)
        return loss

    def row_eps(self, batch) -> list:
        """The perturbation radius of each perturbed row (``row_radii``; ``target: propagated``:
        relative radii from the propagated rows' norms). VAT and PamaCF override this with radii
        scaled per user."""
        if self._propagated:
            return [radii_of(rows, self.eps, self.eps_mode) for rows in self.site_rows()]
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
        rows = self.site_rows()
        bases = [radii_of(r, self.eps, self.eps_mode) for r in rows]
        for name, table, base in zip(self.site_names, rows, bases):
            is_user = is_user_table(name)
            ids = users if is_user else torch.cat(items)
            factors = (scale if is_user else scale.repeat(len(items))).to(table)
            total = torch.zeros(table.shape[0]).to(table).index_add_(0, ids, factors)
            count = torch.zeros_like(total).index_add_(0, ids, torch.ones_like(factors))
            mean = torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))
            radii.append(base * mean.unsqueeze(1))
        return radii

    def adversarial_deltas(self, batch, clean_loss) -> list[torch.Tensor]:
        """FGSM (one step from delta = 0, reusing the clean loss's graph) or PGD; on the
        propagated rows (``target: propagated`` on a graph model) ``_propagated_deltas``."""
        if self._propagated:
            return self._propagated_deltas(batch)
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

    def _propagated_deltas(self, batch) -> list[torch.Tensor]:
        """FGSM or PGD on the propagated user and item rows: the gradient of the model's loss
        with respect to a delta added after the propagation (at the batch's clean propagated
        rows, held constant), normalised per row and scaled by the row's radius."""
        own = self._outputs is None
        if own:   # called outside batch_loss: this model's propagation now, without gradient
            self._outputs = self._propagation(grad=False)
        try:
            base = self._detached_outputs()
            with self._forward(base=base):   # VAT's row losses score with these rows too
                radii = self.row_eps(batch)
            deltas = [torch.zeros_like(rows) for rows in base[:2]]
            for step in range(self.steps):
                deltas = [d.detach().requires_grad_(True) for d in deltas]
                with self._forward(base=base, deltas=deltas):
                    loss = self._loss_call(batch)
                grads = torch.autograd.grad(loss, deltas, allow_unused=True)
                grads = [torch.zeros_like(d) if g is None else g for d, g in zip(deltas, grads)]
                if self.steps == 1:
                    return [r * row_normalise(g) for r, g in zip(radii, grads)]
                deltas = [project_rows(d.detach() + self.step_size * r * row_normalise(g), r)
                          for d, g, r in zip(deltas, grads, radii)]
            return [d.detach() for d in deltas]
        finally:
            reset_caches(self._loss_call.model)
            if own:
                self._outputs = None

    def batch_loss(self, model, batch, epoch: int):
        if self._loss_call is None or self._loss_call.model is not model:
            self.start(model, None)
        self._epoch = epoch
        reset_caches(model)
        if self._propagated:   # keep the clean loss's propagated rows: the adversarial term reuses them
            captured = []
            with self._forward(capture=captured):
                clean = as_loss(model.calculate_loss(batch))
            self._outputs = captured[-1]
        else:
            clean = as_loss(model.calculate_loss(batch))
        try:
            deltas = self.adversarial_deltas(batch, clean)
            if epoch < (self.pretrain_epochs or 0):
                with torch.no_grad():  # diagnostic only: how vulnerable is plain training
                    adv = self.perturbed_loss(batch, deltas)
                self._record(adv)
                return clean
            adv = self.perturbed_loss(batch, deltas)
        finally:
            self._outputs = None
        self._record(adv)
        return clean + self.lam * adv

    def _record(self, adv) -> None:
        self._adv_sum += float(adv.detach())
        self._adv_count += 1

    def end_epoch(self, epoch: int) -> dict:
        mean = self._adv_sum / self._adv_count if self._adv_count else 0.0
        self._adv_sum, self._adv_count = 0.0, 0
        return {"adv_loss": mean}


# VAT's and PamaCF's code switch the adversarial term on at epoch ``begin_adv = 5`` of epochs
# numbered from 1 (``if epoch >= self.begin_adv``): 4 plain epochs, the 5th is adversarial.
REFERENCE_PLAIN_EPOCHS = 4


class PerUserEpsAPR(APR):
    """APR whose perturbation radius is ``eps`` times a factor per user (VAT, PamaCF): a
    subclass defines ``user_scale(batch)``, one factor per batch row, in (0, ``user_lambda``).

    Defaults as the authors' code (github.com/Kaike-Zhang/VAT, .../PamaCF, ``utls/trainer.py``):
    on graph models the perturbation is added to the propagated user and item representations
    the score uses (``target: propagated``; ``target: ego`` perturbs the embedding tables, as
    APR; on models without propagation, BPR and NeuMF, both are the tables), and the adversarial
    term starts after ``REFERENCE_PLAIN_EPOCHS`` plain epochs of the same run (``pretrain_epochs:
    null`` starts from the converged plain model instead, as APR)."""

    invalid_params = APR.invalid_params + [{"user_lambda": 0}, {"user_lambda": -1},
                                           {"user_lambda": "two"}, {"user_lambda": float("nan")}]
    parameters = {"pretrain_epochs": Param(REFERENCE_PLAIN_EPOCHS, check.integer, optional=True, low=0),
                  "target": Param("propagated", check.choice, options=TARGETS),
                  "user_lambda": Param(2.0, check.positive)}

    def __init__(self, **params):
        super().__init__(**params)
        self.last_scale = None

    def unsupported(self, model, trainer) -> str | None:
        """Not on a model without a user embedding table (a sequential model represents a user
        by their history): the radius is set per user."""
        from benchmark.core.embeddings import (
            embedding_tables,
            is_user_table,
            table_names,
        )
        tables = embedding_tables(model)
        if tables and not any(is_user_table(name) for name in table_names(model, tables)):
            return (f"{self.name} sets each user's perturbation radius from that user's embedding, and "
                    f"{type(model).__name__} has no user embedding table")
        return super().unsupported(model, trainer)

    def user_scale(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def row_eps(self, batch) -> list[torch.Tensor]:
        self.last_scale = self.user_scale(batch)
        return self.per_user_eps(batch, self.last_scale)

