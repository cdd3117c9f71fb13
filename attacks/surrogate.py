"""A surrogate recommender for learned poisoning attacks: BPR matrix factorisation, plus the
gradient of anything computed from the target items' factors with respect to fake profiles.

The clean model is BPR-MF (Rendle et al., UAI 2009: ``p_u . q_i``, pairwise log-sigmoid loss, one
uniformly sampled negative per interaction, Adam), the same family as the victims the attack is
measured against. Fake users then enter by *retraining the parameters they touch*: the fake
users' factors ``U`` and the target items' factors ``T`` are refitted on the expected BPR loss
(every negative averaged, over a fixed uniform sample of ``negatives`` items), all other
factors held at their clean values::

    L(U, T; Y) = sum_f sum_i Y_fi mean_j softplus(s_fj - s_fi)              fake users
               + sum_u 1/n_items sum_{i in u} sum_t softplus(s_ut - s_ui)     targets as negatives
               + sum_{(u, t) in train} mean_j softplus(s_uj - s_ut)           real target positives
               + reg / 2 (|U|^2 + |T|^2)

The real users' negative pressure on the targets is what keeps a promoted item away from them,
and the fake users' co-adaptation with the targets is what lets a target drift into a direction
only the fake users share; both are in ``L``. The gradient of an objective ``O(T)`` with respect to
the fake profile matrix ``Y`` follows from the stationarity (KKT) condition ``grad L = 0`` and the
implicit function theorem, as in Li et al. (NeurIPS 2016)::

    dO/dY = - (d/dY grad_theta L)^T  H^-1  grad_theta O,     theta = (U, T), H = Hessian of L

with ``H^-1 v`` by conjugate gradient on Hessian-vector products (a little damping keeps it
positive definite) and the mixed derivative in closed form.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def train_bpr(users, items, n_users: int, n_items: int, dim: int, epochs: int, lr: float,
              batch: int, generator: torch.Generator):
    """Plain BPR-MF with uniform negative sampling and Adam; returns ``(P, Q)`` (no graph)."""
    users = torch.as_tensor(np.array(users), dtype=torch.long)
    items = torch.as_tensor(np.array(items), dtype=torch.long)
    P = torch.randn(n_users, dim, generator=generator) * (2.0 / (n_users + dim)) ** 0.5
    Q = torch.randn(n_items, dim, generator=generator) * (2.0 / (n_items + dim)) ** 0.5
    P.requires_grad_(True)
    Q.requires_grad_(True)
    optimiser = torch.optim.Adam([P, Q], lr=lr)
    n = users.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            u, i = users[idx], items[idx]
            j = torch.randint(0, n_items, (idx.shape[0],), generator=generator)
            loss = -F.logsigmoid((P[u] * (Q[i] - Q[j])).sum(1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return P.detach(), Q.detach()


class BPRSurrogate:
    """Clean BPR-MF on the real train rows, and the fake-user retraining around it."""

    def __init__(self, users, items, n_users: int, n_items: int, targets, dim: int, epochs: int,
                 lr: float, batch: int, reg: float, negatives: int, generator: torch.Generator):
        self.P, self.Q = train_bpr(users, items, n_users, n_items, dim, epochs, lr, batch, generator)
        self.n_items, self.dim, self.reg = n_items, dim, reg
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        users = torch.as_tensor(np.array(users), dtype=torch.long)
        items = torch.as_tensor(np.array(items), dtype=torch.long)
        is_target = torch.zeros(n_items, dtype=torch.bool)
        is_target[self.targets] = True
        others = torch.nonzero(~is_target).squeeze(1)
        # A fixed uniform sample of non-target negatives (the expectation over j, estimated).
        pick = torch.randperm(others.shape[0], generator=generator)[:negatives]
        self.neg = others[pick]
        self.Qn = self.Q[self.neg]                                    # J x d
        # Real users' clean scores of their own interactions (targets as their negatives).
        keep = ~is_target[items]
        self.real_pos_user = users[keep]
        self.real_pos_score = (self.P[users[keep]] * self.Q[items[keep]]).sum(1)
        # Real interactions with targets (a few at most for unpopular targets).
        position = torch.full((n_items,), -1, dtype=torch.long)
        position[self.targets] = torch.arange(self.targets.shape[0])
        hit = is_target[items]
        self.real_t_user, self.real_t_index = users[hit], position[items[hit]]
        self.real_t_neg = self.P[users[hit]] @ self.Qn.T                # their scores of negatives

    # -- the retraining loss ---------------------------------------------------------------
    def loss(self, U: torch.Tensor, T: torch.Tensor, pos: torch.Tensor, pos_mask: torch.Tensor):
        """``L(U, T)`` for fake profiles given as padded item lists ``pos`` (m x L, targets
        excluded) with validity ``pos_mask``; every fake profile also holds all targets."""
        n = float(self.n_items)
        neg_scores = U @ self.Qn.T                                              # m x J
        filler_scores = torch.einsum("md,mld->ml", U, self.Q[pos])              # m x L
        fake = (F.softplus(neg_scores.unsqueeze(1) - filler_scores.unsqueeze(2)).mean(2)
                * pos_mask).sum()
        target_scores = U @ T.T                                                 # m x t
        fake = fake + F.softplus(neg_scores.unsqueeze(1) - target_scores.unsqueeze(2)).mean(2).sum()
        as_negative = F.softplus((self.P @ T.T)[self.real_pos_user]
                                 - self.real_pos_score.unsqueeze(1)).sum() / n
        real_target = F.softplus(self.real_t_neg - (self.P[self.real_t_user] * T[self.real_t_index])
                                 .sum(1, keepdim=True)).mean(1).sum()
        ridge = 0.5 * self.reg * (U.pow(2).sum() + T.pow(2).sum())
        return fake + as_negative + real_target + ridge

    def retrain(self, pos, pos_mask, U, T, steps: int):
        """Minimise ``L`` over the fake users' and targets' factors from ``(U, T)``: L-BFGS with
        a strong-Wolfe line search, at most ``steps`` iterations (it converges in a few dozen,
        which the implicit gradient below assumes)."""
        U = U.clone().requires_grad_(True)
        T = T.clone().requires_grad_(True)
        optimiser = torch.optim.LBFGS([U, T], lr=1.0, max_iter=steps, history_size=20,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                                      tolerance_change=1e-10)

        def closure():
            optimiser.zero_grad()
            value = self.loss(U, T, pos, pos_mask)
            value.backward()
            return value

        optimiser.step(closure)
        return U.detach(), T.detach()

    # -- the implicit gradient -------------------------------------------------------------
    def profile_gradient(self, pos, pos_mask, U, T, grad_T: torch.Tensor, cg_steps: int = 25,
                         damping: float = 1e-3) -> torch.Tensor:
        """``dO/dY`` (m x n_items) at the retrained ``(U, T)`` given ``grad_T = dO/dT``."""
        U = U.clone().requires_grad_(True)
        T = T.clone().requires_grad_(True)
        gU, gT = torch.autograd.grad(self.loss(U, T, pos, pos_mask), (U, T), create_graph=True)

        def hvp(vU, vT):
            hU, hT = torch.autograd.grad((gU * vU).sum() + (gT * vT).sum(), (U, T), retain_graph=True)
            return hU + damping * vU, hT + damping * vT

        # Conjugate gradient on H (lam_U, lam_T) = (0, grad_T).
        xU, xT = torch.zeros_like(U), torch.zeros_like(T)
        rU, rT = torch.zeros_like(U), grad_T.clone()
        pU, pT = rU.clone(), rT.clone()
        rs = float((rT * rT).sum())
        for _ in range(cg_steps):
            if rs < 1e-20:
                break
            hU, hT = hvp(pU, pT)
            alpha = rs / max(float((pU * hU).sum() + (pT * hT).sum()), 1e-30)
            xU, xT = xU + alpha * pU, xT + alpha * pT
            rU, rT = rU - alpha * hU, rT - alpha * hT
            rs_new = float((rU * rU).sum() + (rT * rT).sum())
            pU, pT = rU + (rs_new / rs) * pU, rT + (rs_new / rs) * pT
            rs = rs_new
        lam = xU.detach()                                                       # m x d
        # Mixed derivative: d/dY_fi of lam_f . dL/dU_f = mean_j sigma(s_fj - s_fi) lam_f.(q_j - q_i)
        U = U.detach()
        all_scores = U @ self.Q.T                                               # m x n
        neg_scores = U @ self.Qn.T                                              # m x J
        lam_all = lam @ self.Q.T                                                # m x n
        lam_neg = lam @ self.Qn.T                                               # m x J
        out = torch.empty_like(all_scores)
        for start in range(0, self.n_items, 256):
            s_i = all_scores[:, start:start + 256].unsqueeze(2)                  # m x c x 1
            sig = torch.sigmoid(neg_scores.unsqueeze(1) - s_i)                   # m x c x J
            out[:, start:start + 256] = ((sig * lam_neg.unsqueeze(1)).mean(2)
                                         - sig.mean(2) * lam_all[:, start:start + 256])
        return -out
