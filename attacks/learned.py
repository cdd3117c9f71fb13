"""What the learned fake-profile attacks share: budget projection and discretisation, AUSH's GAN
and templates, and RevAdv's unrolled WRMF surrogate with its adversarial objective.

- The budget set and its 0/1 profiles (PGA, RevAdv, AUSH, Leg-UP): ``project_capped_simplex``
  projects relaxed filler rows onto ``{0 <= x <= 1, sum x = filler_items}``; ``discretise`` keeps
  the ``filler_items`` largest entries of each row.
- AUSH's GAN (AUSH, Leg-UP; see ``attacks/aush.py`` for the paper, the code read and the
  deviations): ``Templates`` (real profiles the generator augments, and the selected items,
  chosen by ``select_items`` as the authors' ``exp_select``), the
  ``Generator`` and ``Discriminator``, the straight-through top-k ``keep_top``,
  ``discriminator_step``, ``adversarial_loss`` and ``seeded_modules``.
- RevAdv's surrogate (RevAdv, Leg-UP; see ``attacks/revadv.py``): ``UnrolledWRMF``, weighted MF
  trained by full-batch Adam with its last steps differentiable in the fake rows, the
  ``AdversarialObjective`` on its real-user scores, and ``wrmf_params``, the parameters that
  configure it, as both attacks declare them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core import params as check
from benchmark.core.params import Param

SELECT_POOL = 20      # AUSH's selected items are a combination of this many most popular items
TARGET_GROUP = 30     # ... rated in full by at least this many real users holding no target
OBJECTIVES = ("ce", "cw")
BETAS = (0.9, 0.999)   # Adam's moment decays (torch defaults, as the authors')
ADAM_EPS = 1e-8
INIT_STD = 0.1         # the authors' factor initialisation


# -- the budget set ----------------------------------------------------------------------------

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


# -- AUSH's GAN --------------------------------------------------------------------------------

class Generator(nn.Module):
    """The authors' AUSH generator: template (0/1 over items) -> keep-score in (0, 1) per item,
    ``items -> hidden -> items`` with sigmoid activations."""

    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_items, hidden), nn.Sigmoid(), nn.Linear(hidden, n_items),
                                 nn.Sigmoid())

    def forward(self, template: torch.Tensor) -> torch.Tensor:
        return self.net(template)


class Discriminator(nn.Module):
    """The authors' AUSH discriminator: three sigmoid layers of ``hidden`` units, then the
    probability that a profile is real."""

    def __init__(self, n_items: int, hidden: int = 150):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_items, hidden), nn.Sigmoid(), nn.Linear(hidden, hidden),
                                 nn.Sigmoid(), nn.Linear(hidden, hidden), nn.Sigmoid(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, profiles: torch.Tensor) -> torch.Tensor:
        return self.net(profiles).squeeze(1)


def keep_top(scores: torch.Tensor, candidates: torch.Tensor, allowed: torch.Tensor,
             fillers: int) -> torch.Tensor:
    """Straight-through top-k: per row, exactly ``fillers`` ones at the best-scored candidates
    (then the best other allowed items if the candidates are too few), 0 elsewhere; the
    gradient passes to the scores of the allowed items as through the identity. ``scores`` in
    [0, 1]; ``candidates`` and ``allowed`` boolean, ``candidates`` within ``allowed``."""
    rank = (scores.detach() + 2.0 * candidates).masked_fill(~allowed, -1.0)
    hard = discretise(rank, fillers)
    return hard + (scores - scores.detach()) * allowed


def select_items(R: torch.Tensor, counts: torch.Tensor, allowed: torch.Tensor, n_selected: int,
                 group: int, generator: torch.Generator) -> torch.Tensor:
    """AUSH's selected items as the authors' ``exp_select`` (``AUSH/test_main/data_preprocess.py``)
    picks them: the combinations of ``n_selected`` of the ``SELECT_POOL`` most popular allowed
    items, in random order; the first one rated in full by at least ``group`` of the users of
    ``R`` (real users holding no target: the *target group* the paper's selected items stand
    for) wins; failing that, the first one for which ``group`` users rated more than half of it;
    failing that (small data), the one rated in full by the most users. Sorted item ids."""
    if n_selected == 0:
        return torch.zeros(0, dtype=torch.long)
    ids = torch.nonzero(allowed).flatten()
    popular = ids[torch.argsort(-counts[ids], stable=True)][:max(SELECT_POOL, n_selected)]
    combos = torch.combinations(popular, n_selected) if n_selected > 1 else popular.unsqueeze(1)
    combos = combos[torch.randperm(combos.shape[0], generator=generator)]
    full, half = [], []
    for chunk in combos.split(256):
        rated = R[:, chunk].sum(2)                    # users x combinations: selected items held
        full.append((rated == n_selected).sum(0))
        half.append((rated > n_selected // 2).sum(0))
    full, half = torch.cat(full), torch.cat(half)
    for hits in (full, half):
        ok = torch.nonzero(hits >= group).flatten()
        if ok.numel():
            return torch.sort(combos[ok[0]]).values
    return torch.sort(combos[int(torch.argmax(full))]).values


@dataclass
class Templates:
    """What the GAN samples from: the real users' 0/1 profiles over the allowed items ``R``,
    the users that may serve as templates (``pool``) and the selected items."""

    R: torch.Tensor          # real users x items, 0/1, allowed items only
    allowed: torch.Tensor    # items: rated by a real user and not a target
    pool: torch.Tensor       # template users: at least ``fillers`` allowed items (else all)
    selected: torch.Tensor   # selected item ids

    @classmethod
    def build(cls, split, targets, fillers: int, n_selected: int, generator: torch.Generator,
              group: int = TARGET_GROUP):
        train, n_real = split.train, int(split.n_real_users)
        real = train.users < n_real
        counts = np.bincount(train.items[real], minlength=train.n_items)
        allowed = torch.as_tensor(counts > 0)
        allowed[torch.as_tensor(targets)] = False
        n_allowed = int(allowed.sum())
        if fillers > n_allowed:
            raise ValueError(f"filler_items={fillers} exceeds the {n_allowed} rated items left "
                             f"besides the targets: lower filler_items")
        R = torch.zeros(n_real, train.n_items)
        R[torch.as_tensor(train.users[real]), torch.as_tensor(train.items[real])] = 1.0
        holds_target = R[:, torch.as_tensor(targets)].sum(1) > 0
        R = R * allowed
        lengths = R.sum(1)
        pool = torch.nonzero(lengths >= fillers).flatten()
        if pool.numel() == 0:
            pool = torch.nonzero(lengths > 0).flatten()
        selected = select_items(R[~holds_target], torch.as_tensor(counts), allowed, n_selected, group, generator)
        return cls(R, allowed, pool, selected)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` template users, distinct while the pool lasts."""
        order = torch.cat([torch.randperm(self.pool.numel(), generator=generator)
                           for _ in range(-(-n // self.pool.numel()))])
        return self.pool[order[:n]]

    def candidates(self, templates: torch.Tensor) -> torch.Tensor:
        """The items a fake profile built on these template rows may keep first."""
        out = templates > 0
        out[:, self.selected] = True
        return out & self.allowed

    def reduced(self, users: torch.Tensor, fillers: int, generator: torch.Generator) -> torch.Tensor:
        """Real profiles of ``users`` reduced at random to ``fillers`` of their items (the real
        samples the discriminator sees)."""
        rows = self.R[users]
        noise = torch.rand(rows.shape, generator=generator)
        return discretise((rows * (1.0 + noise)).masked_fill(rows == 0, -1.0), fillers) * (rows > 0)


def discriminator_step(D, optimiser, real: torch.Tensor, fake: torch.Tensor) -> float:
    """One Adam step of the discriminator on real (label 1) and fake (label 0) profiles."""
    p_real, p_fake = D(real), D(fake.detach())
    loss = F.binary_cross_entropy(p_real, torch.ones_like(p_real)) + \
        F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake))
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return loss.item()


def adversarial_loss(D, fake: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating GAN loss: BCE of the discriminator's verdict against 'real'."""
    p = D(fake)
    return F.binary_cross_entropy(p, torch.ones_like(p))


def seeded_modules(seed: int, *builders):
    """Build the modules with torch's global generator seeded (restored after), for determinism."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [build() for build in builders]


# -- RevAdv's unrolled WRMF surrogate ----------------------------------------------------------

def wrmf_params(unroll_steps: int) -> dict:
    """The declared parameters (``benchmark.core.params.Param``) of an ``UnrolledWRMF``:
    factors, confidence, weight decay, learning rate, Adam steps and the unrolled last steps."""
    return {"dim": Param(64, check.integer), "alpha": Param(20.0, check.positive),
            "weight_decay": Param(1e-5, check.number, low=0.0),
            "learning_rate": Param(0.03, check.positive), "train_steps": Param(100, check.integer),
            "unroll_steps": Param(unroll_steps, check.integer)}


class UnrolledWRMF:
    """Weighted MF on a dense matrix, trained by full-batch Adam from one fixed start, with the
    last ``unroll`` steps differentiable in the fake rows of the data.

    ``real`` is the (real users x items) 0/1 matrix; ``train(fake)`` returns the factors
    ``(P, Q)`` after ``steps`` steps on ``[real; fake]`` (with a graph to ``fake`` if it requires
    grad and ``unroll > 0``).
    """

    def __init__(self, real: torch.Tensor, n_fake: int, dim: int, alpha: float, weight_decay: float,
                 lr: float, steps: int, unroll: int, generator: torch.Generator):
        self.real, self.alpha, self.wd, self.lr = real, alpha, weight_decay, lr
        self.steps, self.unroll = steps, min(unroll, steps)
        n_users, n_items = real.shape[0] + n_fake, real.shape[1]
        self.P0 = (torch.randn(n_users, dim, generator=generator, dtype=torch.float64) * INIT_STD).to(real.dtype)
        self.Q0 = (torch.randn(n_items, dim, generator=generator, dtype=torch.float64) * INIT_STD).to(real.dtype)

    def gradients(self, X, C, P, Q):
        """Gradients of ``sum C o (X - P Q^T)^2`` plus Adam's weight decay, in closed form."""
        E = C * (P @ Q.T - X)
        return 2.0 * (E @ Q) + self.wd * P, 2.0 * (E.T @ P) + self.wd * Q

    def train(self, fake: torch.Tensor):
        X = torch.cat([self.real, fake], dim=0)
        C = 1.0 + (self.alpha - 1.0) * X
        params = [self.P0.clone(), self.Q0.clone()]
        first = [torch.zeros_like(p) for p in params]
        second = [torch.zeros_like(p) for p in params]
        for step in range(1, self.steps + 1):
            tracked = step > self.steps - self.unroll
            with torch.set_grad_enabled(tracked and torch.is_grad_enabled()):
                grads = self.gradients(X, C, *params)
                for i, g in enumerate(grads):
                    first[i] = BETAS[0] * first[i] + (1 - BETAS[0]) * g
                    second[i] = BETAS[1] * second[i] + (1 - BETAS[1]) * g * g
                    m_hat = first[i] / (1 - BETAS[0] ** step)
                    v_hat = second[i] / (1 - BETAS[1] ** step)
                    params[i] = params[i] - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
        return params


class AdversarialObjective:
    """What the attacker maximises on the surrogate's real-user scores (see the module doc),
    and the surrogate's target hit ratio HR@``top_k`` that picks the best profiles."""

    def __init__(self, seen: torch.Tensor, targets: torch.Tensor, kind: str, top_k: int):
        self.seen, self.targets, self.kind = seen, targets, kind
        self.excluded = seen.clone()
        self.excluded[:, targets] = True
        self.k = max(1, min(top_k, int(seen.shape[1] - targets.numel())))
        self.k_hr = max(1, min(top_k, int(seen.shape[1])))
        self.eligible = (~seen[:, targets]).to(torch.float64)

    def __call__(self, S: torch.Tensor) -> torch.Tensor:
        """``S``: real users x items scores (differentiable)."""
        if self.kind == "ce":
            return F.log_softmax(S, dim=1)[:, self.targets].mean()
        others = S.masked_fill(self.excluded, -float("inf"))
        threshold = torch.topk(others, self.k, dim=1).values[:, -1:]
        margin = (S[:, self.targets] - threshold).clamp(max=0.0)
        weight = self.eligible.to(S.dtype)
        return (margin * weight).sum() / weight.sum().clamp(min=1.0)

    @torch.no_grad()
    def hit_ratio(self, S: torch.Tensor) -> float:
        """Fraction of (real user, target) pairs, target unseen, with the target in the user's
        top ``top_k`` unseen items."""
        top = torch.topk(S.masked_fill(self.seen, -float("inf")), self.k_hr, dim=1).indices
        hits = (top.unsqueeze(2) == self.targets.view(1, 1, -1)).any(dim=1).to(torch.float64)
        return float((hits * self.eligible).sum() / self.eligible.sum().clamp(min=1.0))
