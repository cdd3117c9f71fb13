"""APT: adversarial poisoning training, a training-time defense that injects defender-made users.

Paper: Wu, Lian, Ge, Zhu, Chen, Yuan, "Fight Fire with Fire: Towards Robust Recommender Systems
via Adversarial Poisoning Training", SIGIR 2021. Reference implementation read: Daftstone/APT
(the first author's code, TensorFlow 1): ``models/SVD.py`` (``train``, ``influence_user``,
``build_influence``), ``utils.py`` (``generate_fake``, ``cal_neighbor``,
``hessian_vector_product``, ``pert_vector_product``) and ``main.py`` (settings). The paper's full
text was not available here (its abstract was): the algorithm below follows the code.

The defender injects ``n_fake`` "ERM users" whose interactions are chosen to *lower* the
empirical risk (the training loss) of the model, so that fake profiles an attacker adds have
less room to move it. As implemented (the reference's loop, with its ml-100k settings as
defaults):

1. From the first APT epoch on, every ``every`` epochs the ERM users' profiles are drawn again:
   a. ``g`` = gradient of the empirical risk (the model's loss on every train row, with one
      uniform negative each) w.r.t. every embedding table; ``v = H^-1 g`` by LiSSA
      (``v <- g + v - H v``, ``lissa_steps`` Hessian-vector products on random mini-batches of
      ``lissa_batch`` rows, scale 1, as the reference; the Hessian is the model's loss's);
   b. the influence of item j: ``I_j = sum_u d s(u, j) / d theta . v`` over the ``proxies``
      real users with the fewest train interactions (the reference's ``cal_neighbor``: the
      smallest rating-row norms), computed as one forward-mode JVP of ``predict`` per proxy.
      Raising the weight of (u, j) changes the risk at the rate ``I_j`` (the reference's
      ``pert_vector_product`` w.r.t. the ratings, up to a constant factor that the
      normalisation below removes);
   c. only items with ``I_j < 0`` (that lower the risk) are candidates; their influence is
      min-max normalised to [-1, 0] and each ERM user gets ``profile_size`` distinct
      candidates drawn without replacement with p ~ exp(-temperature * I_norm).
2. Every batch, the model's loss is the mean over the batch's real rows and a proportional
   sample of ERM rows (``len(batch) * erm_rows / train_rows`` of them, with uniform negatives
   outside the ERM user's profile), as if the ERM rows were part of the train table.

The ERM users' embeddings live in the defense (one table per user table of the model, BPR's one,
NeuMF's two), joined to the model's by ``torch.func.functional_call`` for the ERM rows; they are
trained by their own Adam at the trainer's learning rate and kept across redraws, as the
reference keeps the ``extend`` extra rows of its user table.

Deviations from the paper and the reference, documented:

- Implicit feedback: the reference is an explicit-rating MF (MSE on ratings scaled to [0, 1],
  Adagrad) whose ERM ratings are drawn per item from N(mean_j, std_j) + 0.2 and rounded. Here a
  profile is the set of chosen items (interactions carry no value), so the rating draw and the
  ``up`` shift have no counterpart; the risk is the model's own loss (BPR for BPR) instead of
  sigmoid(MSE) (a positive factor on ``g``, removed by the normalisation).
- The influence of an item uses the derivative of the score ``s(u, j)`` (the reference
  differentiates its pointwise squared error w.r.t. the rating, which is proportional).
- The ERM rows are added to every batch in proportion instead of being shuffled into the
  sample list; the ERM users' embeddings have their own Adam (stepped at the next batch)
  because the trainer's optimiser is built before the defense starts.
- Start: by default (``pretrain_epochs=None``) from the converged plain model (the reference
  trains 15 plain epochs of its 25 on ml-100k before the first ERM users), with the trainer's
  early stopping (the reference trains a fixed number of epochs).
- Models: those whose users are rows of embedding tables looked up per batch (BPR, NeuMF,
  BiasedMF). Graph models (LightGCN, NGCF: the normalised adjacency is built from the real
  users when the model is built, so users cannot be added), autoencoders and traditional
  models are refused with a ``ValueError``.
- Defaults are the reference's ml-100k settings (50 ERM users of 943, 400 items each, ts = 20,
  every 2 epochs, LiSSA batches of 16384 rows, 10 proxies), except ``lissa_steps``: 100 instead
  of 1000, because one Hessian-vector product takes about 0.4 s on this benchmark's 2-core CPU
  (BPR, ml-100k), so 1000 steps cost about 6 minutes per redraw. The reference tunes the
  settings per data set with no rule, so other data sets need their own.

Measured (ml-100k, BPR, seed 0, lr 0.005, patience 5, 5 unpopular targets; undefended / APT):
clean NDCG@10 0.277 / 0.265; random 5% 0.270 / 0.270, bandwagon 5% 0.274 / 0.273 (target HR@50
near 0 with or without APT: these attacks barely move the targets here); random 20% NDCG 0.257 /
0.259, target HR@50 0.0017 / 0.0008; bandwagon 20% NDCG 0.252 / 0.247, target HR@50 0.0019 /
0.0040 (mean target rank 926 / 1068). No consistent robustness gain; APR did better throughout.

The ERM users are never evaluated, so ``state``/``restore`` keep nothing of the defense's own.

``end_epoch`` returns ``erm_loss`` (mean loss of the ERM rows) and ``erm_candidates`` (items
with negative influence at the last redraw).

Args:
    fake_fraction (float in (0, 1], default 0.053): ERM users as a fraction of the train users.
    profile_size (int >= 1, default 400): items per ERM user (capped at the candidates).
    temperature (float > 0, default 20): ts, sharpness of the item distribution.
    every (int >= 1, default 2): epochs between redraws of the profiles.
    lissa_steps (int >= 1, default 100), lissa_batch (int >= 1, default 16384): LiSSA.
    proxies (int >= 1, default 10): real users whose scores define the influence.
    pretrain_epochs (None or int >= 0, default None): None starts from the converged plain model.

Example::

    defense = get_defense("apt", fake_fraction=0.05)
    trainer = LeanTrainer(built, users, items, settings, seed, validate=validate, defense=defense)
    trainer.fit(start_state=plain_state)   # history gains erm_loss, erm_candidates
"""
from __future__ import annotations

