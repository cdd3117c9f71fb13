"""RAPU-R: fake profiles from a surrogate's embeddings, by reversing the learning process.

Paper: Hengtong Zhang, Changxin Tian, Yaliang Li, Lu Su, Nan Yang, Wayne Xin Zhao, Jing Gao,
"Data Poisoning Attack against Recommender System Using Incomplete and Perturbed Data", KDD 2021
(RAPU-G, the bi-level generative attack, and RAPU-R, the "reverse the learning process"
heuristic; only the abstract in the authors' README could be read here). Reference
implementation read: github.com/ChangxinTian/RAPU, ``RAPU_R.py`` (``local_solution``,
``construct_item_pool``, ``construct_fake_data``), ``main_R.py`` (defaults: 100 fillers,
``popularity_base`` 0.1) and ``args/`` (the WMF surrogate: 64 factors, confidence 20).

The algorithm as the reference runs it:

1. a weighted-MF surrogate is trained on the attacker's (implicit) data;
2. the candidate pool is the ``popularity_base`` share (10 %) most popular items;
3. for each target ``t``: ``epsilon`` is the mean embedding of a random 10 % of the users (a
   fresh draw per target), ``p = epsilon + q_t``, and the target's fillers are the
   ``filler_items`` candidates of highest score ``p . q_c``: the items an average user who
   likes ``t`` would have interacted with, so that training on the profile pulls ``t``
   towards the users;
4. fake user ``f`` holds every target and the fillers of target ``f mod n_targets`` (the
   reference: ``f mod 5``, its five targets).

Deviations:
- the surrogate is this project's weighted MF (``attacks.learned.UnrolledWRMF``, no unrolled
  step: full-batch Adam, the RevAdv surrogate's settings) instead of the reference's SGD
  mini-batch WMF (201 epochs, lr 0.01, batch 2048); same factors (64) and confidence (20);
- the reference computes ``torch.mean(item_embedding[t_item], dim=0)`` for a single target id,
  which averages that target's vector into one number (a scalar added to ``epsilon``); the
  paper's intent, the target's embedding ``q_t``, is used here;
- the attacker's data is the train table (this benchmark's gray-box threat model): the
  reference's simulation of incomplete, perturbed data (a random-walk sample of 90 % of the
  interactions with 10 % jumps to false positives) is not reproduced;
- the pool holds at least ``filler_items`` allowed items (rated by a real user, not a
  target): on a small catalogue 10 % can be fewer than the fillers.
"""
from __future__ import annotations

import numpy as np
import torch

from attacks.base import FakeProfileAttack, Profiles, register
from attacks.learned import UnrolledWRMF, wrmf_params
from benchmark.core import params as check
from benchmark.core.kinds import Family
from benchmark.core.params import Param

USER_SHARE = 0.1   # epsilon: the mean embedding of this share of the users (the reference's 0.1)


@register
class RAPUR(FakeProfileAttack):
    """RAPU-R (Zhang, Tian, Li, Su, Yang, Zhao, Gao. Data Poisoning Attack against Recommender
    System Using Incomplete and Perturbed Data. KDD 2021): each target's fillers are the popular
    items a WMF surrogate scores highest for ``mean(random users) + q_target``; fake users take
    the targets in turn.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: fillers per profile (default: the mean real train profile length).
        popularity_base: the share of the most popular items the fillers come from (0.1).
        dim, alpha, weight_decay, learning_rate, train_steps: the WMF surrogate's factors,
            confidence, weight decay, Adam step and full-batch steps.

    Example::
        attack = get_attack("rapu_r", fake_user_fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "rapu_r"
    family = Family.LEARNED
    knowledge = "gray-box"
    surrogate = "WMF"
    paper = ("Zhang, Tian, Li, Su, Yang, Zhao, Gao. Data Poisoning Attack against Recommender "
             "System Using Incomplete and Perturbed Data. KDD 2021")
    single_thread = True
    parameters = {"popularity_base": Param(0.1, check.fraction),
                  **{k: v for k, v in wrmf_params(0).items() if k != "unroll_steps"}}
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "dim": 8, "train_steps": 20,
                   "popularity_base": 0.5}
    invalid_params = ({"fake_user_fraction": 0}, {"fake_user_fraction": 1.5},
                      {"filler_items": 0}, {"filler_items": 2.5}, {"popularity_base": 0},
                      {"popularity_base": 1.5}, {"dim": 0}, {"alpha": 0}, {"train_steps": 0},
                      {"unroll_steps": 1})

    def embeddings(self, split, generator):
        """The surrogate's user and item factors, trained on the real train rows."""
        train, n_real = split.train, split.n_real_users
        real = train.users < n_real
        X = torch.zeros(n_real, train.n_items)
        X[torch.as_tensor(train.users[real]), torch.as_tensor(train.items[real])] = 1.0
        model = UnrolledWRMF(X, 0, self.dim, self.alpha, self.weight_decay, self.learning_rate,
                             self.train_steps, 0, generator)
        with torch.no_grad():
            P, Q = model.train(torch.zeros(0, train.n_items))
        return P, Q

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        split = context.split
        train, n_real = split.train, split.n_real_users
        allowed = self.allowed_fillers(split, targets, fillers)
        counts = np.bincount(train.items[train.users < n_real], minlength=train.n_items)
        popular = np.flatnonzero(allowed)[np.argsort(-counts[allowed], kind="stable")]
        pool = popular[:max(int(train.n_items * self.popularity_base), fillers)]
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        P, Q = self.embeddings(split, generator)
        per_target = []
        for t in targets:
            users = rng.permutation(n_real)[:int(n_real * USER_SHARE)]
            epsilon = P[torch.as_tensor(users)].mean(0) if users.size else P.mean(0)
            score = (Q[torch.as_tensor(pool)] @ (epsilon + Q[int(t)])).numpy()
            per_target.append(pool[np.argsort(-score, kind="stable")[:fillers]])
        rows = [np.concatenate([targets, per_target[f % targets.size]]) for f in range(n_fake)]
        return Profiles(rows, None, {"popular_pool": int(pool.size)})
