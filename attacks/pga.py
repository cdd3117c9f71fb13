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
from attacks.surrogate import BPRSurrogate

PRETRAIN_LR = 0.01
PRETRAIN_BATCH = 8192
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


import os
LINK = os.environ.get("PGA_LINK", "logsigmoid")
GROW = float(os.environ.get("PGA_GROW", "1.0"))
RESET = os.environ.get("PGA_RESET") == "1"


class Objective:
    """The attacker's goal on the surrogate: a smooth hit ratio of the targets.

    Mean, over real users ``u`` and targets ``t`` with ``t`` not in ``u``'s train profile, of
    ``link((s_ut - theta_u) / tau)``: ``theta_u`` is the surrogate score of ``u``'s ``top_k``-th
    unseen non-target item (the score a target must beat to enter the top-k; it moves with the
    retrained item factors), ``tau`` the temperature times the clean scores' standard deviation.
    """

    def __init__(self, surrogate: BPRSurrogate, train, n_real: int, top_k: int, temperature: float):
        real = train.users < n_real
        scores = surrogate.P @ surrogate.Q.T
        seen = torch.zeros(scores.shape, dtype=torch.bool)
        seen[torch.as_tensor(np.array(train.users[real])), torch.as_tensor(np.array(train.items[real]))] = True
        self.excluded = seen.clone()
        self.excluded[:, surrogate.targets] = True
        self.k = max(1, min(top_k, int(scores.shape[1] - surrogate.targets.shape[0])))
        self.scale = float(scores.std().clamp(min=1e-8)) * temperature
        self.eligible = (~seen[:, surrogate.targets]).float()
        self.P = surrogate.P

    def __call__(self, T: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        others = (self.P @ Q.T).masked_fill(self.excluded, -1e9)
        threshold = torch.topk(others, self.k, dim=1).values[:, -1:]
        margin = (self.P @ T.T - threshold) / self.scale
        link = F.logsigmoid if LINK == "logsigmoid" else torch.sigmoid
        return (link(margin) * self.eligible).sum() / self.eligible.sum().clamp(min=1.0)


@register
class PGA(PoisoningAttack):
    name = "pga"
    family = "learned"
    paper = ("Li, Wang, Singh, Vorobeychik. Data Poisoning Attacks on Factorization-Based "
             "Collaborative Filtering. NeurIPS 2016")
    default_sweep = (0.01, 0.03, 0.05)
    budget_param = "fake_user_fraction"
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "dim": 8, "iterations": 3,
                   "pretrain_epochs": 5, "retrain_steps": 10, "negatives": 16, "top_k": 10}
    invalid_params = [{"fake_user_fraction": 0}, {"fake_user_fraction": 1.5},
                      {"fake_user_fraction": "a"}, {"filler_items": 0}, {"filler_items": 2.5},
                      {"dim": 0}, {"reg": -1.0}, {"reg": float("nan")}, {"stiffness": 0}, {"iterations": 0},
                      {"step_size": 0}, {"pretrain_epochs": 0}, {"retrain_steps": 0},
                      {"negatives": 0}, {"top_k": 0}, {"temperature": 0}]

    def __init__(self, fake_user_fraction: float = 0.05, filler_items: int | None = None,
                 dim: int = 64, reg: float = 1.0, stiffness: float = 100.0, iterations: int = 10, step_size: float = 0.2,
                 pretrain_epochs: int = 20, retrain_steps: int = 50, negatives: int = 128,
                 top_k: int = 50, temperature: float = 0.3):
        super().__init__(fake_user_fraction=fake_user_fraction, filler_items=filler_items, dim=dim,
                         reg=reg, stiffness=stiffness, iterations=iterations, step_size=step_size,
                         pretrain_epochs=pretrain_epochs, retrain_steps=retrain_steps,
                         negatives=negatives, top_k=top_k, temperature=temperature)
        self.fake_user_fraction = check_fraction("fake_user_fraction", fake_user_fraction)
        self.filler_items = check_positive_int("filler_items", filler_items, allow_none=True)
        self.dim = check_positive_int("dim", dim)
        self.reg = _check_positive_float("reg", reg)
        self.stiffness = _check_positive_float("stiffness", stiffness)
        self.iterations = check_positive_int("iterations", iterations)
        self.step_size = _check_positive_float("step_size", step_size)
        self.pretrain_epochs = check_positive_int("pretrain_epochs", pretrain_epochs)
        self.retrain_steps = check_positive_int("retrain_steps", retrain_steps)
        self.negatives = check_positive_int("negatives", negatives)
        self.top_k = check_positive_int("top_k", top_k)
        self.temperature = _check_positive_float("temperature", temperature)

    def surrogate(self, split, targets, generator: torch.Generator):
        """The clean surrogate and the objective on it, for ``targets``."""
        train = split.train
        n_real = int(split.n_real_users or train.n_users)
        real = train.users < n_real
        model = BPRSurrogate(train.users[real], train.items[real], n_real, train.n_items, targets,
                             self.dim, self.pretrain_epochs, PRETRAIN_LR, PRETRAIN_BATCH, self.reg,
                             self.negatives, self.stiffness, generator)
        return model, Objective(model, train, n_real, self.top_k, self.temperature)

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
        target_mask = torch.zeros(n_items, dtype=torch.bool)
        target_mask[torch.as_tensor(targets)] = True
        allowed = (~target_mask).expand(n_fake, n_items)

        # Random start, as the random shilling attack: uniform fillers among non-targets.
        noise = torch.rand(n_fake, n_items, generator=generator).masked_fill(target_mask, -1.0)
        X = best = discretise(noise, fillers) if fillers > 0 else torch.zeros(n_fake, n_items)
        if fillers > 0:
            best = self._optimise(split, targets, X, fillers, target_mask, allowed, generator)

        profiles = best.masked_fill(target_mask, 1.0)
        fake_local, items = np.nonzero(profiles.numpy() > 0.5)
        rating = float(train.ratings.max()) if len(train) else 1.0
        fake = Interactions.build(fake_local + n_real, items, np.full(items.size, rating, np.float32),
                                  n_real + n_fake, n_items)
        return PoisonResult(train=train.concat(fake),
                            budget={"fake_user_fraction": self.fake_user_fraction, "fake_users": n_fake,
                                    "filler_items": int(fillers), "targets": int(targets.size)},
                            injected_interactions=len(fake), n_fake_users=n_fake)

    def _optimise(self, split, targets, X, fillers, target_mask, allowed, generator):
        """Projected gradient ascent from the discrete profiles ``X``; the best ones seen.

        The gradient is taken at the discretised profiles (the surrogate is retrained on real
        interactions), the step is applied to the relaxed ``X``; a step that lowers the
        objective is undone and the step size halved (monotone PGA)."""
        model, objective = self.surrogate(split, targets, generator)
        start = model.start(X.shape[0], generator)
        step = self.step_size
        D, best, best_X, best_value = X, X, X, -float("inf")
        grad = None
        for iteration in range(self.iterations + 1):
            pos = torch.topk(D.masked_fill(target_mask, -1.0), fillers, dim=1).indices
            mask = torch.ones(pos.shape)
            # Always from the same start: the retraining is not convex (fake users and targets
            # co-adapt), and a warm start would make the objective depend on the path.
            theta = model.retrain(pos, mask, start, self.retrain_steps)
            variables = [x.clone().requires_grad_(True) for x in theta]
            value = objective(variables[1], variables[2])
            if float(value) >= best_value:
                if iteration > 0:
                    step *= GROW
                best_value, best, best_X = float(value), D, X
                grad_theta = torch.autograd.grad(value, variables, allow_unused=True)
                grad_theta = [torch.zeros_like(x) if g is None else g for g, x in zip(grad_theta, theta)]
                grad = model.profile_gradient(pos, mask, theta, grad_theta).masked_fill(target_mask, 0.0)
                grad = grad / grad.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
            else:
                step = step / 2
            if iteration == self.iterations:
                break
            base = best if RESET else best_X
            X = project_capped_simplex(base + step * grad, float(fillers), allowed)
            D = discretise(X.masked_fill(target_mask, -1.0), fillers)
        return best
