"""The lean training loop: RecBole's models and losses, without RecBole's Trainer overhead.

What RecBole's ``Trainer`` + ``TrainDataLoader`` do per epoch, done over whole tensors: one
shuffle, one vectorised uniform negative sampling (items the user has not interacted with in
train, as RecBole's sampler), slices as batches, no logging or I/O in the loop. Early stopping on
validation NDCG@10 with the best ``state_dict`` kept in memory (no checkpoint pickles).

Batches follow RecBole's shapes: pairwise models get (user, item, neg_item); pointwise models get
positives with label 1 followed by their negatives with label 0 (``train_batch_size`` rows in
all); traditional models (Pop, ItemKNN) see the positive rows once, in one pass.

Models whose RecBole trainer does more than one optimiser step per batch get what it does
(``Phase``): RecVAE alternates ``n_enc_epochs`` encoder passes, its prior update and
``n_dec_epochs`` decoder passes, each part with its own Adam (``RecVAETrainer``); NCL runs its
E-step (clustering) every ``m_step`` epochs (``NCLTrainer``); a model returning a tuple of losses
drops the last term before ``warm_up_step`` epochs (RecBole's ``Trainer``); the models RecBole
feeds whole users (``USER_BATCH_MODELS``: autoencoders, ENMF, diffusion models, whose loss covers
every item of a batch's users; RecBole's ``_get_AE_dataloader``) get batches of
``train_batch_size`` distinct users, shuffled, not one row per interaction (which would process
each user once per interaction it has). A sequential model gets ``train_batch_size`` shuffled
instances (``benchmark.core.sequences``: every prefix of each user's time-ordered train sequence
and the item that followed it, as RecBole's ``SequentialDataset``), through its RecBole transform. Models whose training cannot be reproduced so are in
``benchmark.core.models.REFUSED`` and are refused before any work.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from benchmark.core.embeddings import embedding_tables, reset_caches
from benchmark.core.models import BuiltModel
from benchmark.core.sequences import Sequences, every_position_loss


class Diverged(RuntimeError):
    """Training produced a non-finite loss."""


def as_loss(value) -> torch.Tensor:
    """A model's ``calculate_loss`` as one tensor: RecBole models may return a tuple of loss terms,
    which training sums (``LeanTrainer.fit`` drops the last term during ``warm_up_step``)."""
    return sum(value) if isinstance(value, tuple) else value


class LossCall(torch.nn.Module):
    """``forward(batch)`` = ``as_loss(model.calculate_loss(batch))``, so that
    ``torch.func.functional_call`` can run the model's training loss with swapped weights
    (perturbed embedding tables: APR; extra user rows: APT). Weight names are ``model.<name>``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return as_loss(self.model.calculate_loss(batch))


# RecBole's ``get_dataloader`` register table: these models train on batches of users.
USER_BATCH_MODELS = ("MultiDAE", "MultiVAE", "MacridVAE", "CDAE", "ENMF", "RaCT", "RecVAE", "DiffRec",
                     "LDiffRec")


class LazyAdam:
    """Adam that updates only the embedding rows a batch touches (``optimizer: sparse_adam``).

    The model's user and item tables are switched to sparse gradients; after the first backward
    pass, parameters whose gradient is sparse go to ``torch.optim.SparseAdam`` (Adam's moments
    kept, and updated, for the touched rows only: "lazy" Adam, as TensorFlow's LazyAdam) and the
    rest (dense layers, and tables a model reads whole, such as LightGCN's propagation) to
    ``torch.optim.Adam``. Dense Adam updates every row of every table at every step; on large
    catalogues that dominates an epoch (docs/performance.md). Not the same optimisation: rows
    not in a batch keep their moments instead of decaying them. No weight decay (SparseAdam has
    none): L2 comes from the model's own regulariser, as RecBole's models have."""

    def __init__(self, model, params, lr: float, weight_decay: float = 0.0):
        if weight_decay:
            raise ValueError("optimizer sparse_adam has no weight decay: set weight_decay to 0")
        for table in embedding_tables(model):
            table.sparse = True
        self.params, self.lr, self.parts = list(params), lr, None

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    def step(self):
        if self.parts is None:
            sparse = [p for p in self.params if p.grad is not None and p.grad.is_sparse]
            dense = [p for p in self.params if not any(p is q for q in sparse)]
            self.parts = ([torch.optim.SparseAdam(sparse, lr=self.lr)] if sparse else []) + \
                         ([torch.optim.Adam(dense, lr=self.lr)] if dense else [])
        for optimizer in self.parts:
            optimizer.step()


