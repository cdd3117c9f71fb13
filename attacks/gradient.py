"""Gradient perturbations of a trained model's embeddings: FGSM and PGD (evasion attacks).

FGSM as in APR: He, He, Du, Chua, "Adversarial Personalized Ranking for Recommendation",
SIGIR 2018, eq. (7): delta = eps * g / ||g||, with g the gradient of the training loss
with respect to the embeddings, normalised per embedding row (APR's convention; eps is the
L2 norm of each row's perturbation). PGD as in MSAP (Yuan et al., "Adversarial Collaborative
Neural Network for Robust Recommendation" / Madry et al., ICLR 2018): ``steps`` ascent steps of
size ``step_size * eps`` along g / ||g||, each followed by projection of every row onto the
eps-ball. The loss is the model's own ``calculate_loss`` over the whole train table with uniform
negatives drawn by seed, so the attack is white-box and adaptive (it attacks whatever model is
given, APR-trained ones included). Applies to models with user/item embedding tables; others
(Pop, ItemKNN) are recorded as ``not_applicable``.

Two budget modes (``eps_mode``): ``absolute`` (APR's convention: eps is the L2 norm of each
row's perturbation, whatever the row's size) and ``relative`` (each row's radius is eps times
that row's own L2 norm). Without weight decay the row norms differ by model and defense, so an
absolute eps is a smaller attack on a model with larger embeddings; every gradient record keeps
the attacked model's mean row norm per table (``embedding_norms``) to read it by. RecBole's
padding row 0 is never perturbed or counted.

Example::

    attack = get_attack("pgd", eps=0.5, steps=10)
    with attack.perturbed(built, trainer):   # evaluate inside the block
        ...
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from attacks.base import EvasionAttack, register
from benchmark.core import params as check
from benchmark.core.embeddings import (
    EPS_MODES,
    embedding_tables,
    project_rows,
    reset_caches,
    row_normalise,
    row_radii,
)
from benchmark.core.params import Param
from benchmark.core.training import as_loss


def loss_gradients(model, batches, tables) -> list[torch.Tensor]:
    """Gradient of the summed training loss over ``batches`` w.r.t. each embedding table."""
    grads = [torch.zeros_like(t.weight) for t in tables]
    was_training = model.training
    model.train()
    for batch in batches:
        reset_caches(model)
        loss = as_loss(model.calculate_loss(batch))
        for acc, g in zip(grads, torch.autograd.grad(loss, [t.weight for t in tables])):
            acc += g
    model.train(was_training)
    reset_caches(model)
    return grads


class EmbeddingAttack(EvasionAttack):
    """Perturbations of a model's embedding tables inside a ``with`` block (``deltas``)."""

    budget_param = "eps"
    default_sweep = (0.1, 0.5, 1.0)
    invalid_params = [{"eps": -0.5}, {"eps": 0}, {"eps": "big"}, {"eps_mode": "percent"}]
    test_params: dict = {}
    parameters = {"eps": Param(0.5, check.positive),
                  "eps_mode": Param("absolute", check.choice, options=EPS_MODES)}

    def radii(self, tables) -> list:
        return row_radii(tables, self.eps, self.eps_mode)

    @staticmethod
    def applies_to(model) -> bool:
        return bool(embedding_tables(model))

    def deltas(self, model, batches_fn, tables) -> list[torch.Tensor]:
        raise NotImplementedError

    @contextmanager
    def perturbed(self, model, batches_fn):
        """Within the block the model's embeddings carry the adversarial perturbation.

        ``batches_fn()`` yields the train batches (with negatives) the loss is computed on."""
        tables = embedding_tables(model)
        originals = [t.weight.detach().clone() for t in tables]
        deltas = self.deltas(model, batches_fn, tables)
        try:
            with torch.no_grad():
                for table, original, delta in zip(tables, originals, deltas):
                    table.weight.copy_(original + delta)
            reset_caches(model)
            yield deltas
        finally:
            with torch.no_grad():
                for table, original in zip(tables, originals):
                    table.weight.copy_(original)
            reset_caches(model)


@register
class FGSM(EmbeddingAttack):
    """Fast gradient sign method in APR's L2 form: one step delta = eps * g / ||g|| per row.

    Paper: He et al., SIGIR 2018 (APR), eq. (7); Goodfellow et al., ICLR 2015.
    Args: eps (float > 0): L2 norm of each embedding row's perturbation (``eps_mode:
    absolute``, default) or its ratio to the row's own norm (``eps_mode: relative``).
    """

    name = "fgsm"
    paper = "He et al., Adversarial Personalized Ranking for Recommendation, SIGIR 2018"

    def deltas(self, model, batches_fn, tables):
        grads = loss_gradients(model, batches_fn(), tables)
        return [radius * row_normalise(g) for radius, g in zip(self.radii(tables), grads)]


@register
class PGD(EmbeddingAttack):
    """Projected gradient descent (ascent on the loss) on embeddings, MSAP-style.

    Paper: Madry et al., ICLR 2018; in recommendation, Yuan et al. (MSAP), 2019.
    Args: eps (float > 0): radius of the per-row L2 ball (absolute, or relative to the row's
    norm with ``eps_mode: relative``); steps (int >= 1, default 10); step_size (float in (0, 1],
    default 0.25): each step moves step_size * radius along g/||g||.
    """

    name = "pgd"
    paper = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
    invalid_params = EmbeddingAttack.invalid_params + [{"steps": 0}, {"step_size": 0}, {"step_size": 2}]
    test_params = {"steps": 3}
    parameters = {"steps": Param(10, check.integer), "step_size": Param(0.25, check.fraction)}

    def deltas(self, model, batches_fn, tables):
        originals = [t.weight.detach().clone() for t in tables]
        radii = self.radii(tables)
        deltas = [torch.zeros_like(o) for o in originals]
        try:
            for _ in range(self.steps):
                with torch.no_grad():
                    for table, original, delta in zip(tables, originals, deltas):
                        table.weight.copy_(original + delta)
                grads = loss_gradients(model, batches_fn(), tables)
                deltas = [project_rows(d + self.step_size * r * row_normalise(g), r)
                          for d, g, r in zip(deltas, grads, radii)]
        finally:
            with torch.no_grad():
                for table, original in zip(tables, originals):
                    table.weight.copy_(original)
        return deltas
