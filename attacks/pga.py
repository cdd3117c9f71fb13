"""PGA: projected gradient ascent data poisoning of factorisation-based collaborative filtering.

Paper: Bo Li, Yining Wang, Aarti Singh, Yevgeniy Vorobeychik, "Data Poisoning Attacks on
Factorization-Based Collaborative Filtering", NeurIPS 2016. Adapted to implicit feedback and to
target promotion as in Fang et al. (ACSAC 2018) and Tang, Wen and Wang, "Revisiting
Adversarially Learned Injection Attacks in Recommender Systems" (NeurIPS 2020).

The attacker injects ``m`` fake users whose profile matrix ``X`` (m x items) is the optimisation
variable. A surrogate matrix-factorisation model is trained on the real train rows plus ``X``;
the attacker's objective is a differentiable surrogate of the targets' hit ratio: for every real
user ``u`` who has not interacted with target ``t``,
``log sigmoid((s_ut - theta_u) / tau)`` where ``s_ut`` is the surrogate's score and ``theta_u``
the score of ``u``'s ``top_k``-th unseen non-target item (the rank a target must beat to be
recommended). Each outer iteration takes the gradient of that objective with respect to ``X``,
steps up it and projects back onto the feasible set ``{0 <= x <= 1, sum_i x_ui = filler_items}``
(targets are fixed at 1 and are not part of ``X``). The discrete profiles (top ``filler_items``
entries of each row, plus all targets) are scored with the surrogate after every step, and the
best ones seen, the random start included, are returned.

Deviations from the paper, as is common in later work:
- implicit feedback (binary interactions, target promotion) instead of explicit ratings and
  availability / integrity utilities;
- the gradient through the surrogate's training is taken by automatic differentiation through
  ``unroll_steps`` closed-form ALS sweeps warm-started from the clean model's item factors
  (``attacks.surrogate``), instead of the paper's KKT-based derivation at the ALS fixed point;
- the projection keeps the filler budget exactly (a capped-simplex projection, per fake user),
  and the final profiles are discretised by keeping the top ``filler_items`` entries.

Arguments: ``fake_user_fraction`` (fake users as a fraction of real users, count
``max(1, round(f * n_real_users))``), ``filler_items`` (fillers per fake profile, default the
mean real train profile length), ``dim`` (surrogate factors), ``reg`` (ridge lambda),
``iterations`` (outer PGA iterations), ``step_size`` (ascent step, in units of the largest
entry of the normalised gradient), ``unroll_steps``, ``pretrain_steps`` (ALS sweeps of the clean
surrogate), ``top_k`` (the rank the objective pushes targets above).

Example::

    attack = PGA(fake_user_fraction=0.05)
    result = attack.poison(AttackContext(split=split, targets=targets), seed=0)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from attacks.base import (AttackContext, PoisoningAttack, PoisonResult, check_fraction,
                          check_positive_int, register)
from attacks.surrogate import als_steps, dense_matrix, fit_als
from benchmark.data import Interactions


def _check_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def project_capped_simplex(Y: torch.Tensor, total: float, allowed: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """Euclidean projection of each row of ``Y`` onto ``{0 <= x <= 1, sum x = total}`` over the
    ``allowed`` entries (others are set to 0): ``x = clip(y - tau, 0, 1)`` with ``tau`` found by
    bisection, per row, vectorised."""
    low = torch.where(allowed, Y, torch.full_like(Y, float("inf"))).amin(dim=1, keepdim=True) - 1.0
    Y = torch.where(allowed, Y, torch.full_like(Y, -1e9))
    high = Y.amax(dim=1, keepdim=True)
    for _ in range(iters):
        tau = (low + high) / 2
        mass = (Y - tau).clamp(0.0, 1.0).sum(dim=1, keepdim=True)
        low = torch.where(mass > total, tau, low)
        high = torch.where(mass > total, high, tau)
    return ((Y - (low + high) / 2).clamp(0.0, 1.0)) * allowed


def discretise(X: torch.Tensor, fillers: int) -> torch.Tensor:
    """Keep the ``fillers`` largest entries per row as 1, the rest 0."""
    top = torch.topk(X, fillers, dim=1).indices
    return torch.zeros_like(X).scatter_(1, top, 1.0)


@register
class PGA(PoisoningAttack):
    name = "pga"
    family = "learned"
    paper = ("Li, Wang, Singh, Vorobeychik. Data Poisoning Attacks on Factorization-Based "
             "Collaborative Filtering. NeurIPS 2016")
    default_sweep = (0.01, 0.03, 0.05)
    budget_param = "fake_user_fraction"
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "dim": 8, "iterations": 3,
                   "unroll_steps": 1, "pretrain_steps": 5, "top_k": 10}
    invalid_params = [{"fake_user_fraction": 0}, {"fake_user_fraction": 1.5},
                      {"fake_user_fraction": "a"}, {"filler_items": 0}, {"filler_items": 2.5},
                      {"dim": 0}, {"reg": -1.0}, {"reg": float("nan")}, {"iterations": 0},
                      {"step_size": 0}, {"unroll_steps": 0}, {"pretrain_steps": 0},
                      {"top_k": 0}, {"temperature": 0}]

    def __init__(self, fake_user_fraction: float = 0.05, filler_items: int | None = None,
                 dim: int = 64, reg: float = 1.0, iterations: int = 8, step_size: float = 0.5,
                 unroll_steps: int = 2, pretrain_steps: int = 15, top_k: int = 50,
                 temperature: float = 1.0):
        super().__init__(fake_user_fraction=fake_user_fraction, filler_items=filler_items, dim=dim,
                         reg=reg, iterations=iterations, step_size=step_size,
                         unroll_steps=unroll_steps, pretrain_steps=pretrain_steps, top_k=top_k,
                         temperature=temperature)
        self.fake_user_fraction = check_fraction("fake_user_fraction", fake_user_fraction)
        self.filler_items = check_positive_int("filler_items", filler_items, allow_none=True)
        self.dim = check_positive_int("dim", dim)
        self.reg = _check_positive_float("reg", reg)
        self.iterations = check_positive_int("iterations", iterations)
        self.step_size = _check_positive_float("step_size", step_size)
        self.unroll_steps = check_positive_int("unroll_steps", unroll_steps)
        self.pretrain_steps = check_positive_int("pretrain_steps", pretrain_steps)
        self.top_k = check_positive_int("top_k", top_k)
        self.temperature = _check_positive_float("temperature", temperature)

    # -- the objective ---------------------------------------------------------------------
    def _objective(self, R_real, X, target_rows, V0, eligible, unseen, target_mask):
        """Mean log-sigmoid margin of target scores over each real user's top-k threshold."""
        R = torch.cat([R_real, X + target_rows], dim=0)
        U, V = als_steps(R, V0, self.reg, self.unroll_steps)
        scores = U[: R_real.shape[0]] @ V.T
        with torch.no_grad():
            others = scores.masked_fill(~unseen | target_mask, float("-inf"))
            k = min(self.top_k, int(others.shape[1]) - 1)
            theta = torch.topk(others, max(k, 1), dim=1).values[:, -1:]
            theta = torch.where(torch.isfinite(theta), theta, torch.zeros_like(theta))
            scale = scores.std().clamp(min=1e-8) * self.temperature
        margin = (scores[:, target_mask] - theta) / scale
        return (F.logsigmoid(margin) * eligible).sum() / eligible.sum().clamp(min=1.0)

    # -- the attack ------------------------------------------------------------------------
    def _poison(self, context: AttackContext, rng: np.random.Generator) -> PoisonResult:
        split, train = context.split, context.split.train
        targets = np.unique(np.asarray(context.targets, dtype=np.int64))
        if targets.size == 0:
            raise ValueError("pga promotes target items: the attack context has no targets")
        n_real = int(split.n_real_users or train.n_users)
        n_items = train.n_items
        n_fake = max(1, int(round(self.fake_user_fraction * n_real)))
        mean_len = len(train) / max(1, n_real)
        fillers = self.filler_items if self.filler_items is not None else max(1, int(round(mean_len)))
        fillers = min(fillers, n_items - targets.size)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))

        real = train.users < n_real
        R_real = dense_matrix(train.users[real], train.items[real], n_real, n_items)
        target_mask = torch.zeros(n_items, dtype=torch.bool)
        target_mask[torch.as_tensor(targets)] = True
        target_rows = target_mask.float().expand(n_fake, n_items)
        allowed = (~target_mask).expand(n_fake, n_items)
        unseen = R_real == 0
        eligible = unseen[:, target_mask].float()

        if fillers > 0:
            # Random start, as the random shilling attack: uniform fillers among non-targets.
            noise = torch.rand(n_fake, n_items, generator=generator).masked_fill(target_mask, -1.0)
            X = discretise(noise, fillers)
            _, V0 = fit_als(R_real, self.dim, self.reg, self.pretrain_steps, generator)
            with torch.no_grad():
                best_value = float(self._objective(R_real, X, target_rows, V0, eligible, unseen, target_mask))
            best = X.clone()
            for _ in range(self.iterations):
                X = X.detach().requires_grad_(True)
                value = self._objective(R_real, X, target_rows, V0, eligible, unseen, target_mask)
                (grad,) = torch.autograd.grad(value, X)
                grad = grad.masked_fill(target_mask, 0.0)
                grad = grad / grad.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
                X = project_capped_simplex(X.detach() + self.step_size * grad, float(fillers), allowed)
                candidate = discretise(X.masked_fill(target_mask, -1.0), fillers)
                with torch.no_grad():
                    value = float(self._objective(R_real, candidate, target_rows, V0, eligible,
                                                  unseen, target_mask))
                if value > best_value:
                    best_value, best = value, candidate
            profiles = best + target_rows
        else:
            profiles = target_rows.clone()

        fake_local, items = np.nonzero(profiles.numpy() > 0.5)
        rating = float(train.ratings.max()) if len(train) else 1.0
        fake = Interactions.build(fake_local + n_real, items, np.full(items.size, rating, np.float32),
                                  n_real + n_fake, n_items)
        poisoned = train.concat(fake)
        return PoisonResult(train=poisoned,
                            budget={"fake_user_fraction": self.fake_user_fraction, "fake_users": n_fake,
                                    "filler_items": int(fillers), "targets": int(targets.size)},
                            injected_interactions=len(fake), n_fake_users=n_fake)
