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

- Perturbed rows. The reference perturbs the looked-up embeddings of each (u, i, j) row, every
  row's three vectors scaled by the row's user's eps. Here, as APR, the perturbation is on the
  embedding tables, one delta per table row: a user row gets ``eps_u``; an item row the mean
  ``eps_u`` of the batch rows that touch it (``APR.per_user_eps``).
- Embedding scale. ``||p_u||^2`` sums over every user table of the model (BPR: one; NeuMF:
  the GMF and MLP tables, i.e. the squared norm of the concatenated user vector). For LightGCN
  these are the ego embeddings; the reference uses the propagated ones. Both keep the model
  generic (any model with embedding tables).
- Start. The reference switches the adversarial term on after 5 plain epochs (``begin_adv``);
  here, as APR, it starts from the converged plain model by default (``pretrain_epochs=None``)
  or after ``pretrain_epochs`` plain epochs.
- The reference's L2 term is left to the model/optimiser, as for APR; ``steps > 1`` (APR's PGD)
  is an extension. The paper's full text was not available here: the formula is the reference
  code's (a sigmoid of the user's relative embedding scale, scaled by lambda).

Defaults: ``eps = 0.5`` (reference MF: 0.9 Gowalla, 0.5 Yelp2018, 0.8 MIND; APR's 0.5 here, so
they compare at one budget), ``lam = 1`` (``adv_reg``), ``user_lambda = 2``.
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
    pretrain_epochs (None or int >= 0, None), steps (int >= 1, 1), step_size (as APR).

    Example::

        defense = get_defense("pamacf", eps=0.5, user_lambda=2.0)
        LeanTrainer(built, users, items, settings, seed, defense=defense).fit(start_state=plain)
    """

    name = "pamacf"
    paper = ("Zhang, Cao, Wu, Sun, Shen, Cheng, Understanding and Improving Adversarial "
             "Collaborative Filtering for Robust Recommendation, NeurIPS 2024")
    test_params = {"pretrain_epochs": 1}

    def user_scale(self, batch) -> torch.Tensor:
        users = batch[self._loss_call.model.USER_ID]
        rows = torch.cat([table.weight[users] for name, table in zip(self._names, self._tables)
                          if is_user_table(name)], dim=1)
        return magnitude(rows, self.user_lambda)
