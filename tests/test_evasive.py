"""The detector-adaptive attack: fewer of its fake users are flagged by the detector it knows
than of the base attack's, with the same budget and targets (ml-100k, random base profiles)."""
import numpy as np
import pytest

from attacks.base import AttackContext, get_attack
from benchmark.core.data import load_dataset, split_dataset
from benchmark.core.targets import choose_targets
from defenses.base import get_defense


@pytest.fixture(scope="module")
def context():
    split = split_dataset(load_dataset("ml-100k"), seed=0)
    return AttackContext(split, choose_targets(split.train, "unpopular", count=5, seed=0))


def flagged_fake(context, result, detector):
    flagged = get_defense(detector).clean(context.split.with_train(result.train), seed=0).flagged_users
    return int(np.count_nonzero(flagged >= context.split.n_real_users))


@pytest.mark.parametrize("detector", ["pca_detector", "degree_sad"])
def test_evades_the_detector_it_knows(context, detector):
    base = get_attack("random", fake_user_fraction=0.05).poison(context, seed=0)
    evasive = get_attack("evasive", fake_user_fraction=0.05, base="random", detector=detector).poison(context, seed=0)
    before, after = flagged_fake(context, base, detector), flagged_fake(context, evasive, detector)
    assert before >= 0.5 * base.n_fake_users            # the base profiles are caught
    assert after < before / 2                           # the reshaped ones mostly pass
    assert evasive.budget["flagged_per_round"][0] == before
    assert evasive.budget["flagged_per_round"][-1] == after
    assert (evasive.n_fake_users, evasive.budget["filler_items"]) == (base.n_fake_users, base.budget["filler_items"])
    fake = evasive.train.take(evasive.train.users >= context.split.n_real_users)
    per_user = np.bincount(fake.users - context.split.n_real_users)
    assert (per_user == base.budget["filler_items"] + len(context.targets)).all()
    assert np.isin(context.targets, fake.items).all()
