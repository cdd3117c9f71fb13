"""PamaCF: personalized-magnitude adversarial collaborative filtering (training-time, on APR).

Paper: Zhang, Cao, Wu, Sun, Shen, Cheng, "Understanding and Improving Adversarial Collaborative
Filtering for Robust Recommendation", NeurIPS 2024. Reference implementation read:
github.com/Kaike-Zhang/PamaCF, ``utls/trainer.py`` (``PamaCFCFTrainer._train_epoch``,
``_get_user_eps``), ``utls/model_config.py`` (``get_PamaCF_config``), ``meta_config.py``.

The paper's bounds on the error reduction of adversarial CF grow with the scale of the user's
embedding, so PamaCF gives users with larger embeddings a larger perturbation. Per mini-batch,
as APR (``defenses.adversarial``)::

    L(theta) + lam * L(theta + delta_adv),
    delta_adv(row) = eps_u * g / ||g||,   eps_u = eps * user_lambda * sigmoid(||p_u||^2 / m - 1)

with ``p_u`` the user's embedding (detached) and ``m`` the mean of ``||p_u||^2`` over the
batch's rows (a user counted once per row, as the reference's ``weight.mean()``). A user of
average scale gets ``eps * user_lambda / 2`` (``eps`` at the default ``user_lambda = 2``).

Deviations from the paper and the reference, with reasons:

- Where the perturbation lands (``target``), as VAT (``defenses/vat.py``): the reference adds
  it to the representations the score uses, for LightGCN the propagated ones, and takes
  ``p_u`` from them (``users_emb.norm(dim=1).pow(2)``). The default ``target: propagated`` does
  the same on graph models (the delta added to ``forward()``'s output within the model's loss,
  ``p_u`` the propagated user row); on BPR and NeuMF it is the embedding tables, as before.
  ``target: ego`` perturbs and measures the ego embeddings of LightGCN.
- Perturbed rows. The reference perturbs each (u, i, j) row's three vectors, scaled by the
  row's user's eps. Here, as APR, one delta per table (or propagated) row: a user row gets
  ``eps_u``; an item row the mean ``eps_u`` of the batch rows that touch it (``APR.per_user_eps``).
- Embedding scale. ``||p_u||^2`` sums over every user table of the model (BPR: one; NeuMF:
  the GMF and MLP tables, i.e. the squared norm of the concatenated user vector); on LightGCN
  the propagated user row (``target: propagated``) or the ego row (``target: ego``).
- Start. The reference (``get_PamaCF_config``: ``begin_adv = 5``, epochs counted from 1)
  trains 4 plain epochs and switches the adversarial term on at the 5th; that is the default
  here (``pretrain_epochs = 4``). ``pretrain_epochs: null`` starts from the converged plain
  model instead (as APR). Early stopping keeps the best adversarial epoch, where the reference
  trains a fixed 30 epochs.
- The reference's L2 term is left to the model/optimiser, as for APR; ``steps > 1`` (APR's PGD)
  is an extension. The paper's full text was not available here: the formula is the reference
  code's (a sigmoid of the user's relative embedding scale, scaled by lambda).

Defaults: ``eps = 0.5`` (reference MF: 0.9 Gowalla, 0.5 Yelp2018, 0.8 MIND; LightGCN: 0.5 in
its ``meta_config.py`` comments, 0.3 in effect through its ``"LighGCN"`` typo; APR's 0.5 here,
so they compare at one budget), ``lam = 1`` (``adv_reg``), ``user_lambda = 2``, ``target =
propagated``, ``pretrain_epochs = 4`` (the reference's schedule).
"""
from __future__ import annotations

import torch

from benchmark.core.embeddings import is_user_table
from defenses.adversarial import PerUserEpsAPR
from defenses.base import register


def magnitude(user_rows: torch.Tensor, user_lambda: float) -> torch.Tensor:
    """Per row: ``user_lambda * sigmoid(||p_u||^2 / mean ||p||^2 - 1)`` (``user_rows``: (n, d))."""
    weight = user_rows.detach().pow(2).sum(dim=1)
    return user_lambda * torch.sigmoid(weight / (weight.mean() + 1e-9) - 1)


@register
class PamaCF(PerUserEpsAPR):
    """Personalized-magnitude adversarial CF: APR with a per-user eps from the embedding scale.

    Paper: Zhang, Cao, Wu, Sun, Shen, Cheng, "Understanding and Improving Adversarial
    Collaborative Filtering for Robust Recommendation", NeurIPS 2024. Loss
    L(theta) + lam * L(theta + delta), each user's perturbation of norm
    eps * user_lambda * sigmoid(||p_u||^2 / mean ||p||^2 - 1): larger users get more.

    Args: eps (float > 0, 0.5), lam (float >= 0, 1.0), user_lambda (float > 0, 2.0),
    target ("propagated" or "ego", as VAT), pretrain_epochs (None or int >= 0, 4: the
    reference's plain epochs; None: from the converged plain model), steps (int >= 1, 1),
    step_size, eps_mode (as APR).

    Example::

        defense = get_defense("pamacf", eps=0.5, user_lambda=2.0)   # 4 plain epochs, then PamaCF
        LeanTrainer(built, users, items, settings, seed, defense=defense).fit()
    """

    name = "pamacf"
    paper = ("Zhang, Cao, Wu, Sun, Shen, Cheng, Understanding and Improving Adversarial "
             "Collaborative Filtering for Robust Recommendation, NeurIPS 2024")
    test_params = {"pretrain_epochs": 1}

    def user_scale(self, batch) -> torch.Tensor:
        users = batch[self._loss_call.model.USER_ID]
        rows = torch.cat([rows[users] for name, rows in zip(self.site_names, self.site_rows())
                          if is_user_table(name)], dim=1)
        return magnitude(rows, self.user_lambda)
