"""VAT: vulnerability-aware adversarial training (a training-time defense built on APR).

Paper: Zhang, Cao, Wu, Sun, Shen, Cheng, "Improving the Shortest Plank: Vulnerability-Aware
Adversarial Training for Robust Recommender System", RecSys 2024. Reference implementation read:
github.com/Kaike-Zhang/VAT, ``utls/trainer.py`` (``VATCFTrainer._train_epoch``, ``_get_user_eps``),
``utls/model_config.py`` (``get_VAT_config``) and ``meta_config.py`` (defaults).

A user the model fits well (low training loss) is more likely to absorb what fake users put in
the data, so VAT perturbs such users more. Per mini-batch, as APR (``defenses.adversarial``)::

    L_VAT(theta) = L(theta) + lam * L(theta + delta_adv),
    delta_adv(row) = eps_u * g / ||g||,   eps_u = eps * user_lambda * sigmoid(mean_v L_v / L_u - 1)

with ``L_u`` the user's loss over the batch rows of that user (sum of the per-row losses, as
``_get_user_eps``) and ``mean_v L_v`` its mean over the batch's distinct users. Being a sum,
``L_u`` also grows with how many of the batch's rows are the user's, so at equal fit a user
with more rows in the batch (an active user, on average) gets a smaller eps, as in the reference. A user fitted as
well as the average gets ``eps * user_lambda / 2`` (``eps`` at the default ``user_lambda = 2``);
better-fitted users up to ``eps * user_lambda``, poorly fitted ones towards 0. ``eps_u`` is a
constant (no gradient), as in the reference (``loss.detach()``).

Deviations from the paper and the reference, with reasons:

- Where the perturbation lands (``target``). The reference adds it to the representations the
  score is computed from: for MF the looked-up embeddings, for LightGCN the propagated ones
  (``users_emb, pos_items_emb, neg_items_emb`` returned by its ``forward`` after the layer
  mean). The default ``target: propagated`` does the same: on a graph model (``propagates``:
  RecBole's LightGCN, whose ``forward()`` returns the propagated user and item rows) the delta
  is added to ``forward()``'s output inside the model's own ``calculate_loss`` (``forward`` is
  swapped for the batch and restored; the weights are only trained through the loss), with the
  radii and the fit measured on the propagated rows; on BPR or NeuMF (no propagation) it is the
  embedding tables, exactly as before. ``target: ego`` perturbs the embedding tables also on
  LightGCN (the ego embeddings): there a delta of norm eps moves the propagated rows much less
  (docs/results.md, "VAT and PamaCF on LightGCN").
- Perturbed rows. The reference perturbs each (u, i, j) row's three vectors, scaled by that
  row's user's eps. Here, as APR, one delta per table row (or propagated row): a user row gets
  ``eps_u``; an item row the mean ``eps_u`` of the batch rows that touch the item
  (``APR.per_user_eps``).
- Per-row loss. ``L`` is the model's own ``calculate_loss``; the per-row losses that measure the
  fit are computed from ``model.predict``: BPR's ``softplus(s_j - s_i)`` for pairwise batches
  (exactly the reference's ``_rec_loss``), binary cross-entropy on the predicted probability for
  pointwise ones (NeuMF's loss). They are computed without gradient, in the model's train mode.
- Start. The reference (``get_VAT_config``: ``begin_adv = 5``, epochs counted from 1, ``epoch >=
  begin_adv``) trains 4 plain epochs and switches VAT on at the 5th, in one run with one
  optimiser. That is the default here (``pretrain_epochs = 4``, the same 4 plain epochs, never
  validated or kept). ``pretrain_epochs: null`` starts from the converged plain model instead,
  as APR's paper does (fresh Adam, its own early stopping). Where the reference trains a fixed
  30 epochs without validation, early stopping here keeps the best adversarial epoch.
- The reference's L2 term (``weight_decay * l2_norm_sq``) is left to the model/optimiser, as
  for APR; ``steps > 1`` (PGD inner maximisation, APR's) is an extension, the paper uses one
  step. The paper's full text was not available here: the formula is the reference code's,
  which matches the paper's description (sigmoid of the relative gap between the mean loss and
  the user's loss, scaled by lambda).

Defaults: ``eps = 0.5`` (the reference's MF settings: 0.6 Gowalla, 0.5 Yelp2018, 0.4 MIND;
for LightGCN its ``meta_config.py`` comments 0.3 or 0.4, and its ``model == "LighGCN"`` typo
leaves LightGCN at the command-line default 0.3; APR's 0.5 here, so the two compare at one
budget), ``lam = 1`` (``adv_reg``), ``user_lambda = 2``, ``target = propagated``,
``pretrain_epochs = 4`` (the reference's schedule).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from defenses.adversarial import PerUserEpsAPR
from defenses.base import register


def row_losses(model, batch) -> torch.Tensor:
    """The training loss of each batch row (no gradient): BPR per (u, i, j) or BCE per (u, i, y)."""
    from recbole.data.interaction import Interaction
    with torch.no_grad():
        if model.NEG_ITEM_ID in batch:
            negatives = Interaction({model.USER_ID: batch[model.USER_ID],
                                     model.ITEM_ID: batch[model.NEG_ITEM_ID]})
            return F.softplus(model.predict(negatives) - model.predict(batch))
        probability = model.predict(batch).clamp(1e-7, 1 - 1e-7)
        return F.binary_cross_entropy(probability, batch[getattr(model, "LABEL", "label")].float(),
                                      reduction="none")


def vulnerability(users: torch.Tensor, losses: torch.Tensor, user_lambda: float) -> torch.Tensor:
    """Per row: ``user_lambda * sigmoid(mean_v L_v / L_u - 1)``, L_u the user's summed row losses."""
    distinct, at = torch.unique(users, return_inverse=True)
    per_user = torch.zeros(distinct.shape[0], dtype=losses.dtype, device=losses.device)
    per_user.index_add_(0, at, losses)
    return user_lambda * torch.sigmoid(per_user.mean() / (per_user[at] + 1e-9) - 1)


@register
class VAT(PerUserEpsAPR):
    """Vulnerability-aware adversarial training: APR with a per-user eps from the user's fit.

    Paper: Zhang, Cao, Wu, Sun, Shen, Cheng, "Improving the Shortest Plank: Vulnerability-Aware
    Adversarial Training for Robust Recommender System", RecSys 2024. Loss
    L(theta) + lam * L(theta + delta), each user's perturbation of norm
    eps * user_lambda * sigmoid(mean loss / user's loss - 1): better-fitted users get more.

    Args: eps (float > 0, 0.5), lam (float >= 0, 1.0), user_lambda (float > 0, 2.0),
    target ("propagated": on graph models the propagated representations, as the reference;
    "ego": the embedding tables; the same on BPR/NeuMF), pretrain_epochs (None or int >= 0,
    4: the reference's plain epochs; None: from the converged plain model), steps (int >= 1,
    1), step_size, eps_mode (as APR).

    Example::

        defense = get_defense("vat", eps=0.5, user_lambda=2.0)      # 4 plain epochs, then VAT
        LeanTrainer(built, users, items, settings, seed, defense=defense).fit()
    """

    name = "vat"
    paper = ("Zhang, Cao, Wu, Sun, Shen, Cheng, Improving the Shortest Plank: Vulnerability-Aware "
             "Adversarial Training for Robust Recommender System, RecSys 2024")
    test_params = {"pretrain_epochs": 1}

    def user_scale(self, batch) -> torch.Tensor:
        model = self._loss_call.model
        return vulnerability(batch[model.USER_ID], row_losses(model, batch), self.user_lambda)
