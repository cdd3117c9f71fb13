"""A differentiable surrogate recommender for learned poisoning attacks: weighted matrix
factorisation of implicit feedback (WRMF; Hu, Koren and Volinsky, ICDM 2008) fitted by
alternating least squares (ALS).

Loss, with scores ``s_ui = p_u . q_i`` and (possibly relaxed) labels ``y_ui`` in [0, 1]::

    sum_ui c_ui (y_ui - s_ui)^2 + reg (|P|^2 + |Q|^2),     c_ui = y_ui + neg_weight (1 - y_ui)

Observed cells weigh 1 and unobserved ones ``neg_weight`` (the default, the matrix density, gives
the unobserved cells of a user as much weight in total as its interactions, as BPR with one
uniformly sampled negative per positive does). Because the weights depend on the labels, the
fitted factors are a non-linear function of the interaction matrix, unlike unweighted MF.

Every ALS half-step is a batch of closed-form weighted ridge regressions, so a few of them form an
ordinary torch graph that can be differentiated with respect to relaxed fake rows ``Y_fake``.
The clean fit uses the sparse trick of Hu et al. (per-row Gram = shared dense term + a sum over
the row's interactions); fake rows are dense and few.
"""
from __future__ import annotations

import numpy as np
import torch

_CHUNK = 4096


def _sparse_grams(rows: torch.Tensor, cols: torch.Tensor, F: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per row r: sum over its observed columns c of ``F[c] F[c]^T`` (n_rows x d x d)."""
    d = F.shape[1]
    out = torch.zeros(n_rows, d, d, dtype=F.dtype)
    for start in range(0, rows.shape[0], _CHUNK):
        f = F[cols[start:start + _CHUNK]]
        out.index_add_(0, rows[start:start + _CHUNK], f.unsqueeze(2) * f.unsqueeze(1))
    return out


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)


class WRMF:
    """WRMF fitted on a clean binary matrix given as index arrays (``users``, ``items``)."""

    def __init__(self, users, items, n_users: int, n_items: int, dim: int, reg: float,
                 neg_weight: float | None, sweeps: int, generator: torch.Generator):
        self.users = torch.as_tensor(np.asarray(users), dtype=torch.long)
        self.items = torch.as_tensor(np.asarray(items), dtype=torch.long)
        self.n_users, self.n_items, self.dim, self.reg = n_users, n_items, dim, reg
        density = self.users.shape[0] / max(1, n_users * n_items)
        self.w = float(neg_weight) if neg_weight is not None else float(min(1.0, max(density, 1e-4)))
        self.eye = torch.eye(dim)
        self.Q = torch.randn(n_items, dim, generator=generator) * 0.1
        self.P = self.half_step(self.users, self.items, self.Q, n_users)
        for _ in range(sweeps):
            self.Q = self.half_step(self.items, self.users, self.P, n_items)
            self.P = self.half_step(self.users, self.items, self.Q, n_users)

    def half_step(self, rows, cols, F, n_rows):
        """Closed-form row factors given column factors ``F`` for the clean matrix."""
        shared = self.w * (F.T @ F) + self.reg * self.eye
        gram = shared + (1.0 - self.w) * _sparse_grams(rows, cols, F, n_rows)
        rhs = torch.zeros(n_rows, self.dim).index_add_(0, rows, F[cols])
        return _solve(gram, rhs)

    def scores(self) -> torch.Tensor:
        return self.P @ self.Q.T

    def poisoned(self, Y_fake: torch.Tensor, sweeps: int, keep: torch.Tensor | None = None):
        """Refit with fake rows ``Y_fake`` appended (relaxed labels allowed), differentiably.

        Alternates ``sweeps`` times between the fake users' factors and all item factors,
        warm-started from the clean item factors; the real users' factors stay at their clean
        values (only the rows and columns the fake data touch are re-solved). With ``keep``
        (item indices), the last item update solves only those items, which is all an attacker
        scoring a few targets needs. Returns ``(P_fake, Q_items)`` (``Q`` restricted to
        ``keep`` when given).
        """
        w, P = self.w, self.P
        if not hasattr(self, "_item_terms"):   # the real users' part of every item's system
            self._item_terms = (
                w * (P.T @ P) + self.reg * self.eye
                + (1.0 - w) * _sparse_grams(self.items, self.users, P, self.n_items),
                torch.zeros(self.n_items, self.dim).index_add_(0, self.items, P[self.users]))
        item_gram, item_rhs = self._item_terms
        C = w + (1.0 - w) * Y_fake            # confidence of each fake cell
        CY = C * Y_fake
        Q = self.Q
        for sweep in range(sweeps):
            P_fake = _solve(torch.einsum("fi,id,ie->fde", C, Q, Q) + self.reg * self.eye, CY @ Q)
            cols = keep if (keep is not None and sweep == sweeps - 1) else slice(None)
            gram = item_gram[cols] + torch.einsum("fi,fd,fe->ide", C[:, cols], P_fake, P_fake)
            Q = _solve(gram, item_rhs[cols] + CY[:, cols].T @ P_fake)
        return P_fake, Q
