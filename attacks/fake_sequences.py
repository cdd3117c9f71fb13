"""Heuristic fake sequences against next-item recommenders: fake users whose time-ordered
profiles teach a sequential model to predict the targets.

A sequential model learns transitions (what comes after what), so where the targets sit in a fake
user's sequence matters; the base (``FakeProfileAttack``) gives the rows timestamps in the order a
recipe writes them. Three recipes, from the baselines of the sequential poisoning literature
(Zhang et al., "Practical Data Poisoning Attack against Next-Item Recommendation", WWW 2020, LOKI;
Yue et al., "Black-Box Attacks on Sequential Recommenders via Data-Free Model Extraction", RecSys
2021, code Yueeeeeeee/RecSys-Extraction-Attack)::

    recipe                 fillers (items rated in train, never a target)    targets
    random_sequence        uniform, in random order                         each once, at random positions
    popular_sequence       drawn in proportion to train popularity           each once, at random positions
    interleaved_sequence   drawn in proportion to train popularity           before and after every filler:
                                                                            t, x1, t, x2, ..., x_f, t

``interleaved_sequence`` is the pattern of Yue et al.'s generator (``generate_poisoned_data`` in
``adversarial/retrainer.py``: a target, then an item, then a target ...) with its fillers drawn by
popularity instead of by the surrogate's gradient (``attacks/sequence_generator.py`` is that
learned version); each ``t`` is one of the targets drawn uniformly, so a target repeats within a
sequence as in their code (rows of one fake user may repeat a target). Its default length matches
a real user: ``filler_items`` defaults to half the mean real train sequence, so ``2 f + 1`` items.
The budget is ``fake_user_fraction`` of the real users, as for every fake-profile attack.
"""
from __future__ import annotations

import numpy as np

from attacks.base import FakeProfileAttack, Profiles, register
from benchmark.core.kinds import Family

YUE_2021 = ("Yue, He, Zamani, McAuley. Black-Box Attacks on Sequential Recommenders via Data-Free "
            "Model Extraction. RecSys 2021 (code: Yueeeeeeee/RecSys-Extraction-Attack)")
LOKI = ("Zhang, Li, Ding, Gao. Practical Data Poisoning Attack against Next-Item Recommendation. "
        "WWW 2020")


def target_slots(targets: np.ndarray, n_fake: int, slots: int, rng) -> np.ndarray:
    """(n_fake, slots) targets: every target once in random order first (as many as fit), then
    targets drawn uniformly, so each fake sequence holds every target it has room for."""
    chosen = targets[rng.integers(0, targets.size, size=(n_fake, slots))]
    first = rng.permuted(np.tile(targets, (n_fake, 1)), axis=1)[:, :slots]
    chosen[:, :first.shape[1]] = first
    return chosen


class FakeSequenceAttack(FakeProfileAttack):
    """Fake users whose sequences hold the targets among fillers drawn by ``filler_weights``."""

    family = Family.SHILLING
    knowledge = "black-box"
    test_params = {"filler_items": 8}
    invalid_params = ({"fake_user_fraction": 0}, {"fake_user_fraction": 1.5}, {"filler_items": 0},
                      {"filler_items": "x"})

    def filler_weights(self, context, allowed: np.ndarray) -> np.ndarray:
        return allowed.astype(np.float64)

    def draw_fillers(self, context, targets, n_fake, fillers, rng) -> np.ndarray:
        """(n_fake, fillers) distinct filler items per row, by ``filler_weights``."""
        allowed = self.allowed_fillers(context.split, targets, fillers)
        weights = self.filler_weights(context, allowed)
        p = weights / weights.sum()
        return np.stack([rng.choice(p.size, size=fillers, replace=False, p=p) for _ in range(n_fake)])

    def profiles(self, context, targets, n_fake, fillers, rng):
        drawn = self.draw_fillers(context, targets, n_fake, fillers, rng)
        rows = []
        for filler in drawn:
            sequence = np.concatenate([filler, targets])
            rows.append(sequence[rng.permutation(sequence.size)])
        return Profiles(np.stack(rows), None)


@register
class RandomSequence(FakeSequenceAttack):
    """Random fillers with the targets at random positions: the random attack (Lam and Riedl, WWW
    2004) written as sequences, LOKI's random baseline (Zhang et al., WWW 2020).

    Args:
        fake_user_fraction: fake users as a fraction of the real users, in (0, 1].
        filler_items: fillers per sequence (default: the mean real train sequence length).

    Example::
        attack = get_attack("random_sequence", fake_user_fraction=0.03)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "random_sequence"
    paper = LOKI + "; random-profile baseline"


@register
class PopularSequence(FakeSequenceAttack):
    """Fillers drawn by popularity (what real sequences look like) with the targets at random
    positions: LOKI's popular-item baseline (Zhang et al., WWW 2020).

    Args:
        fake_user_fraction: fake users as a fraction of the real users, in (0, 1].
        filler_items: fillers per sequence (default: the mean real train sequence length).

    Example::
        attack = get_attack("popular_sequence", fake_user_fraction=0.03)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "popular_sequence"
    paper = LOKI + "; popular-item baseline"

    def filler_weights(self, context, allowed):
        train = context.split.train
        real = train.users < context.split.n_real_users
        return np.bincount(train.items[real], minlength=train.n_items) * allowed


class Interleaved:
    """The shape of Yue et al.'s fake sequences, ``t, x1, t, x2, ..., x_f, t`` (a mixin before a
    ``FakeProfileAttack``): ``2 f + 1`` rows, targets repeated, ``f`` defaulting to half the mean
    real train sequence so that a fake user is as long as a real one."""

    repeats_targets = True

    @staticmethod
    def profile_length(fillers: int, n_targets: int, selected: int = 0) -> int:
        return 2 * fillers + 1

    def fillers(self, split) -> int:
        real = np.count_nonzero(split.train.users < split.n_real_users)
        return self.filler_items or max(1, round(real / split.n_real_users / 2))


@register
class InterleavedSequence(Interleaved, PopularSequence):
    """``t, x1, t, x2, ..., x_f, t``: a target before and after every popular filler, the pattern
    of Yue et al.'s fake sequences (RecSys 2021) with popular instead of learned fillers.

    Args:
        fake_user_fraction: fake users as a fraction of the real users, in (0, 1].
        filler_items: fillers per sequence (default: half the mean real train sequence length).

    Example::
        attack = get_attack("interleaved_sequence", fake_user_fraction=0.03)
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "interleaved_sequence"
    paper = YUE_2021

    def profiles(self, context, targets, n_fake, fillers, rng):
        drawn = self.draw_fillers(context, targets, n_fake, fillers, rng)
        chosen = target_slots(targets, n_fake, fillers + 1, rng)
        rows = np.empty((n_fake, 2 * fillers + 1), dtype=np.int64)
        rows[:, 0::2], rows[:, 1::2] = chosen, drawn
        return Profiles(rows, None)
