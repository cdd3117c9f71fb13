"""PGA: projected gradient ascent data poisoning of factorisation-based collaborative filtering.

Paper: Bo Li, Yining Wang, Aarti Singh, Yevgeniy Vorobeychik, "Data Poisoning Attacks on
Factorization-Based Collaborative Filtering", NeurIPS 2016. Adapted to implicit feedback and
target promotion as later work does (Fang et al., ACSAC 2018; Tang, Wen and Wang, "Revisiting
Adversarially Learned Injection Attacks in Recommender Systems", NeurIPS 2020).

The attacker injects ``m`` fake users whose profile matrix ``X`` (m x items, relaxed to [0, 1])
is the optimisation variable. A surrogate matrix-factorisation model is refitted on the real
train rows plus the fake profiles, and the attacker maximises a differentiable surrogate of the
targets' hit ratio: the mean, over real users ``u`` and targets ``t`` with ``t`` not in ``u``'s
train profile, of ``log sigmoid((s_ut - theta_u) / tau)``, ``s_ut`` the surrogate's score and
``theta_u`` the score of ``u``'s ``top_k``-th unseen non-target item (the score a target must
beat to be recommended; a CW-style margin). Each outer iteration takes the gradient of the
objective with respect to the fake profiles *through the surrogate's training* (KKT conditions
of the refit, implicit function theorem, as in the paper; ``attacks.surrogate``), takes a step
up it and projects back onto the feasible set ``{0 <= x <= 1, sum_i x_fi = filler_items}`` per
fake user (targets are always in every profile and are not part of ``X``). The discretised
profiles (the top ``filler_items`` entries of each row, plus all targets) are scored after every
step (each on that iteration's refit) and the best ones seen, the random start included, are
returned.

Deviations from the paper:
- implicit feedback and target promotion, not explicit ratings and availability / integrity
  utilities; the start is random fake profiles, as in the random shilling attack;
- the surrogate is BPR-MF (the victims' family) instead of the paper's alternating least
  squares; its refit retrains the fake users', the targets' and (anchored by their real-data
  curvature) the other items' factors, with the real users' factors held at their clean values;
- the gradient is taken at the discretised profiles (the surrogate is refitted on real 0/1
  interactions) and applied to the relaxed ``X`` (a straight-through step);
- each iteration draws a fresh sample of the negative items that stand for BPR's expectation
  over negatives: with one fixed sample the ascent learns that sample's quirks and the profiles
  do not transfer (on ml-100k a victim BPR's target HR@50 was 0 with a fixed sample, 0.009
  with fresh ones).

Adaptive to adversarial training: ``surrogate_apr_eps > 0`` trains the surrogate as the APR
defense trains its victim (plain, then as many epochs with APR's perturbed loss at that eps;
``attacks.surrogate.train_bpr``), so the attacker optimises against a model that was trained
with the defense (the defense's settings are known to it). The refit around the fake profiles
stays plain BPR: its KKT system does not carry the adversarial term (a deviation; the term moves
the clean factors the refit starts from and anchors to, not the refit's curvature).

See ``PGA`` for the arguments. The projection onto the budget set and the discretisation are
in ``attacks.learned``, shared with the other learned attacks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from attacks.base import FakeProfileAttack, Profiles, register
from attacks.learned import discretise, project_capped_simplex
from attacks.surrogate import BPRSurrogate
from benchmark.core import params as check
from benchmark.core.kinds import Family
from benchmark.core.params import Param

PRETRAIN_LR = 0.01
PRETRAIN_BATCH = 8192


class Objective:
    """The attacker's goal on the surrogate: a smooth, CW-style hit ratio of the targets.

    Mean, over real users ``u`` and targets ``t`` with ``t`` not in ``u``'s train profile, of
    ``log sigmoid((s_ut - theta_u) / tau)``: ``theta_u`` is the surrogate score of ``u``'s
    ``top_k``-th unseen non-target item (it moves with the refitted item factors), ``tau`` the
    temperature times the clean scores' standard deviation.
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
        """Objective at target factors ``T`` and item factors ``Q`` (differentiable in both)."""
        others = (self.P @ Q.T).masked_fill(self.excluded, -1e9)
        threshold = torch.topk(others, self.k, dim=1).values[:, -1:]
        margin = (self.P @ T.T - threshold) / self.scale
        return (F.logsigmoid(margin) * self.eligible).sum() / self.eligible.sum().clamp(min=1.0)


