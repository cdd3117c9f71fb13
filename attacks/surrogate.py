"""A surrogate recommender for learned poisoning attacks: BPR matrix factorisation, refitted
around fake profiles, and the gradient of an attacker's objective with respect to those profiles.

The clean model is BPR-MF (Rendle et al., UAI 2009: ``p_u . q_i``, pairwise log-sigmoid loss, one
uniformly sampled negative per interaction, Adam), the same family as the victims the attack is
measured against. Fake users enter by *refitting the parameters they touch*: the fake users'
factors ``U``, the target items' factors ``T`` and the other items' factors ``Q`` minimise the
expected BPR loss (the expectation over negatives estimated on a uniform sample ``S`` of
``negatives`` non-target items) with the real users' factors ``P`` held at their clean values::

    L(U, T, Q; Y) = sum_f sum_i Y_fi mean_{j in S} softplus(s_fj - s_fi)       fake users
                  + sum_u 1/n_items sum_{i in u} sum_t softplus(s_ut - s_ui)   targets as negatives
                  + sum_{(u, t) in train} mean_{j in S} softplus(s_uj - s_ut)  real target positives
                  + sum_i a_i / 2 |q_i - q_i^clean|^2                           real data on items
                  + reg / 2 (|U|^2 + |T|^2)

(``i`` in a fake profile: its fillers and all targets; the real users' own scores ``s_ui`` in
the second line are clean and summarised per user by 16 equal-mass quantiles.)

``a_i`` is ``stiffness`` times the real users' mean diagonal curvature of the expected BPR loss
in ``q_i`` (a quadratic stand-in for the real interactions of item ``i``): popular items barely
move, rarely seen fillers follow the fake users. The real users' negative pressure on the
targets keeps a promoted item away from them, and the fake users co-adapt with the targets and
fillers (a target can drift into a direction only the fake users share); both are in ``L``.
``stiffness`` = 100 was calibrated so that the refit ranks heuristic injection attacks
(random, bandwagon, copied real profiles) in the order a BPR victim trained from scratch does.

The gradient of an objective ``O(T, Q)`` with respect to the fake profile matrix ``Y`` follows
from the stationarity (KKT) condition ``grad L = 0`` and the implicit function theorem, as in
Li et al. (NeurIPS 2016)::

    dO/dY = - (d/dY grad_theta L)^T  H^-1  grad_theta O,     theta = (U, T, Q), H = Hessian of L

with ``H^-1 v`` by conjugate gradient on Hessian-vector products (a little damping keeps it
positive definite) and the mixed derivative in closed form; checked against finite differences.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.embeddings import row_normalise


def train_bpr(users, items, n_users: int, n_items: int, dim: int, epochs: int, lr: float,
              batch: int, generator: torch.Generator, apr_eps: float = 0.0):
    """BPR-MF with uniform negative sampling and Adam; returns ``(P, Q)`` (no graph).

    ``apr_eps > 0`` then trains it on as APR does (He et al., SIGIR 2018; ``defenses.adversarial``,
    which starts from the converged plain model with a fresh Adam): as many epochs again on each
    batch's loss plus the loss at the tables moved by ``apr_eps`` along each row's normalised
    gradient (lam 1, the perturbation held constant)."""
    users = torch.as_tensor(np.array(users), dtype=torch.long)
    items = torch.as_tensor(np.array(items), dtype=torch.long)
    P = torch.randn(n_users, dim, generator=generator) * (2.0 / (n_users + dim)) ** 0.5
    Q = torch.randn(n_items, dim, generator=generator) * (2.0 / (n_items + dim)) ** 0.5
    P.requires_grad_(True)
    Q.requires_grad_(True)
    n = users.shape[0]
    for eps in ([0.0, apr_eps] if apr_eps else [0.0]):
        optimiser = torch.optim.Adam([P, Q], lr=lr)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                u, i = users[idx], items[idx]
                j = torch.randint(0, n_items, (idx.shape[0],), generator=generator)
                loss = bpr_loss(P, Q, u, i, j)
                if eps:
                    grad_p, grad_q = torch.autograd.grad(loss, [P, Q], retain_graph=True)
                    loss = loss + bpr_loss(P + eps * row_normalise(grad_p),
                                           Q + eps * row_normalise(grad_q), u, i, j)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return P.detach(), Q.detach()


def bpr_loss(P, Q, u, i, j) -> torch.Tensor:
    """The mean BPR loss of (user, positive, negative) rows ``u, i, j``."""
    return -F.logsigmoid((P[u] * (Q[i] - Q[j])).sum(1)).mean()


def _quantile_summary(users: torch.Tensor, scores: torch.Tensor, n_users: int, k: int = 16):
    """Each user's scores of its own interactions summarised by at most ``k`` equal-mass
    quantiles (weight = interactions per quantile): sums over a user's interactions of a smooth
    function of the score cost ``k`` terms instead of one per interaction."""
    order = np.lexsort((scores.numpy(), users.numpy()))
    users, scores = users[order], scores[order]
    counts = torch.bincount(users, minlength=n_users)
    starts = torch.cumsum(counts, 0) - counts
    picks = torch.minimum(counts, torch.tensor(k))
    owner = torch.repeat_interleave(torch.arange(n_users), picks)
    rank = torch.arange(owner.shape[0]) - (torch.cumsum(picks, 0) - picks)[owner]
    n = counts[owner]
    at = starts[owner] + torch.div((2 * rank + 1) * n, 2 * picks[owner], rounding_mode="floor")
    return owner, scores[at], n.float() / picks[owner].float()


class BPRSurrogate:
    """Clean BPR-MF on the real train rows, and the fake-user retraining around it."""

    def __init__(self, users, items, n_users: int, n_items: int, targets, dim: int, epochs: int,
                 lr: float, batch: int, reg: float, negatives: int, stiffness: float,
                 generator: torch.Generator, apr_eps: float = 0.0):
        self.P, self.Q = train_bpr(users, items, n_users, n_items, dim, epochs, lr, batch, generator,
                                   apr_eps)
        self.n_items, self.dim, self.reg = n_items, dim, reg
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        users = torch.as_tensor(np.array(users), dtype=torch.long)
        items = torch.as_tensor(np.array(items), dtype=torch.long)
        is_target = torch.zeros(n_items, dtype=torch.bool)
        is_target[self.targets] = True
        self.others = torch.nonzero(~is_target).squeeze(1)
        self.negatives = negatives
        self.resample(generator)
        # Real users' clean scores of their own interactions (targets as their negatives).
        keep = ~is_target[items]
        self.real_pos_user, self.real_pos_score, self.real_pos_weight = _quantile_summary(
            users[keep], (self.P[users[keep]] * self.Q[items[keep]]).sum(1), n_users)
        # Real interactions with targets (a few at most for unpopular targets).
        position = torch.full((n_items,), -1, dtype=torch.long)
        position[self.targets] = torch.arange(self.targets.shape[0])
        hit = is_target[items]
        self.real_t_user, self.real_t_index = users[hit], position[items[hit]]
        self.anchor = stiffness * self._curvature(users, items, generator) + reg

    def resample(self, generator: torch.Generator):
        """Draw a fresh uniform sample of non-target items standing for "every negative"."""
        pick = torch.randperm(self.others.shape[0], generator=generator)[:self.negatives]
        self.neg = self.others[pick]

    def _curvature(self, users, items, generator, rows: int = 8192) -> torch.Tensor:
        """Per item, the mean diagonal curvature of the real users' expected BPR loss in its
        factor: how stiffly the real data hold the item where it is (from its real positives,
        and from being every user's sampled negative, estimated on a sample of rows)."""
        n = self.n_items
        scores = self.P @ self.Q.T
        norm2 = self.P.pow(2).sum(1)
        # As a positive: sum over its rows of mean_k sigma'(s_uk - s_ui) |p_u|^2.
        neg = scores[:, self.neg]
        curv = torch.zeros(n)
        for start in range(0, users.shape[0], 4096):
            u, i = users[start:start + 4096], items[start:start + 4096]
            z = torch.sigmoid(neg[u] - scores[u, i].unsqueeze(1))
            curv.index_add_(0, i, (z * (1 - z)).mean(1) * norm2[u])
        # As a negative: sum over all rows (u, i) of 1/n sigma'(s_uj - s_ui) |p_u|^2.
        sample = torch.randperm(users.shape[0], generator=generator)[:rows]
        weight = users.shape[0] / max(1, sample.shape[0]) / n
        for start in range(0, sample.shape[0], 1024):
            idx = sample[start:start + 1024]
            u, i = users[idx], items[idx]
            z = torch.sigmoid(scores[u] - scores[u, i].unsqueeze(1))
            curv += weight * ((z * (1 - z)) * norm2[u].unsqueeze(1)).sum(0)
        return curv / self.dim

    # -- the retraining loss ---------------------------------------------------------------
    def loss(self, U, T, Q, pos, pos_mask):
        """``L(U, T, Q)`` for fake profiles given as padded item lists ``pos`` (m x L, targets
        excluded) with weights ``pos_mask`` (the relaxed labels); every fake profile also holds
        all targets. ``Q`` are the item factors, anchored to their clean values (the targets'
        rows are unused: ``T`` stands for them)."""
        n = float(self.n_items)
        Qn = Q[self.neg]
        neg_scores = U @ Qn.T                                                   # m x J
        filler_scores = torch.einsum("md,mld->ml", U, Q[pos])                   # m x L
        fake = (F.softplus(neg_scores.unsqueeze(1) - filler_scores.unsqueeze(2)).mean(2)
                * pos_mask).sum()
        target_scores = U @ T.T                                                 # m x t
        fake = fake + F.softplus(neg_scores.unsqueeze(1) - target_scores.unsqueeze(2)).mean(2).sum()
        as_negative = (F.softplus((self.P @ T.T)[self.real_pos_user] - self.real_pos_score.unsqueeze(1))
                       * self.real_pos_weight.unsqueeze(1)).sum() / n
        real_t_neg = self.P[self.real_t_user] @ self.Q[self.neg].T
        real_target = F.softplus(real_t_neg - (self.P[self.real_t_user] * T[self.real_t_index])
                                 .sum(1, keepdim=True)).mean(1).sum()
        anchor = 0.5 * (self.anchor.unsqueeze(1) * (Q - self.Q).pow(2)).sum()
        ridge = 0.5 * self.reg * (U.pow(2).sum() + T.pow(2).sum())
        return fake + as_negative + real_target + anchor + ridge

    def start(self, m: int, generator: torch.Generator):
        """Initial ``(U, T, Q)``: small random fake users, clean items."""
        return (torch.randn(m, self.dim, generator=generator) * 0.05,
                self.Q[self.targets].clone(), self.Q.clone())

    def retrain(self, pos, pos_mask, theta, steps: int):
        """Minimise ``L`` over ``theta = (U, T, Q)`` from ``theta``: L-BFGS with a strong-Wolfe
        line search, at most ``steps`` iterations (which the implicit gradient assumes is close
        to converged). The item factors are optimised as ``Q = Q_clean + Z / sqrt(a)``, which
        turns their anchors into one common curvature (a diagonal preconditioner)."""
        scale = self.anchor.rsqrt().unsqueeze(1)
        U, T, Q = theta
        variables = [U.clone().requires_grad_(True), T.clone().requires_grad_(True),
                     ((Q - self.Q) / scale).requires_grad_(True)]
        optimiser = torch.optim.LBFGS(variables, lr=1.0, max_iter=steps, history_size=20,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                                      tolerance_change=1e-10)

        def closure():
            optimiser.zero_grad()
            value = self.loss(variables[0], variables[1], self.Q + variables[2] * scale, pos, pos_mask)
            value.backward()
            return value

        optimiser.step(closure)
        U, T, Z = (x.detach() for x in variables)
        return U, T, self.Q + Z * scale

    # -- the implicit gradient -------------------------------------------------------------
    def profile_gradient(self, pos, pos_mask, theta, grad_theta, cg_steps: int = 15,
                         damping: float = 1e-3) -> torch.Tensor:
        """``dO/dY`` (m x n_items) at the retrained ``theta`` given ``grad_theta = dO/dtheta``."""
        theta = [x.clone().requires_grad_(True) for x in theta]
        grads = torch.autograd.grad(self.loss(*theta, pos, pos_mask), theta, create_graph=True)

        def hvp(v):
            h = torch.autograd.grad(sum((g * x).sum() for g, x in zip(grads, v)), theta,
                                    retain_graph=True)
            return [a + damping * b for a, b in zip(h, v)]

        def dot(a, b):
            return float(sum((x * y).sum() for x, y in zip(a, b)))

        # Conjugate gradient on H lam = grad_theta.
        x = [torch.zeros_like(t) for t in theta]
        r = [g.clone() for g in grad_theta]
        p = [t.clone() for t in r]
        rs = dot(r, r)
        for _ in range(cg_steps):
            if rs < 1e-24:
                break
            h = hvp(p)
            alpha = rs / max(dot(p, h), 1e-30)
            x = [a + alpha * b for a, b in zip(x, p)]
            r = [a - alpha * b for a, b in zip(r, h)]
            rs_new = dot(r, r)
            p = [a + (rs_new / rs) * b for a, b in zip(r, p)]
            rs = rs_new
        lam_U, lam_Q = x[0].detach(), x[2].detach()
        U, Q = theta[0].detach(), theta[2].detach()
        # Mixed derivative: d/dY_fi of lam . dL/dtheta = mean_j sigma(s_fj - s_fi) (A_fj - A_fi)
        # with A_fk = lam_f . q_k + u_f . lam_k (the fake user's and the item's adjoints).
        scores = U @ Q.T                                                        # m x n
        A = lam_U @ Q.T + U @ lam_Q.T                                           # m x n
        neg_scores, A_neg = scores[:, self.neg], A[:, self.neg]                 # m x J
        out = torch.empty_like(scores)
        for start in range(0, self.n_items, 256):
            sig = torch.sigmoid(neg_scores.unsqueeze(1) - scores[:, start:start + 256].unsqueeze(2))
            out[:, start:start + 256] = ((sig * A_neg.unsqueeze(1)).mean(2)
                                         - sig.mean(2) * A[:, start:start + 256])
        return -out
