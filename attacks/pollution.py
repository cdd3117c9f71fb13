"""Profile pollution at recommendation time: a few items of each real user's recent history are
substituted (or appended) so that a trained sequential model recommends the targets.

Paper: Yue, Zeng, Kou, Song, Wang, "Defending Substitution-Based Profile Pollution Attacks on
Sequential Recommenders", RecSys 2022 (code: Yueeeeeeee/RecSys-Substitution-Defense,
``adversarial/attacker.py::substitution_attack``), white-box on the victim. Targeted version, as
its code does it, with one backward pass per batch of users:

1. the gradient ``g`` of the cross-entropy towards the targets with respect to the embeddings
   of the items the user's history holds (``attacks.sequential.input_gradient``);
2. the ``items`` positions of largest ``||g||`` are substituted, most important first;
3. a substitute ``c`` scores ``cos(e - sign(g), E_c)``, kept only where ``cos(E_c, e) >=
   min_similarity`` (0.5: items like the one replaced); a target is barred right after a target;
4. of the ``candidates`` (10) best, the one that most raises the targets' probability is kept
   (a forward pass each, the history updated position after position).

``mode: append`` is the insertion version of Yue et al. (RecSys 2021, ``AdversarialRankAttacker.
attack``: ``items`` new items at the end of the history, chosen the same way with no similarity
constraint and the targets allowed). Deviations: the code attacks one target at a time; here the
loss is the mean over the seed's targets (the benchmark scores all of them per user), and every
real user's history is attacked (the code scores the first 8,192 test users). Budget, in clear
units: ``items`` changed per user (the code: 1 on its smaller datasets, 2 on ML-1M).
"""
from __future__ import annotations

import numpy as np
import torch

from attacks.base import PollutionAttack, register
from attacks.sequential import descent_scores, input_gradient, target_log_prob
from benchmark.core import params as check
from benchmark.core.params import Param

YUE_2022 = ("Yue, Zeng, Kou, Song, Wang. Defending Substitution-Based Profile Pollution Attacks on "
            "Sequential Recommenders. RecSys 2022 (code: Yueeeeeeee/RecSys-Substitution-Defense)")
MODES = ("substitute", "append")


@register
class ProfilePollution(PollutionAttack):
    """Substitute (or append) ``items`` history items per user to push the targets (Yue et al.,
    RecSys 2022; appending: RecSys 2021).

    Args:
        items: history items changed per user (int >= 1).
        mode: substitute (positions of largest gradient) or append (at the end).
        min_similarity: a substitute's least cosine similarity to the item it replaces.
        candidates: substitutes tried per position (a forward pass each).

    Example::
        attack = get_attack("profile_pollution", items=1)
        history = attack.polluted(model, history, targets, np.random.default_rng(0))
    """

    name = "profile_pollution"
    paper = YUE_2022
    knowledge = "white-box"
    budget_param = "items"
    default_sweep = (1, 2, 3)
    invalid_params = ({"items": 0}, {"items": 1.5}, {"mode": "insert"}, {"min_similarity": 2},
                      {"candidates": 0})
    parameters = {"items": Param(1, check.integer),
                  "mode": Param("substitute", check.choice, options=MODES),
                  "min_similarity": Param(0.5, check.number, low=-1.0, high=1.0),
                  "candidates": Param(10, check.integer)}
    batch_users = 256

    @staticmethod
    def unsupported(model) -> str | None:
        """Why the attack cannot run on ``model`` (None: it can)."""
        if not hasattr(model, "ITEM_SEQ"):
            return f"{type(model).__name__} reads no history (not a sequential model)"
        if not isinstance(getattr(model, "item_embedding", None), torch.nn.Embedding):
            return f"{type(model).__name__} has no item_embedding table to take gradients on"
        return None

    def polluted(self, model, history, targets, rng):
        from benchmark.core.sequences import Sequences
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        items, lengths = history.items.clone(), history.lengths.clone()
        was_training = model.training
        model.eval()
        try:
            for s in range(0, items.shape[0], self.batch_users):
                part = slice(s, s + self.batch_users)
                items[part], lengths[part] = self._batch(model, history.users[part], items[part], lengths[part], targets)
        finally:
            model.train(was_training)
        return Sequences(history.users, items, lengths, history.targets)

    def _batch(self, model, users, items, lengths, targets):
        if self.mode == "append":
            room = items.shape[1]
            for _ in range(self.items):   # make space at the end, dropping the oldest item when full
                full = lengths >= room
                items[full] = torch.roll(items[full], -1, dims=1)
                lengths = torch.where(full, lengths - 1, lengths)
                items[torch.arange(items.shape[0]), lengths] = targets[0]
                lengths = lengths + 1
                self._substitute(model, users, items, lengths, targets, lengths - 1, constrained=False)
            return items, lengths
        embeddings, grad = input_gradient(model, users, items, lengths, targets)
        importance = grad.norm(dim=-1)
        importance[torch.arange(items.shape[1])[None, :] >= lengths[:, None]] = -1.0
        order = importance.argsort(dim=1, descending=True)[:, :min(self.items, items.shape[1])]
        for k in range(order.shape[1]):
            self._substitute(model, users, items, lengths, targets, order[:, k], constrained=True,
                             gradient=(embeddings, grad))
        return items, lengths

    @torch.no_grad()
    def _best_of(self, model, users, items, lengths, targets, position, candidates):
        rows = torch.arange(items.shape[0])
        best, best_value = candidates[:, 0].clone(), torch.full((items.shape[0],), -torch.inf)
        for j in range(candidates.shape[1]):
            trial = items.clone()
            trial[rows, position] = candidates[:, j]
            value = target_log_prob(model, users, trial, lengths, targets)
            better = value > best_value
            best[better], best_value[better] = candidates[better, j], value[better]
        return best

    def _substitute(self, model, users, items, lengths, targets, position, constrained, gradient=None):
        """Replace the item at ``position`` (one per row) in place, as steps 3-4 say."""
        rows = torch.arange(items.shape[0])
        embeddings, grad = gradient if gradient is not None else input_gradient(model, users, items, lengths, targets)
        e, g = embeddings[rows, position], grad[rows, position]
        n_real = int(model.n_items)                                   # BERT4Rec's mask token is no item
        scores = descent_scores(model, e, g)[:, :n_real]
        table = model.item_embedding.weight.detach()[:n_real]
        if constrained:
            similar = torch.nn.functional.cosine_similarity(table.unsqueeze(0), e.unsqueeze(1), dim=-1)
            scores = torch.where(similar >= self.min_similarity, scores, torch.full_like(scores, -torch.inf))
            after_target = (position > 0) & torch.isin(items[rows, (position - 1).clamp_min(0)], targets)
            scores[after_target.nonzero().view(-1, 1), targets.view(1, -1)] = -torch.inf
        candidates = scores.topk(min(self.candidates, n_real - 1), dim=1)
        choice = candidates.indices.clone()
        keep_original = ~torch.isfinite(candidates.values)            # no similar item: leave it
        keep_original |= (position >= lengths).unsqueeze(1)            # padding (a history shorter than items)
        choice[keep_original] = items[rows, position].unsqueeze(1).expand_as(choice)[keep_original]
        items[rows, position] = self._best_of(model, users, items, lengths, targets, position, choice)
