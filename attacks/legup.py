"""Leg-UP: AUSH's generator trained against a surrogate recommender through its training.

Paper: Chen Lin, Si Chen, Meifang Zeng, Sheng Zhang, Min Gao, Hui Li, "Shilling Black-box
Recommender Systems by Learning to Generate Fake User Profiles", IEEE TNNLS 2022
(arXiv:2206.11433). Read for this module: the authors' code, github.com/XMUDM/ShillingAttack
(``Leg-UP/models/attacker/aushplus.py``, class ``AUSHplus``, Leg-UP's name there, and
``aushplus_helper.py``: ``DiscretGenerator_AE_1``, ``HeaviTanh``, ``Discriminator``,
``WMFTrainer.fit_adv``), and ARLib's port, github.com/CoderWZW/ARLib ``attack/Gray/LegUP.py``
(whose attack loss does not depend on the generator, so it was not followed). The paper's text
could not be read here beyond its abstract; the algorithm follows the authors' code.

The authors' Leg-UP (explicit ratings): ``attack_num`` templates (sampled real users reduced to
``filler_num`` of their items) are fixed; the generator (an autoencoder) outputs a rating per
template item, discretised by learned thresholds with a Heaviside step whose backward pass is
a tanh (a straight-through estimator); the target is added at the maximum. Each epoch trains
the discriminator (5 passes), takes one generator step on the GAN loss, then 50 generator steps
on the attack loss: a WMF surrogate is retrained on real + generated profiles (50 epochs, the
last one unrolled with ``higher``) and the cross-entropy of the target among each real user's
items scored at least as high as it is back-propagated through the unrolled training to the
generator.

The authors' schedule (``AUSHplus.train``, ``torchAttacker.parse_args``; ``Leg-UP/run.py``,
``run.sh``): 15 generator pre-training epochs (rating reconstruction over all real users,
mini-batches of 64) and 5 discriminator passes; then ``--epoch`` 3 epochs of 5 discriminator
passes (mini-batches of 64 real users against the ``attack_num`` fake profiles), 1 generator
step on the GAN loss and 50 generator steps on the attack loss; Adam, generator and
discriminator 0.01; surrogate WMF, 64 factors, lr 0.01, weight decay 1e-5, mini-batches of 64
users, 50 epochs of which the last is unrolled, ``weight_neg`` 0; ``attack_num`` 50,
``filler_num`` 36; the profiles of the last step are returned. One target per attack:
``run.sh`` loops over ``--target_ids`` one at a time (here the suite's ``targets: {count:
1}``).

Schedules here (``schedule``; ``pretrain_epochs``, ``epochs``, ``d_steps``, ``attack_steps``
given explicitly override it): ``paper``, the authors' (15 pre-training epochs, 3 epochs of 70
discriminator steps, i.e. their 5 passes of 14 mini-batches over ml-100k's 943 users, 1 GAN
step and 50 attack steps: 150 surrogate trainings); ``fast``, the default, 2 epochs of 5
discriminator steps, 1 GAN step and 8 attack steps, no pre-training (16 surrogate trainings).
``paper`` is not the default because it does not fit the 5-minute generation ceiling of ``make
bench`` on this machine (measured below); both return the last profiles, as the authors.

As implemented here, on implicit feedback with this benchmark's budget (all targets plus
exactly ``filler_items`` fillers per profile, among items real users rated), composed from
AUSH's and RevAdv's pieces (``attacks.learned``):

- generator, discriminator, templates and discretisation are AUSH's (``attacks.learned``): fixed
  templates (``n_fake`` sampled real users' allowed profiles), the generator's keep-scores and
  the top-k over the template's items (and ``selected_items`` popular items, none by default:
  Leg-UP has none); the discriminator sees the 0/1 profiles (straight-through top-k);
- the attack loss is back-propagated through a smooth top-k of the same ranking,
  ``sigmoid((rank - tau) / temperature)`` with ``tau`` midway between the ``filler_items``-th
  and the next rank (``soft_top``): the surrogate of the gradient run is trained on these
  relaxed profiles, as RevAdv's is on its relaxed ones;
- surrogate: RevAdv's ``attacks.learned.UnrolledWRMF``, weighted MF on the dense (real + fake) matrix
  trained by ``train_steps`` full-batch Adam steps from one fixed start, the last
  ``unroll_steps`` differentiated through; the attack loss is minus
  ``attacks.learned.AdversarialObjective`` on the real users' scores (``"ce"``: the mean log
  softmax of the targets, the authors' cross-entropy);
- each of ``epochs`` epochs: ``d_steps`` discriminator steps (real users' profiles reduced to
  ``filler_items`` items versus the current fake profiles), one generator step on the GAN loss,
  then ``attack_steps`` generator steps on the attack loss (Adam on the generator's weights);
- before every attack step and at the end, the current 0/1 profiles are scored on a surrogate
  trained on them (no graph; ``trace``); the profiles of the end are returned (the authors'
  last ones; an earlier version returned the best seen by the surrogate's HR, which on
  ml-100k was a pick among values of 0 to 0.0015, i.e. by noise).

Deviations from the paper/the authors' code, and why:
- implicit feedback: the generator chooses which template items to keep (the authors' rate
  each template item, with learned thresholds); the template is the user's whole allowed
  profile so that there is a choice; the top-k and its smooth version replace the learned
  thresholds and the tanh-smoothed Heaviside. A straight-through gradient (surrogate trained
  on the 0/1 profiles, the gradient passed to the scores as through the identity, closest to
  the authors' Heaviside) made the surrogate objective *fall* on ml-100k (-7.572 to -7.577 over
  16 attack steps, surrogate HR@50 stuck at 0), as RevAdv's straight-through variant did; the
  smooth top-k raised it (-7.572 to -7.546 in 8 steps, HR@50 0 to 0.0015);
- the surrogate is WRMF with confidence ``alpha`` (the authors' WMF config weighs only
  positives, ``weight_neg=0``), full-batch Adam from one fixed start with 100 steps, the last 20
  unrolled (theirs: mini-batches of 64 users, 50 epochs, the last one unrolled), as RevAdv
  here; the objective is the plain log-softmax of the targets over all items (the authors zero
  the logits of items scored below the target) and real users who already hold a target count
  too;
- the ``fast`` default takes far fewer generator steps than the authors (16 attack steps
  against 150, no pre-training) to fit the 5-minute generation budget on two CPU cores;
  ``schedule: paper`` takes the authors' count;
- pre-training (``paper``) reconstructs the real users' 0/1 rows (BCE of the keep-scores) with
  AUSH's sigmoid MLP generator, for their rating reconstruction with an autoencoder; the 5
  discriminator passes before the first epoch are left out (the first epoch starts with its
  own 70 discriminator steps);
- every profile holds all the run's targets (``targets: {count: 5}``: five at once; ``count:
  1``: one, as the authors); the budget is this benchmark's (fake users a fraction of the real
  ones, ``filler_items`` the mean profile length: 47 and 86 on ml-100k at 5 %; the authors'
  ``attack_num`` 50, ``filler_num`` 36).

Measured (``benchmarks/suites/learned_paper_1t.yaml`` and ``learned_paper_5t.yaml``: ml-100k,
BPR victim, 5 % fake users (47), 86 fillers, unpopular targets, one seed; ``docs/results.md``):
one target, ``paper``: target HR@10 0.0021, HR@50 0.0085, mean target rank 392, 384 s of
generation (over the 300 s ceiling, machine shared); ``fast``: HR@50 0 (rank 396), 44 s;
random: HR@50 0 (rank 1089). Five targets, ``fast``: HR@50 0.0002 (random 0.0002), 121 s.
The fake profiles can only be subsets of real users' profiles, which bounds what the
surrogate's gradient can do (RevAdv chooses among all items); on this one run the authors'
150 attack steps lifted one target into some real users' top 50 where the 16 of ``fast`` did
not.

See ``LegUP`` for the arguments.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from attacks.base import FakeProfileAttack, Profiles, register
from attacks.learned import (
    OBJECTIVES,
    AdversarialObjective,
    Discriminator,
    Generator,
    Templates,
    UnrolledWRMF,
    adversarial_loss,
    discriminator_step,
    keep_top,
    seeded_modules,
    wrmf_params,
)
from benchmark.core import params as check
from benchmark.core.kinds import Family
from benchmark.core.params import Param

# The generator schedules (see the module doc). ``paper``: the authors' ``AUSHplus.train``
# (15 pre-training epochs; 3 epochs of 5 discriminator passes, 1 GAN step and 50 attack steps;
# 70 discriminator steps are their 5 passes over ml-100k's 943 users in mini-batches of 64);
# ``fast``: this port's earlier schedule, 2 epochs of 5 D steps, 1 GAN step, 8 attack steps.
SCHEDULES = {"paper": {"pretrain_epochs": 15, "epochs": 3, "d_steps": 70, "attack_steps": 50},
             "fast": {"pretrain_epochs": 0, "epochs": 2, "d_steps": 5, "attack_steps": 8}}
PRETRAIN_BATCH = 64   # the authors' batch_size_D: real users per pre-training mini-batch


def soft_top(scores: torch.Tensor, candidates: torch.Tensor, allowed: torch.Tensor, fillers: int,
             temperature: float) -> torch.Tensor:
    """A smooth top-k of ``keep_top``'s ranking: ``sigmoid((rank - tau) / temperature)`` over the
    allowed items, ``tau`` per row midway between the ``fillers``-th and the next rank, so that
    it tends to ``keep_top``'s 0/1 profile as the temperature falls."""
    rank = (scores + 2.0 * candidates).masked_fill(~allowed, -1.0)
    top = torch.topk(rank, min(fillers + 1, rank.shape[1]), dim=1).values
    tau = top[:, fillers - 1:].mean(dim=1, keepdim=True) if fillers < rank.shape[1] else top[:, -1:] - 1.0
    return torch.sigmoid((rank - tau) / temperature) * allowed


