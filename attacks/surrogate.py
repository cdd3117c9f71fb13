"""A differentiable surrogate recommender for learned poisoning attacks: matrix factorisation of
the binary user x item matrix fitted by alternating least squares (ALS).

Every ALS half-step is a closed-form ridge regression, so a short run of it is an ordinary torch
graph and the attacker can take the gradient of anything computed from the factors with respect
to the (relaxed, continuous) interaction matrix itself, i.e. differentiate through training.
Dense and vectorised: a user x item matrix of ml-100k size (about 1k x 1.7k) costs a few
milliseconds per half-step on one core.

The loss is the weighted least squares of implicit-feedback MF (Hu, Koren and Volinsky, ICDM
2008, with a constant confidence ``1 + alpha`` on interactions folded into the matrix):
``sum_ui (r_ui - u_u . v_i)^2 + lam (|U|^2 + |V|^2)`` with every unobserved cell a zero, which
ranks items much as BPR does on the same data (both score items by co-occurrence structure).
"""
from __future__ import annotations

import torch


def ridge_solve(R: torch.Tensor, F: torch.Tensor, lam: float) -> torch.Tensor:
    """Rows of ``X`` minimising ``|R - X F^T|^2 + lam |X|^2``: ``X = R F (F^T F + lam I)^-1``."""
    gram = F.T @ F + lam * torch.eye(F.shape[1], dtype=F.dtype, device=F.device)
    return torch.linalg.solve(gram, (R @ F).T).T


def als_steps(R: torch.Tensor, V: torch.Tensor, lam: float, steps: int):
    """``steps`` ALS sweeps (users, then items) from item factors ``V``; returns ``(U, V)``.

    Differentiable in ``R`` (and ``V``) when they require grad.
    """
    U = ridge_solve(R, V, lam)
    for step in range(steps):
        V = ridge_solve(R.T, U, lam)
        U = ridge_solve(R, V, lam)
    return U, V


def fit_als(R: torch.Tensor, dim: int, lam: float, steps: int, generator: torch.Generator):
    """Fit factors of ``R`` from a seeded random start, without a graph; returns ``(U, V)``."""
    with torch.no_grad():
        V = torch.randn(R.shape[1], dim, generator=generator, dtype=R.dtype) * 0.1
        return als_steps(R, V, lam, steps)


def dense_matrix(users, items, n_users: int, n_items: int, dtype=torch.float32) -> torch.Tensor:
    """Binary dense user x item matrix from index arrays."""
    R = torch.zeros(n_users, n_items, dtype=dtype)
    R[torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)] = 1.0
    return R
