"""Surrogate-guided fake sequences: Yue et al.'s profile-poisoning generator.

Paper: Yue, He, Zamani, McAuley, "Black-Box Attacks on Sequential Recommenders via Data-Free Model
Extraction", RecSys 2021 (code: Yueeeeeeee/RecSys-Extraction-Attack,
``adversarial/retrainer.py::PoisonedGroupRetrainer.generate_poisoned_data``). The attacker trains a
surrogate next-item model and writes each fake sequence left to right as ``t, x1, t, x2, ...``:

1. start with a target ``t`` (drawn among the targets for every slot);
2. append a placeholder item, run the surrogate (in training mode, as their code) and take the
   gradient ``g`` of the cross-entropy towards the next target with respect to the placeholder's
   embedding ``e``;
3. score every item by ``cos(e - sign(g), E_c)``, sort *ascending* as their code does (the items
   after which the surrogate does *not* yet predict the target: training on ``x -> t`` then
   teaches the most), bar the targets, and draw the filler uniformly among the ``candidates``
   (10) lowest;
4. append the target; repeat until the sequence holds ``filler_items`` fillers.

Deviations, listed: their surrogate is extracted from the black-box victim by data-free queries;
here it is trained on the train table (gray-box: the attacker knows the interactions, as for the
other learned attacks), with the lean path's every-position training for ``surrogate_epochs``
epochs, no validation; fillers are items real users rated in train (their code allows any item),
never twice in one sequence (their code may draw one again; a table holds one row per user and
item, targets aside);
the sequence has ``2 f + 1`` items (``filler_items`` = f, default half the mean real train
sequence, so a fake user is as long as a real one; their code cuts at ``max_len``). Their victim
is fine-tuned from its clean checkpoint; here it is retrained from scratch on the poisoned table,
as every poisoned cell of the benchmark. Budget: ``fake_user_fraction`` of the real users (their
default: 1 %).
"""
from __future__ import annotations

import numpy as np
import torch

from attacks.base import FakeProfileAttack, Profiles, register
from attacks.fake_sequences import YUE_2021, Interleaved, target_slots
from attacks.sequential import descent_scores, input_gradient
from benchmark.core import params as check
from benchmark.core.kinds import Family
from benchmark.core.params import Param


@register
class SequenceGenerator(Interleaved, FakeProfileAttack):
    """Fake sequences ``t, x1, t, x2, ..., x_f, t`` whose fillers a trained surrogate picks by
    gradient (Yue et al., RecSys 2021).

    Args:
        fake_user_fraction: fake users as a fraction of the real users, in (0, 1].
        filler_items: fillers per sequence (default: half the mean real train sequence length).
        surrogate_model: the attacker's RecBole sequential model (default SASRec).
        surrogate_epochs: epochs the surrogate trains (int >= 1).
        candidates: how many of the lowest-scoring items a filler is drawn from.

    Example::
        attack = get_attack("sequence_generator", fake_user_fraction=0.01)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "sequence_generator"
    family = Family.LEARNED
    paper = YUE_2021
    knowledge = "gray-box"
    surrogate = "SASRec"
    single_thread = True
    invalid_params = ({"fake_user_fraction": 0}, {"surrogate_epochs": 0}, {"candidates": 0},
                      {"surrogate_model": "BPR"})
    test_params = {"filler_items": 6, "surrogate_epochs": 1}
    parameters = {"surrogate_model": Param("SASRec", check.choice, options=("SASRec", "GRU4Rec")),
                  "surrogate_epochs": Param(10, check.integer),
                  "candidates": Param(10, check.integer)}

    def train_surrogate(self, split, seed: int):
        """The attacker's model, trained on the train table's real users (no validation)."""
        from benchmark.core.models import build_model
        from benchmark.core.sequences import training_data
        from benchmark.core.training import LeanTrainer, TrainSettings
        real = split.with_train(split.train.take(split.train.users < split.n_real_users))
        built = build_model(self.surrogate_model, real, {}, seed=seed)
        windows = training_data(built.model, real.train, built.ids.item, built.ids.user)
        settings = TrainSettings.from_config(built.config, epochs=self.surrogate_epochs, keep="last")
        LeanTrainer(built, built.ids.users(real.train.users), built.ids.items(real.train.items), settings,
                    seed, sequences=windows).fit()
        return built

    def profiles(self, context, targets, n_fake, fillers, rng):
        split = context.split
        built = self.train_surrogate(split, int(rng.integers(2 ** 31)))
        model = built.model
        allowed = self.allowed_fillers(split, targets, 1)
        barred = torch.ones(model.n_items, dtype=torch.bool)
        barred[built.ids.items(np.flatnonzero(allowed))] = False
        torch.manual_seed(int(rng.integers(2 ** 31)))
        max_len, length = int(model.max_seq_length), 2 * fillers + 1
        sequences = torch.zeros((n_fake, length), dtype=torch.int64)
        slots = built.ids.items(target_slots(targets, n_fake, fillers + 1, rng))
        sequences[:, 0] = slots[:, 0]
        users = torch.zeros(n_fake, dtype=torch.int64)
        used = torch.zeros((n_fake, model.n_items), dtype=torch.bool)   # a sequence's fillers so far
        model.train()   # dropout on, as their generator
        for j in range(fillers):
            end = 2 * j + 2                                        # the placeholder's slot + 1
            placeholder = torch.from_numpy(rng.integers(1, model.n_items, n_fake))
            sequences[:, end - 1] = placeholder
            start = max(0, end - max_len)
            window = sequences[:, start:end]
            window = torch.cat([window, torch.zeros((n_fake, max_len - window.shape[1]), dtype=torch.int64)], 1)
            lengths = torch.full((n_fake,), end - start, dtype=torch.int64)
            nxt = slots[:, j + 1]
            embeddings, grad = input_gradient(model, users, window, lengths, nxt)
            last = torch.arange(n_fake), lengths - 1
            scores = descent_scores(model, embeddings[last], grad[last])[:, :model.n_items]
            scores[:, barred] = torch.inf                          # never drawn (ascending order)
            scores[used] = torch.inf
            lowest = scores.argsort(dim=1)[:, :self.candidates]
            pick = lowest[torch.arange(n_fake), torch.from_numpy(rng.integers(0, lowest.shape[1], n_fake))]
            sequences[:, end - 1], sequences[:, end] = pick, nxt
            used[torch.arange(n_fake), pick] = True
        model.eval()
        return Profiles(_ours(built, sequences.numpy()), None)


def _ours(built, rb_items: np.ndarray) -> np.ndarray:
    """RecBole item ids back to ours."""
    back = np.zeros(int(built.ids.item.max()) + 1, dtype=np.int64)
    back[built.ids.item] = np.arange(built.ids.item.size)
    return back[rb_items]