@register
class LegUP(FakeProfileAttack):
    """Leg-UP (Lin, Chen, Zeng, Zhang, Gao, Li. Shilling Black-box Recommender Systems by
    Learning to Generate Fake User Profiles. IEEE TNNLS 2022): AUSH's generator, which keeps
    ``filler_items`` of a fixed real template's items per fake user (plus all targets), trained
    both against a discriminator and on the attack loss of a WRMF surrogate retrained on real +
    generated profiles, back-propagated through the surrogate's unrolled training (and a smooth
    top-k). After a run, ``trace`` holds per attack step (objective, surrogate HR) of the 0/1
    profiles before the step.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1]; the count is
            ``max(1, round(f * n_real_users))``.
        filler_items: fillers per profile (default: the mean real train profile length).
        schedule: ``"fast"`` (default) or ``"paper"`` (the authors' counts): the default of
            ``pretrain_epochs``, ``epochs``, ``d_steps`` and ``attack_steps`` (module doc).
        selected_items: popular items offered to the generator besides the template's (AUSH's
            selected items; Leg-UP has none).
        hidden: the generator's hidden units.
        pretrain_epochs: generator pre-training passes over the real users (reconstruction).
        epochs: outer epochs (discriminator steps, one GAN step, attack steps).
        d_steps: discriminator steps per epoch.
        attack_steps: generator steps on the attack loss per epoch (one surrogate training each).
        lr_generator: the generator's Adam learning rate.
        lr_discriminator: the discriminator's Adam learning rate.
        dim: surrogate factors.
        alpha: WRMF confidence of an interaction (1 for a non-interaction).
        weight_decay: the surrogate's Adam L2 weight decay.
        learning_rate: the surrogate's Adam learning rate.
        train_steps: full-batch Adam steps of each surrogate training (from one fixed start).
        unroll_steps: the last steps of it differentiated through.
        objective: ``"ce"`` (log softmax of the targets, the authors' loss) or ``"cw"`` (margin of
            the targets over each real user's ``top_k``-th unseen item).
        top_k: the rank of the CW margin and of the surrogate hit ratio that picks the profiles.
        temperature: of the smooth top-k the attack gradient passes through (keep-scores are in
            (0, 1)).

    Example::
        attack = get_attack("legup", fake_user_fraction=0.05)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "legup"
    family = Family.LEARNED
    knowledge = "gray-box"
    surrogate = "WRMF"
    paper = ("Lin, Chen, Zeng, Zhang, Gao, Li. Shilling Black-box Recommender Systems by Learning "
             "to Generate Fake User Profiles. IEEE TNNLS 2022")
    single_thread = False   # dense (users x items) products in the surrogate: threads help (as RevAdv)
    test_params: ClassVar[dict] = {"fake_user_fraction": 0.1, "filler_items": 5, "hidden": 16, "epochs": 2,
                                   "d_steps": 2, "attack_steps": 2, "dim": 8, "train_steps": 20,
                                   "unroll_steps": 5, "learning_rate": 0.05}
    invalid_params = ({"fake_user_fraction": 0}, {"fake_user_fraction": 1.5},
                      {"fake_user_fraction": "a"}, {"filler_items": 0}, {"filler_items": 2.5},
                      {"selected_items": -1}, {"hidden": 0}, {"epochs": 0}, {"d_steps": -1},
                      {"attack_steps": 0}, {"pretrain_epochs": -1}, {"schedule": "slow"},
                      {"lr_generator": 0}, {"lr_discriminator": float("inf")},
                      {"dim": 0}, {"alpha": 0}, {"weight_decay": -1.0}, {"learning_rate": 0},
                      {"train_steps": 0}, {"unroll_steps": 0}, {"unroll_steps": 2.0},
                      {"objective": "mse"}, {"top_k": 0}, {"top_k": True}, {"temperature": 0})
    parameters = {"schedule": Param("fast", check.choice, options=tuple(SCHEDULES)),
                  "selected_items": Param(0, check.integer, low=0), "hidden": Param(128, check.integer),
                  "pretrain_epochs": Param(None, check.integer, optional=True, low=0),
                  "epochs": Param(None, check.integer, optional=True),
                  "d_steps": Param(None, check.integer, optional=True, low=0),
                  "attack_steps": Param(None, check.integer, optional=True),
                  "lr_generator": Param(0.01, check.positive),
                  "lr_discriminator": Param(0.01, check.positive), **wrmf_params(unroll_steps=20),
                  "objective": Param("ce", check.choice, options=OBJECTIVES),
                  "top_k": Param(50, check.integer), "temperature": Param(0.05, check.positive)}

    def _derive(self) -> None:
        """``pretrain_epochs``, ``epochs``, ``d_steps`` and ``attack_steps`` left at None take
        the ``schedule``'s values (and are recorded so)."""
        for key, value in SCHEDULES[self.schedule].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
                self.params[key] = value

    # -- the pieces (also what the tests call) ------------------------------------------------

    def surrogate_for(self, split, targets, n_fake, generator):
        """The unrolled WRMF surrogate on the real users' 0/1 rows and the attack objective."""
        train, n_real = split.train, int(split.n_real_users)
        real = train.users < n_real
        R = torch.zeros(n_real, train.n_items)
        R[torch.as_tensor(train.users[real]), torch.as_tensor(train.items[real])] = 1.0
        model = UnrolledWRMF(R, n_fake, self.dim, self.alpha, self.weight_decay, self.learning_rate,
                             self.train_steps, self.unroll_steps, generator)
        return model, AdversarialObjective(R > 0, torch.as_tensor(targets), self.objective, self.top_k)

    @staticmethod
    def attack_value(model, objective, fake, targets):
        """Objective (differentiable in ``fake``) and surrogate HR after training on ``fake``
        plus every target."""
        P, Q = model.train(fake.index_fill(1, torch.as_tensor(targets), 1.0))
        S = P[:model.real.shape[0]] @ Q.T
        return objective(S), objective.hit_ratio(S.detach())

    def pretrain(self, G, opt_G, data, generator):
        """``pretrain_epochs`` passes over the real users in mini-batches of 64: the generator
        learns to reconstruct a real profile (BCE of its keep-scores against the 0/1 row), the
        implicit counterpart of the authors' rating reconstruction (``AUSHplus.pretrain_G``)."""
        users = torch.nonzero(data.R.sum(1) > 0).flatten()
        for _ in range(self.pretrain_epochs):
            for batch in users[torch.randperm(users.numel(), generator=generator)].split(PRETRAIN_BATCH):
                rows = data.R[batch]
                loss = torch.nn.functional.binary_cross_entropy(G(rows)[:, data.allowed], rows[:, data.allowed])
                opt_G.zero_grad()
                loss.backward()
                opt_G.step()

    # -- the recipe -------------------------------------------------------------------------

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        data = Templates.build(context.split, targets, fillers, self.selected_items, generator)
        model, objective = self.surrogate_for(context.split, targets, n_fake, generator)
        templates = data.R[data.sample(n_fake, generator)]
        candidates = data.candidates(templates)
        G, D = seeded_modules(int(rng.integers(2**62)), lambda: Generator(data.R.shape[1], self.hidden),
                              lambda: Discriminator(data.R.shape[1]))
        opt_G = torch.optim.Adam(G.parameters(), lr=self.lr_generator)
        opt_D = torch.optim.Adam(D.parameters(), lr=self.lr_discriminator)

        def fake():
            return keep_top(G(templates), candidates, data.allowed, fillers)

        self.pretrain(G, opt_G, data, generator)

        self.trace = []
        for epoch in range(self.epochs + 1):
            last = epoch == self.epochs
            if not last:
                for _ in range(self.d_steps):
                    with torch.no_grad():
                        current = fake()
                    real = data.reduced(data.sample(n_fake, generator), fillers, generator)
                    discriminator_step(D, opt_D, real, current)
                opt_G.zero_grad()
                adversarial_loss(D, fake()).backward()
                opt_G.step()
            for _ in range(1 if last else self.attack_steps):
                with torch.no_grad():
                    profiles = fake()
                    value, hr = self.attack_value(model, objective, profiles, targets)
                self.trace.append((value.item(), hr))
                if not last:
                    relaxed = soft_top(G(templates), candidates, data.allowed, fillers, self.temperature)
                    value, _ = self.attack_value(model, objective, relaxed, targets)
                    opt_G.zero_grad()
                    (-value).backward()
                    opt_G.step()
        chosen = profiles.numpy() > 0.5   # the last profiles, as the authors'
        return Profiles([np.union1d(np.flatnonzero(row), targets) for row in chosen], None)