import torch
from torch.func import functional_call, jvp

from benchmark.core import params as check
from benchmark.core.embeddings import embedding_tables, reset_caches, table_names
from benchmark.core.params import Param
from benchmark.core.training import LossCall, as_loss
from defenses.base import PRETRAIN_EPOCHS, TrainingDefense, register


class _PredictCall(torch.nn.Module):
    """``forward`` = the model's ``predict``, for ``functional_call``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, interaction):
        return self.model.predict(interaction).reshape(-1)


@register
class APT(TrainingDefense):
    """Adversarial Poisoning Training: train with defender-made users that lower the risk.

    Paper: Wu, Lian, Ge, Zhu, Chen, Yuan, "Fight Fire with Fire: Towards Robust Recommender
    Systems via Adversarial Poisoning Training", SIGIR 2021. ERM users' items are drawn by their
    influence on the empirical risk (LiSSA inverse-Hessian, JVP of the scores), redrawn every
    ``every`` epochs, and their rows are trained on with the real ones.

    Args: fake_fraction (0.053), profile_size (400), temperature (20.0), every (2),
    lissa_steps (100), lissa_batch (16384), proxies (10), pretrain_epochs (None).

    Example::

        defense = get_defense("apt", fake_fraction=0.05, profile_size=100)
        LeanTrainer(built, users, items, settings, seed, defense=defense).fit(start_state=plain)
    """

    name = "apt"
    runs_on_device = False   # its fake users, influence estimates and draws are CPU tensors
    paper = ("Wu, Lian, Ge, Zhu, Chen, Yuan, Fight Fire with Fire: Towards Robust Recommender "
             "Systems via Adversarial Poisoning Training, SIGIR 2021")
    applies_to = ("clean", "shilling", "learned")
    invalid_params = [{"fake_fraction": 0}, {"fake_fraction": 1.5}, {"profile_size": 0},
                      {"profile_size": 2.5}, {"temperature": 0}, {"temperature": "hot"},
                      {"every": 0}, {"lissa_steps": 0}, {"lissa_batch": 0}, {"proxies": 0},
                      {"pretrain_epochs": -1}]
    test_params = {"profile_size": 10, "lissa_steps": 5, "lissa_batch": 256, "pretrain_epochs": 1}

    parameters = {"fake_fraction": Param(0.053, check.fraction), "profile_size": Param(400, check.integer),
                  "temperature": Param(20.0, check.positive), "every": Param(2, check.integer),
                  "lissa_steps": Param(100, check.integer), "lissa_batch": Param(16384, check.integer),
                  "proxies": Param(10, check.integer), "pretrain_epochs": PRETRAIN_EPOCHS}

    def __init__(self, **params):
        super().__init__(**params)
        self._model = None

    # -- setup -------------------------------------------------------------------------------
    def unsupported(self, model, trainer) -> str | None:
        from recbole.model.abstract_recommender import AutoEncoderMixin
        name = type(model).__name__
        if trainer is None:
            return "APT needs the trainer (its train rows) to start"
        per_row = trainer.pairwise or trainer.negatives
        if trainer.traditional or isinstance(model, AutoEncoderMixin) or not per_row:
            return f"APT needs a model trained on (u, i, j) triples or labelled rows; {name} is not"
        if hasattr(model, "norm_adj_matrix"):
            return f"APT adds users, but {name} builds its user graph when it is built"
        if not [t for t in embedding_tables(model) if t.num_embeddings == model.n_users]:
            return f"APT needs user embedding tables; {name} has none"
        return None

    def start(self, model, trainer) -> None:
        tables = embedding_tables(model)
        self._user_tables = [t for t in tables if t.num_embeddings == model.n_users]
        self._model, self._trainer = model, trainer
        self._tables = tables
        self._user_names = [f"model.{n}" for n in table_names(model, self._user_tables)]
        self._loss_call, self._predict_call = LossCall(model), _PredictCall(model)
        self.rng = torch.Generator().manual_seed(trainer.seed + 7919)
        self._sampler = trainer.negative_sampler(self.rng)
        self.n_fake = max(1, round(self.fake_fraction * (model.n_users - 1)))   # id 0 is padding
        self.fake = [torch.nn.Parameter(torch.randn(self.n_fake, t.embedding_dim, generator=self.rng)
                                        * float(t.weight.detach().std()))
                     for t in self._user_tables]
        self._fake_opt = torch.optim.Adam(self.fake, lr=trainer.settings.learning_rate)
        self._profiles = None
        self._drawn_at = None
        self._loss_sum, self._loss_count, self._candidates = 0.0, 0, 0

    # -- the batches (laid out by the trainer: ``DefenseTrainer.interaction``) ---------------
    def _risk(self, index) -> torch.Tensor:
        t = self._trainer
        users, items = t.users[index], t.items[index]
        reset_caches(self._model)
        return as_loss(self._model.calculate_loss(t.interaction(users, items, self._sampler.sample(users))))

    # -- the influence and the ERM users -----------------------------------------------------
    def influence(self) -> torch.Tensor:
        """I_j for every item (index = RecBole item id): sum over proxies of ds(u, j)/dtheta . H^-1 g."""
        model, t = self._model, self._trainer
        params = [table.weight for table in self._tables]
        n = t.users.shape[0]
        g = torch.autograd.grad(self._risk(torch.arange(n)), params)
        estimate = [x.clone() for x in g]
        for _ in range(self.lissa_steps):
            index = torch.randperm(n, generator=self.rng)[:self.lissa_batch]
            grads = torch.autograd.grad(self._risk(index), params, create_graph=True)
            hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, estimate)), params)
            estimate = [gi + ei - hi.detach() for gi, ei, hi in zip(g, estimate, hv)]
        counts = torch.bincount(t.users, minlength=model.n_users).float()
        counts[counts == 0] = float("inf")                 # padding and users without rows
        proxies = torch.argsort(counts, stable=True)[:self.proxies]
        names = [f"model.{n}" for n in table_names(model, self._tables)]
        items = torch.arange(1, t.n_items)
        total = torch.zeros(t.n_items)
        training = model.training
        model.eval()
        try:
            for u in proxies.tolist():
                batch = t.interaction(torch.full_like(items, u), items)
                weights = tuple(p.detach() for p in params)

                def scores(*w, batch=batch):
                    reset_caches(model)
                    return functional_call(self._predict_call, dict(zip(names, w)), (batch,), strict=False)

                _, derivative = jvp(scores, weights, tuple(e.detach() for e in estimate))
                total[1:] += derivative.detach()
        finally:
            model.train(training)
            reset_caches(model)
        total[0] = float("nan")
        return total

    def draw_profiles(self) -> torch.Tensor:
        """A boolean (n_fake, n_items) matrix of the ERM users' items, drawn by influence."""
        influence = self.influence()
        candidates = torch.nonzero(influence < 0).reshape(-1)
        self._candidates = int(candidates.numel())
        profiles = torch.zeros(self.n_fake, self._trainer.n_items, dtype=torch.bool)
        if not self._candidates:
            return profiles
        values = influence[candidates]
        span = values.max() - values.min()
        normalised = (values - values.min()) / span - 1 if span > 0 else torch.full_like(values, -1.0)
        p = torch.softmax(-self.temperature * normalised, dim=0)
        size = min(self.profile_size, self._candidates)
        for k in range(self.n_fake):
            profiles[k, candidates[torch.multinomial(p, size, replacement=False, generator=self.rng)]] = True
        return profiles

    def _erm_batch(self, count: int):
        users, items = self._erm_rows
        pick = torch.randint(users.shape[0], (count,), generator=self.rng)
        u, i = users[pick], items[pick]
        negatives = torch.randint(1, self._trainer.n_items, (count,), generator=self.rng)
        for _ in range(100):                              # outside the ERM user's profile
            clash = self._profiles[u, negatives]
            if not clash.any():
                break
            negatives[clash] = torch.randint(1, self._trainer.n_items, (int(clash.sum()),),
                                             generator=self.rng)
        return self._trainer.interaction(u + self._model.n_users, i, negatives)

    # -- the defense -------------------------------------------------------------------------
    def batch_loss(self, model, batch, epoch: int):
        if self._model is not model:
            self.start(model, None)
        reset_caches(model)
        real = as_loss(model.calculate_loss(batch))
        first = self.pretrain_epochs or 0
        if epoch < first:
            return real
        if self._drawn_at != epoch and (epoch - first) % self.every == 0:
            self._profiles = self.draw_profiles()
            rows = torch.nonzero(self._profiles)
            self._erm_rows = (rows[:, 0], rows[:, 1])
            self._drawn_at = epoch
        if self._erm_rows[0].numel() == 0:
            return real
        if any(f.grad is not None for f in self.fake):    # the ERM rows of the previous batch
            self._fake_opt.step()
            self._fake_opt.zero_grad(set_to_none=True)
        n = len(batch) if self._trainer.pairwise else int((batch[self._trainer.label] > 0).sum())
        count = max(1, round(n * self._erm_rows[0].numel() / self._trainer.users.shape[0]))
        weights = {name: torch.cat([table.weight, fake])
                   for name, table, fake in zip(self._user_names, self._user_tables, self.fake)}
        reset_caches(model)
        erm = functional_call(self._loss_call, weights, (self._erm_batch(count),), strict=False)
        reset_caches(model)
        self._loss_sum += float(erm.detach())
        self._loss_count += 1
        return (n * real + count * erm) / (n + count)

    def end_epoch(self, epoch: int) -> dict:
        out = {"erm_loss": self._loss_sum / self._loss_count if self._loss_count else 0.0,
               "erm_candidates": float(self._candidates)}
        self._loss_sum, self._loss_count = 0.0, 0
        return out