@dataclass
class Phase:
    """One part of an epoch: ``passes`` passes over the batches with ``optimizer`` on ``loss``,
    then ``after()``."""
    optimizer: torch.optim.Optimizer
    loss: object
    passes: int = 1
    after: object = None


def phases(model, config, make_optimizer, default_loss) -> list[Phase]:
    """What one epoch of ``model``'s RecBole trainer does (see the module doc)."""
    if type(model).__name__ == "RecVAE":
        return [Phase(make_optimizer(model.encoder.parameters()),
                      lambda batch: model.calculate_loss(batch, encoder_flag=True),
                      int(config["n_enc_epochs"]), model.update_prior),
                Phase(make_optimizer(model.decoder.parameters()),
                      lambda batch: model.calculate_loss(batch, encoder_flag=False), int(config["n_dec_epochs"]))]
    return [Phase(make_optimizer([p for p in model.parameters() if p.requires_grad]), default_loss)]


@dataclass
class TrainSettings:
    epochs: int = 300
    patience: int = 10          # evaluations without improvement before stopping
    eval_every: int = 1
    batch_size: int = 2048
    learning_rate: float = 0.001
    keep: str = "best"          # "best": the best validation epoch; "last": the final one
    optimizer: str = "adam"     # kinds.OPTIMIZERS; "sparse_adam": lazy Adam on embedding tables (LazyAdam)

    def __post_init__(self):
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")

    @classmethod
    def from_config(cls, config, **overrides) -> "TrainSettings":
        values = dict(epochs=config["epochs"], patience=config["stopping_step"],
                      eval_every=config["eval_step"], batch_size=config["train_batch_size"],
                      learning_rate=config["learning_rate"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: float
    epochs_run: int
    seconds: float
    history: dict = field(default_factory=dict)


class NegativeSampler:
    """Uniform negatives excluding the user's train items, vectorised (rejection resampling).

    Membership is a dense user x item bit table when it is small (a gather per check), else a
    sorted key array (a binary search per check), so memory stays linear in the data."""

    DENSE_LIMIT = 1 << 27   # cells of the dense table (128 MB of bools)

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int, generator):
        self.n_items = n_items
        self.low = 1  # RecBole item id 0 is padding
        self.generator = generator
        n_users = int(users.max()) + 1 if users.numel() else 1
        if n_users * n_items <= self.DENSE_LIMIT:
            self.dense = torch.zeros(n_users * n_items, dtype=torch.bool)  # flat: one take per check
            self.dense[users * n_items + items] = True
        else:
            self.dense = None
            self.keys = torch.unique(users * n_items + items)  # sorted

    def _seen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        if self.dense is not None:
            return self.dense.take(keys)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == keys

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        negatives = torch.randint(self.low, self.n_items, users.shape, generator=self.generator)
        todo = torch.arange(users.shape[0])
        for _ in range(100):
            clash = self._seen(users[todo], negatives[todo])
            if not clash.any():
                break
            todo = todo[clash]
            negatives[todo] = torch.randint(self.low, self.n_items, todo.shape, generator=self.generator)
        return negatives


class DefenseTrainer(Protocol):
    """What a training-time defense (``defenses.base.TrainingDefense``) may use of the trainer
    it gets in ``unsupported(model, trainer)`` and ``start(model, trainer)``: this, and nothing
    else of ``LeanTrainer`` (which implements it). Read-only; ids are RecBole's (0 is padding).

    The train table and the batches' layout:

    - ``users``, ``items``: the train rows (two int64 tensors, one entry per interaction).
    - ``n_items``: RecBole's item count (real items are ``1 .. n_items - 1``).
    - ``uid``, ``iid``, ``neg_iid``, ``label``: the batches' column names (user, item, sampled
      negative item of a pairwise row, label of a pointwise row).
    - ``traditional``: the model is fitted without gradient (Pop, ItemKNN): no loss is asked for.
    - ``pairwise``: batches are (user, item, neg_item) triples (else pointwise rows).
    - ``negatives``: batches carry sampled negatives (``train_neg_sample_args``).
    - ``settings``: the ``TrainSettings`` (``learning_rate``, ``epochs``, ``batch_size`` ...).
    - ``sequences``: a sequential model's training instances or windows
      (``benchmark.core.sequences``), None for a general model.

    What a defense builds with it:

    - ``interaction(users, items, negatives)``: a RecBole batch of these rows in the layout of the
      trainer's own batches (the one place that layout is written).
    - ``negative_sampler(generator)``: a ``NegativeSampler`` of items outside each user's train
      items, drawing from the defense's own ``generator``.
    - ``seed``: the seed of the trainer's stream (shuffles, negatives), to derive a defense's own
      stream from, so that the trainer's is left untouched.
    """

    users: torch.Tensor
    items: torch.Tensor
    n_items: int
    uid: str
    iid: str
    neg_iid: str
    label: str
    traditional: bool
    pairwise: bool
    negatives: bool
    settings: TrainSettings
    sequences: Sequences | None

    @property
    def seed(self) -> int: ...

    def interaction(self, users: torch.Tensor, items: torch.Tensor | None = None,
                    negatives: torch.Tensor | None = None): ...

    def negative_sampler(self, generator: torch.Generator) -> NegativeSampler: ...


class LeanTrainer:
    """Train a ``BuiltModel`` on its train table; optionally with a training-time defense, which
    uses the trainer through ``DefenseTrainer`` only."""

    def __init__(self, built: BuiltModel, train_users: torch.Tensor, train_items: torch.Tensor,
                 settings: TrainSettings, seed: int, validate=None, defense=None, sequences: Sequences | None = None):
        from recbole.data.transform import construct_transform
        from recbole.utils import InputType, ModelType
        self.built, self.model, self.config = built, built.model, built.config
        self.users, self.items = train_users, train_items
        self.settings, self.validate, self.defense = settings, validate, defense
        self.generator = torch.Generator().manual_seed(seed)
        self.n_items = built.train_dataset.item_num
        self.traditional = getattr(self.model, "type", None) == ModelType.TRADITIONAL
        self.pairwise = getattr(self.model, "input_type", None) == InputType.PAIRWISE
        sampling = self.config["train_neg_sample_args"] or {}
        self.negatives = sampling.get("distribution", "none") != "none"
        self.neg_samples = int(sampling.get("sample_num", 1)) if self.negatives else 0
        self.sampler = self.negative_sampler(self.generator)
        self.uid, self.iid = self.config["USER_ID_FIELD"], self.config["ITEM_ID_FIELD"]
        self.neg_iid = self.config["NEG_PREFIX"] + self.iid
        self.label = self.config["LABEL_FIELD"]
        self.by_user = type(self.model).__name__ in USER_BATCH_MODELS
        self.sequences = sequences   # a sequential model's instances or windows (core.sequences)
        self.transform = construct_transform(self.config) if sequences is not None else None
        self.windows = sequences is not None and sequences.targets.dim() == 2
        if self.windows:   # every position of a window is a target: the model's loss at each
            self.model.calculate_loss = functools.partial(every_position_loss, self.model)

    # -- the surface for defenses (``DefenseTrainer``) ----------------------------------------
    @property
    def seed(self) -> int:
        """The seed of the trainer's stream (``generator``), as last set."""
        return int(self.generator.initial_seed())

    def negative_sampler(self, generator: torch.Generator) -> NegativeSampler:
        """Uniform negatives outside each user's train items, drawn from ``generator``."""
        return NegativeSampler(self.users, self.items, self.n_items, generator)

    def interaction(self, users: torch.Tensor, items: torch.Tensor | None = None,
                    negatives: torch.Tensor | None = None):
        """A RecBole batch of these rows, laid out as the trainer's batches (see the module doc).

        ``users`` alone: a batch of users; no ``negatives``: (user, item) rows; with
        ``negatives``: (user, item, neg_item) triples for pairwise models (one negative per
        row), else the positives with label 1 followed by their negatives with label 0
        (``negatives``: k per positive, positive r's at rows ``r*k .. r*k + k - 1``). Made from
        CPU tensors (the random draws stay on the CPU), it is moved to the model's device."""
        from recbole.data.interaction import Interaction
        device = self.config["device"]
        if items is None:
            return Interaction({self.uid: users}).to(device)
        if negatives is None:
            return Interaction({self.uid: users, self.iid: items}).to(device)
        if self.pairwise:
            return Interaction({self.uid: users, self.iid: items, self.neg_iid: negatives}).to(device)
        per = negatives.shape[0] // max(users.shape[0], 1)
        if per * users.shape[0] != negatives.shape[0]:
            raise ValueError(f"{negatives.shape[0]} negatives for {users.shape[0]} positives: "
                             f"need the same number for every positive")
        return Interaction({self.uid: torch.cat([users, users.repeat_interleave(per)]),
                            self.iid: torch.cat([items, negatives]),
                            self.label: torch.cat([torch.ones(users.shape[0]), torch.zeros(negatives.shape[0])])}
                           ).to(device)

    # -- batches ---------------------------------------------------------------------------
    def sequence_batch(self, rows: Sequences):
        """A RecBole batch of sequential training instances: user, item list, its length and the
        next item (with a sampled negative under ``loss_type: BPR``), through the model's RecBole
        transform (BERT4Rec's item masking), moved to the model's device."""
        from recbole.data.interaction import Interaction
        model = self.model
        columns = {self.uid: rows.users, model.ITEM_SEQ: rows.items, model.ITEM_SEQ_LEN: rows.lengths,
                   model.POS_ITEM_ID: rows.targets}
        if self.negatives:
            columns[model.NEG_ITEM_ID] = self.sampler.sample(rows.users)
        return self.transform(self.built.train_dataset, Interaction(columns)).to(self.config["device"])

    def batches(self):
        """Yield RecBole ``Interaction`` batches for one epoch."""
        if self.sequences is not None:   # a sequential model: shuffled instances, or windows
            order = torch.randperm(len(self.sequences), generator=self.generator)
            step = max(1, self.settings.batch_size // self.model.max_seq_length) if self.windows \
                else self.settings.batch_size   # about train_batch_size targets a batch either way
            for s in range(0, order.shape[0], step):
                yield self.sequence_batch(self.sequences.take(order[s:s + step]))
            return
        if self.by_user:   # a batch is a set of distinct users, its loss covers all their items
            users = torch.unique(self.users)
            users = users[torch.randperm(users.shape[0], generator=self.generator)]
            for s in range(0, users.shape[0], self.settings.batch_size):
                yield self.interaction(users[s:s + self.settings.batch_size])
            return
        order = torch.randperm(self.users.shape[0], generator=self.generator)
        users, items = self.users[order], self.items[order]
        if self.traditional or not self.negatives:
            step = self.settings.batch_size
            for s in range(0, users.shape[0], step):
                yield self.interaction(users[s:s + step], items[s:s + step])
            return
        times = max(self.neg_samples, 1) if self.pairwise else 1 + self.neg_samples
        step = max(self.settings.batch_size // times, 1)
        if self.pairwise:
            if self.neg_samples > 1:
                users = users.repeat_interleave(self.neg_samples)
                items = items.repeat_interleave(self.neg_samples)
            negatives = self.sampler.sample(users)
            step *= self.neg_samples
            for s in range(0, users.shape[0], step):
                yield self.interaction(users[s:s + step], items[s:s + step], negatives[s:s + step])
            return
        negatives = self.sampler.sample(users.repeat_interleave(self.neg_samples))
        for s in range(0, users.shape[0], step):
            u, i = users[s:s + step], items[s:s + step]
            yield self.interaction(u, i, negatives[s * self.neg_samples:(s + u.shape[0]) * self.neg_samples])

    # -- training --------------------------------------------------------------------------
    def _fit_traditional(self) -> None:
        """Pop counts every train row (``item_cnt`` = the train table's item counts). RecBole's
        ``Pop.calculate_loss`` does ``item_cnt[item] = item_cnt[item] + 1``, which adds 1 once
        per distinct item of a batch, not once per row (on ml-100k the largest count read 40
        instead of 468). The other traditional models compute their statistics from the train
        dataset when built; their ``calculate_loss`` is a no-op pass (docs/recbole.md)."""
        from recbole.model.general_recommender import Pop
        self.model.train()
        if isinstance(self.model, Pop):
            counts = torch.bincount(self.items.long(), minlength=self.model.item_cnt.shape[0])
            self.model.item_cnt.copy_(counts.view(-1, 1).to(self.model.item_cnt))
            self.model.max_cnt = torch.max(self.model.item_cnt, dim=0)[0]
        else:
            for batch in self.batches():
                self.model.calculate_loss(batch)
        self.model.eval()

    def fit(self, start_state: dict | None = None) -> TrainResult:
        """Train to the validation plateau and keep the best epoch (or the last, per settings).

        ``start_state``: a ``state_dict`` to start from (a trainer defense's phase after the
        plain model, as APR and IRGAN start); every epoch of this run is selectable, so the
        starting state itself is never the one kept."""
        start = time.perf_counter()
        if self.traditional:
            self._fit_traditional()
            return TrainResult(0, float("nan"), 1, time.perf_counter() - start)
        if start_state is not None:
            self.model.load_state_dict(start_state)
            reset_caches(self.model)
        weight_decay = float(self.config["weight_decay"] or 0.0)
        plain_loss = (lambda batch: self.defense.batch_loss(self.model, batch, epoch)) if self.defense is not None \
            else self.model.calculate_loss
        lr = self.settings.learning_rate
        make = {"adam": lambda ps: torch.optim.Adam(ps, lr=lr, weight_decay=weight_decay),
                "sparse_adam": lambda ps: LazyAdam(self.model, ps, lr, weight_decay)}[self.settings.optimizer]
        parts = phases(self.model, self.config, make, plain_loss)
        if self.defense is not None:
            reason = self.defense.unsupported(self.model, self)
            if reason:
                raise ValueError(reason)
            self.defense.start(self.model, self)
        best, best_epoch, best_state, waited = -math.inf, -1, None, 0
        defense_state = None
        history: dict[str, list] = {"train_loss": []}
        warm_up = self.config["warm_up_step"]
        m_step = self.config["m_step"] if hasattr(self.model, "e_step") else None
        epoch = 0
        for epoch in range(self.settings.epochs):
            self.model.train()
            if m_step and epoch % int(m_step) == 0:
                self.model.e_step()   # NCL: re-cluster users and items (NCLTrainer)
            total, count = 0.0, 0
            for part in parts:
                for _ in range(part.passes):
                    for batch in self.batches():
                        part.optimizer.zero_grad(set_to_none=True)
                        loss = part.loss(batch)
                        if isinstance(loss, tuple):
                            loss = sum(loss[:-1] if warm_up is not None and epoch < warm_up else loss)
                        loss.backward()
                        part.optimizer.step()
                        total += float(loss.detach())
                        count += 1
                if part.after is not None:
                    part.after()
            mean_loss = total / max(count, 1)
            if not math.isfinite(mean_loss):
                raise Diverged(f"training diverged: loss is {mean_loss} at epoch {epoch}")
            history["train_loss"].append(mean_loss)
            if self.defense is not None:
                for key, value in self.defense.end_epoch(epoch).items():
                    history.setdefault(key, []).append(float(value))
            first_selectable = (getattr(self.defense, "pretrain_epochs", 0) or 0) if self.defense else 0
            if self.validate is None or epoch < first_selectable or (epoch + 1) % self.settings.eval_every:
                continue
            self.model.eval()
            reset_caches(self.model)
            score = self.validate(self.model)
            history.setdefault("valid_ndcg@10", []).append(float(score))
            if score > best:
                best, best_epoch, waited = score, epoch, 0
                if self.settings.keep == "best":
                    best_state = copy.deepcopy(self.model.state_dict())
                    defense_state = self.defense.state() if self.defense is not None else None
            else:
                waited += 1
                if waited >= self.settings.patience:
                    break
        if self.settings.optimizer == "sparse_adam":   # gradient attacks and defenses read dense grads
            for table in embedding_tables(self.model):
                table.sparse = False
        if best_state is not None:
            self.model.load_state_dict(best_state)
            if defense_state is not None:
                self.defense.restore(defense_state)
        self.model.eval()
        reset_caches(self.model)
        return TrainResult(best_epoch, best, epoch + 1, time.perf_counter() - start, history)
