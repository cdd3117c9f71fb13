"""User sequences as RecBole's sequential recommenders read them: right-padded item lists, and
the two ways of training on them.

RecBole's ``SequentialDataset.data_augmentation`` turns each user's time-ordered items
``i_1 .. i_n`` into ``n - 1`` training instances: the items before position ``j`` (the latest
``MAX_ITEM_LIST_LENGTH`` = L of them, left-aligned, zeros after) and item ``i_j`` to predict, for
``j = 2 .. n`` (``training_instances``). Each instance runs the whole model on up to L items to
predict one: on ml-100k, 98k instances of 50 items an epoch, 6 minutes of SASRec on one CPU thread.

Causal models (``EVERY_POSITION_MODELS``: SASRec's left-to-right attention, GRU4Rec's recurrence)
compute the prediction for every prefix of a sequence in one pass: the output at position ``k``
depends on items ``0..k`` only. They train on ``training_windows``: each user's sequence cut,
from its end, into windows of L + 1 items, every item of a window but the first predicted from
those before it, with the model's own cross-entropy loss (``every_position_loss``) -- the
objective of the SASRec and GRU4Rec papers (Kang and McAuley, ICDM 2018; Hidasi et al., ICLR
2016). Every train item is a target once an epoch, as in RecBole; a target whose user has at most
L + 1 train items gets exactly RecBole's input, a later one fewer than L items of context (its
window's start), about 33 times less work an epoch on ml-100k (docs/design.md).

``histories`` gives each user's latest items as the input a trained model scores from. Items are
in RecBole's ids (0 is padding); time order is ``benchmark.core.data.time_order`` (rows an attack
added come in the order of their timestamps).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.core.data import Interactions, user_sequences


@dataclass(frozen=True)
class Sequences:
    """One row per instance: a user, the items before a point in time (``(N, max_len)``, right
    padded with 0), how many there are, and the item that came next (-1 where none); for
    windows, ``targets`` is ``(N, max_len)``: the item after each position (0 where none)."""
    users: torch.Tensor
    items: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def take(self, index: torch.Tensor) -> "Sequences":
        return Sequences(self.users[index], self.items[index], self.lengths[index], self.targets[index])


def _windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """``items[max(start, end - max_len):end]`` per row, left-aligned in a zero-padded matrix."""
    first = np.maximum(starts, ends - max_len)
    lengths = ends - first
    index = first[:, None] + np.arange(max_len)[None, :]
    inside = np.arange(max_len)[None, :] < lengths[:, None]
    safe = np.where(inside, index, 0)
    values = items[safe] if len(items) else np.zeros(safe.shape, np.int64)
    return np.where(inside, values, 0), lengths


def training_instances(train: Interactions, max_len: int, item_ids: np.ndarray,
                       user_ids: np.ndarray) -> Sequences:
    """Every prefix of every user's time-ordered train sequence with the item that followed it
    (RecBole's data augmentation); ``item_ids`` / ``user_ids`` map our ids to RecBole's."""
    offsets, items = user_sequences(train)
    users = np.repeat(np.arange(train.n_users), np.diff(offsets))
    position = np.arange(len(items))
    keep = position > offsets[users]                       # not a user's first item
    ends = position[keep]
    matrix, lengths = _windows(item_ids[items], offsets[users[keep]], ends, max_len)
    return Sequences(torch.from_numpy(user_ids[users[keep]]), torch.from_numpy(matrix),
                     torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(item_ids[items[ends]]))


def histories(inter: Interactions, n_users: int, max_len: int, item_ids: np.ndarray,
              user_ids: np.ndarray) -> Sequences:
    """Each of users ``0 .. n_users - 1``'s latest ``max_len`` items of ``inter`` (row ``u`` is
    user ``u``; a user without rows gets an empty history); ``targets`` are -1."""
    inter = Interactions.build(inter.users, inter.items, inter.ratings, max(inter.n_users, n_users),
                               inter.n_items, inter.timestamps)
    offsets, items = user_sequences(inter)
    matrix, lengths = _windows(item_ids[items], offsets[:n_users], offsets[1:n_users + 1], max_len)
    return Sequences(torch.from_numpy(user_ids[:n_users].copy()), torch.from_numpy(matrix),
                     torch.from_numpy(lengths.astype(np.int64)), torch.full((n_users,), -1, dtype=torch.int64))


def training_windows(train: Interactions, max_len: int, item_ids: np.ndarray,
                     user_ids: np.ndarray) -> Sequences:
    """Each user's time-ordered train sequence in windows of ``max_len + 1`` items taken from its
    end (the earliest may be shorter): inputs are a window's items but its last, targets its items
    but its first, so every train item but a user's first is a target exactly once."""
    offsets, items = user_sequences(train)
    counts = np.diff(offsets)
    per_user = np.where(counts > 1, -(-(counts - 1) // max_len), 0)     # ceil((n - 1) / L)
    users = np.repeat(np.arange(train.n_users), per_user)
    k = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)
    ends = offsets[users + 1] - 1 - k * max_len                           # one past the last input
    starts = np.maximum(offsets[users], ends - max_len)
    mapped = item_ids[items]
    inputs, lengths = _windows(mapped, starts, ends, max_len)
    targets, _ = _windows(mapped, starts + 1, ends + 1, max_len)
    return Sequences(torch.from_numpy(user_ids[users]), torch.from_numpy(inputs),
                     torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(targets))


EVERY_POSITION_MODELS = ("SASRec", "GRU4Rec")


def trains_every_position(model) -> bool:
    """Whether ``model`` trains on ``training_windows`` (a causal model with cross-entropy loss)."""
    return type(model).__name__ in EVERY_POSITION_MODELS and getattr(model, "loss_type", None) == "CE"


def training_data(model, train: Interactions, item_ids: np.ndarray, user_ids: np.ndarray) -> Sequences:
    """What a sequential ``model`` trains on: windows for causal models, else RecBole's instances."""
    make = training_windows if trains_every_position(model) else training_instances
    return make(train, int(model.max_seq_length), item_ids, user_ids)


def every_position_loss(model, interaction) -> torch.Tensor:
    """The model's cross-entropy loss (``calculate_loss`` with ``loss_type: CE``: logits are the
    sequence output times every item embedding) at every position of a batch of windows, averaged
    over the targets: ``forward`` runs with ``gather_indexes`` returning the whole output."""
    items, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    targets = interaction[model.POS_ITEM_ID]
    model.gather_indexes = lambda output, index: output
    try:
        output = model.forward(items, lengths)                  # (B, L, hidden)
    finally:
        del model.gather_indexes
    present = targets > 0
    logits = output[present] @ model.item_embedding.weight.T
    return torch.nn.functional.cross_entropy(logits, targets[present])