@register
class PGA(FakeProfileAttack):
    """PGA data poisoning (Li, Wang, Singh, Vorobeychik. Data Poisoning Attacks on
    Factorization-Based Collaborative Filtering. NeurIPS 2016), implicit-feedback target
    promotion: fake profiles (all targets + learned fillers) found by projected gradient ascent
    on a BPR-MF surrogate's smoothed target hit ratio, from random profiles.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1]; the count is
            ``max(1, round(f * n_real_users))``.
        filler_items: fillers per profile (default: the mean real train profile length).
        dim: surrogate factors.
        reg: ridge on the refitted fake-user and target factors.
        stiffness: multiplier of the real-data curvature that anchors the other items' factors.
        iterations: outer PGA iterations (each refits the surrogate once).
        step_size: ascent step, in units of the largest entry of each fake user's gradient.
        pretrain_epochs: epochs of the clean surrogate's BPR training.
        retrain_steps: L-BFGS iterations of each refit.
        negatives: sampled negative items standing for BPR's expectation (fresh every refit).
        top_k: the rank the objective pushes targets above.
        temperature: the objective's margin scale, in clean score standard deviations.
        surrogate_apr_eps: 0 (default) for a plain surrogate; > 0 to train it with APR at this
            eps (the attack adapted to an adversarially trained victim).

    Example::
        attack = get_attack("pga", fake_user_fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "pga"
    family = Family.LEARNED
    knowledge = "gray-box"
    surrogate = "BPR-MF"
    paper = ("Li, Wang, Singh, Vorobeychik. Data Poisoning Attacks on Factorization-Based "
             "Collaborative Filtering. NeurIPS 2016")
    single_thread = True   # thousands of small ops: extra threads only spin (and the results
                           # would then depend on the thread count)
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "dim": 8, "iterations": 3,
                   "pretrain_epochs": 5, "retrain_steps": 10, "negatives": 16, "top_k": 10}
    invalid_params = [{"fake_user_fraction": 0}, {"fake_user_fraction": 1.5},
                      {"fake_user_fraction": "a"}, {"filler_items": 0}, {"filler_items": 2.5},
                      {"dim": 0}, {"reg": -1.0}, {"reg": float("nan")}, {"stiffness": 0},
                      {"iterations": 0}, {"step_size": 0}, {"step_size": float("inf")},
                      {"pretrain_epochs": 0}, {"retrain_steps": 0}, {"negatives": 0},
                      {"top_k": 0}, {"temperature": 0}, {"temperature": True},
                      {"surrogate_apr_eps": -0.5}, {"surrogate_apr_eps": "big"}]
    parameters = {"dim": Param(64, check.integer), "reg": Param(1.0, check.positive),
                  "stiffness": Param(100.0, check.positive), "iterations": Param(15, check.integer),
                  "step_size": Param(1.0, check.positive), "pretrain_epochs": Param(20, check.integer),
                  "retrain_steps": Param(30, check.integer), "negatives": Param(128, check.integer),
                  "top_k": Param(50, check.integer), "temperature": Param(1.0, check.positive),
                  "surrogate_apr_eps": Param(0.0, check.number, low=0.0)}

    def _derive(self):
        if self.surrogate_apr_eps:
            self.surrogate = f"BPR-MF trained with APR (eps {self.surrogate_apr_eps:g})"

    def fit_surrogate(self, split, targets, generator: torch.Generator):
        """The clean surrogate (trained on real train rows) and the objective on it."""
        train = split.train
        n_real = int(split.n_real_users or train.n_users)
        real = train.users < n_real
        model = BPRSurrogate(train.users[real], train.items[real], n_real, train.n_items, targets,
                             self.dim, self.pretrain_epochs, PRETRAIN_LR, PRETRAIN_BATCH, self.reg,
                             self.negatives, self.stiffness, generator, self.surrogate_apr_eps)
        return model, Objective(model, train, n_real, self.top_k, self.temperature)

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        split, n_items = context.split, context.split.train.n_items
        allowed = torch.as_tensor(self.allowed_fillers(split, targets, fillers))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        chosen = self._start_and_ascend(split, targets, n_fake, n_items, fillers, allowed, generator).numpy() > 0.5
        return Profiles([np.union1d(np.flatnonzero(row), targets) for row in chosen], None)

    def _start_and_ascend(self, split, targets, n_fake, n_items, fillers, allowed, generator):
        """Random start, as the random shilling attack: uniform fillers among the allowed items;
        then the ascent."""
        noise = torch.rand(n_fake, n_items, generator=generator).masked_fill(~allowed, -1.0)
        return self._ascend(split, targets, discretise(noise, fillers), fillers, allowed, generator)

    def _ascend(self, split, targets, X, fillers, allowed, generator):
        """Projected gradient ascent from the discrete filler profiles ``X`` over the ``allowed``
        items; the best filler profiles seen (targets excluded: every profile holds them)."""
        model, objective = self.fit_surrogate(split, targets, generator)
        start = model.start(X.shape[0], generator)
        rows = allowed.expand(X.shape[0], -1)
        D, best, best_value = X, X, -float("inf")
        for iteration in range(self.iterations + 1):
            if iteration:
                model.resample(generator)
            pos = torch.topk(D.masked_fill(~allowed, -1.0), fillers, dim=1).indices
            weight = torch.ones(pos.shape)
            # Always from the same start: the refit is not convex (fake users and targets
            # co-adapt), and a warm start would make the objective depend on the path.
            theta = model.retrain(pos, weight, start, self.retrain_steps)
            variables = [x.clone().requires_grad_(True) for x in theta]
            value = objective(variables[1], variables[2])
            if float(value.detach()) >= best_value:
                best_value, best = float(value.detach()), D
            if iteration == self.iterations:
                break
            grad_theta = torch.autograd.grad(value, variables, allow_unused=True)
            grad_theta = [torch.zeros_like(x) if g is None else g for g, x in zip(grad_theta, theta)]
            grad = model.profile_gradient(pos, weight, theta, grad_theta).masked_fill(~allowed, 0.0)
            grad = grad / grad.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
            X = project_capped_simplex(X + self.step_size * grad, float(fillers), rows)
            D = discretise(X.masked_fill(~allowed, -1.0), fillers)
        return best
