"""An adaptive attack on detectors: another attack's fake profiles, reshaped until a named
detector stops flagging them.

A detector is judged against an attacker who knows it (Carlini and Wagner's lesson for
adversarial examples, "Adversarial Examples Are Not Easily Detected", AISec 2017; for shilling
detection, e.g. Williams, Mobasher, Burke, "Defending recommender systems: detection of profile
injection attacks", SOCA 2007, on obfuscated profiles). The attacker here knows the detector and
can run it on its own poisoned table (white-box with respect to the defense):

1. the ``base`` attack (any fake-profile attack: shilling or learned) makes its profiles;
2. the detector is run on the poisoned train table, as the defended pipeline will run it;
3. every flagged fake user has ``camouflage`` (a share) of its fillers replaced by items of a
   real user's profile drawn at random (items the fake user does not hold yet): its profile
   looks more like a real one in popularity, co-occurrence and variance, and keeps all targets;
4. repeat from 2 for at most ``rounds`` rounds, or until no fake user is flagged.

The filler count never changes, so the budget is the base attack's; every item is at the
maximum rating (implicit feedback: a shilling base's filler ratings are not kept). What it costs the attack
(the replaced fillers were chosen to push the targets) is what the benchmark then measures:
target HR@50 and the detector's precision and recall, side by side with the base attack.

Deviation: no paper defines this exact procedure; it is the simplest attack that adapts to a
given detector using only the detector's output (no gradient through it), in the spirit of the
obfuscation strategies of Williams et al. (2007).
"""
from __future__ import annotations

import numpy as np

from attacks.base import ATTACKS, FakeProfileAttack, Profiles, register
from benchmark.core import params as check
from benchmark.core.data import Interactions
from benchmark.core.kinds import DATA_KINDS, Family
from benchmark.core.params import Param
from benchmark.core.registry import DEFENSES


def fake_profile_attack(name: str, value) -> str:
    """The name of a registered fake-profile attack other than evasive."""
    cls = ATTACKS.get_class(value)
    if not issubclass(cls, FakeProfileAttack) or cls is EvasiveAttack:
        raise ValueError(f"{name} must be a fake-profile attack other than evasive, got {value!r}")
    return value


def detector(name: str, value) -> str:
    """The name of a registered detector (a data defense)."""
    if DEFENSES.get_class(value).kind not in DATA_KINDS:
        raise ValueError(f"{name} must be a detector defense, got {value!r}")
    return value


@register
class EvasiveAttack(FakeProfileAttack):
    """Evasive profiles (adaptive to a detector; see the module doc, after Williams, Mobasher,
    Burke, SOCA 2007): the ``base`` attack's profiles with fillers swapped for real users' items
    until ``detector`` flags none of them, or ``rounds`` run out.

    Args:
        fake_user_fraction: fake users as a fraction of real users, in (0, 1].
        filler_items: fillers per profile (default: the mean real train profile length).
        base: the fake-profile attack whose profiles are reshaped (default ``pga``).
        base_params: that attack's own parameters.
        detector: the detector evaded (default ``pca_detector``), any registered detector.
        detector_params: its parameters, as the defended pipeline will use them.
        rounds: detection-and-camouflage rounds.
        camouflage: share of a flagged profile's fillers replaced per round, in (0, 1].

    Example::
        attack = get_attack("evasive", fake_user_fraction=0.05, base="pga", detector="degree_sad")
        poisoned = attack.poison(AttackContext(split, targets), seed=0).train
    """

    name = "evasive"
    family = Family.LEARNED
    knowledge = "white-box"   # it runs the very detector it evades
    surrogate = "the base attack's surrogate, and the detector"   # per instance: describe()
    paper = ("Williams, Mobasher, Burke. Defending recommender systems: detection of profile "
             "injection attacks. Service Oriented Computing and Applications 1(3), 2007")
    test_params = {"fake_user_fraction": 0.1, "filler_items": 5, "base": "random", "rounds": 2}
    invalid_params = ({"fake_user_fraction": 0}, {"base": "fgsm"}, {"base": "nope"}, {"base": "evasive"},
                      {"detector": "apr"}, {"detector": "nope"}, {"rounds": 0}, {"camouflage": 0},
                      {"camouflage": 1.5}, {"base_params": [1]})
    parameters = {"base": Param("pga", fake_profile_attack), "base_params": Param(None, check.mapping),
                  "detector": Param("pca_detector", detector),
                  "detector_params": Param(None, check.mapping), "rounds": Param(5, check.integer),
                  "camouflage": Param(0.5, check.fraction)}

    def _derive(self):
        """The base attack (on this budget) and the detector, built from their names."""
        base_cls = ATTACKS.get_class(self.params["base"])
        self.base = base_cls(fake_user_fraction=self.fake_user_fraction, filler_items=self.filler_items,
                             **self.base_params)
        self.detector = DEFENSES.build(self.params["detector"], **self.detector_params)
        self.surrogate = f"{self.base.surrogate or base_cls.name} + {self.params['detector']}"
        self.single_thread = base_cls.single_thread

    def profiles(self, context, targets, n_fake, fillers, rng) -> Profiles:
        split, train = context.split, context.split.train
        made = self.base.profiles(context, targets, n_fake, fillers, rng)
        rows = [np.setdiff1d(np.asarray(r, np.int64), targets) for r in made.items]
        real = train.users < split.n_real_users
        profiles = np.split(train.items[real][np.argsort(train.users[real], kind="stable")],
                            np.cumsum(np.bincount(train.users[real], minlength=split.n_real_users))[:-1])
        profiles = [p for p in profiles if p.size]
        allowed = self.allowed_fillers(split, targets, fillers)
        flagged_per_round = []
        for _ in range(self.rounds):
            flagged = self._flagged(split, targets, rows)
            flagged_per_round.append(int(flagged.size))
            if flagged.size == 0:
                break
            for f in flagged:
                template = profiles[rng.integers(len(profiles))]
                fresh = template[allowed[template] & ~np.isin(template, rows[f])]
                k = min(fresh.size, max(1, int(np.ceil(self.camouflage * len(rows[f])))))
                if k == 0:
                    continue
                out = rng.choice(len(rows[f]), size=k, replace=False)
                rows[f] = np.sort(np.concatenate([np.delete(rows[f], out), rng.choice(fresh, size=k, replace=False)]))
        else:
            flagged_per_round.append(int(self._flagged(split, targets, rows).size))
        return Profiles([np.union1d(r, targets) for r in rows], None,
                        {**made.budget, "flagged_per_round": flagged_per_round})

    def _flagged(self, split, targets, rows) -> np.ndarray:
        """Indexes (0-based among the fake users) of the fake users the detector flags."""
        train = split.train
        users = np.repeat(np.arange(train.n_users, train.n_users + len(rows)), [len(r) + len(targets) for r in rows])
        items = np.concatenate([np.union1d(r, targets) for r in rows])
        fake = Interactions.build(users, items, np.full(items.size, train.ratings.max(), np.float32),
                                  train.n_users + len(rows), train.n_items)
        flagged = self.detector.clean(split.with_train(train.concat(fake)), seed=split.seed).flagged_users
        return np.sort(flagged[flagged >= train.n_users] - train.n_users)
