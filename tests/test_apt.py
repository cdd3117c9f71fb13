"""APT (defenses/apt.py) on the tiny dataset through the real trainer: the influence, the ERM
profiles drawn from it, the ERM rows' share of the loss, and the models it refuses."""
import math

import pytest
import torch

import defenses  # noqa: F401  (fills the registry)
from benchmark.core.embeddings import embedding_tables
from defenses.apt import APT
from tests.test_tce import first_batch, make

SMALL = dict(profile_size=10, lissa_steps=5, lissa_batch=256, pretrain_epochs=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def started(split, model="BPR", **params):
    apt = APT(**{**SMALL, **params})
    built, trainer = make(split, apt, model=model)
    apt.start(built.model, trainer)
    return apt, built, trainer


def test_influence_is_the_score_derivative_along_the_lissa_estimate(tiny_split):
    apt, built, trainer = started(tiny_split, lissa_steps=1)
    model = built.model
    # recompute independently: one LiSSA step v = g + g - H g, then the derivative of every
    # proxy's BPR score p_u . q_j along v, in closed form
    params = [t.weight for t in embedding_tables(model)]
    seed = apt.rng.get_state()
    influence = apt.influence()
    apt.rng.set_state(seed)
    n = trainer.users.shape[0]
    g = torch.autograd.grad(apt._risk(torch.arange(n)), params)
    index = torch.randperm(n, generator=apt.rng)[:apt.lissa_batch]
    grads = torch.autograd.grad(apt._risk(index), params, create_graph=True)
    hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, g)), params)
    v = [gi + gi - hi for gi, hi in zip(g, hv)]
    counts = torch.bincount(trainer.users, minlength=model.n_users).float()
    counts[counts == 0] = float("inf")
    proxies = torch.argsort(counts, stable=True)[:apt.proxies]
    user, item = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    expected = torch.zeros(trainer.n_items)
    for u in proxies.tolist():
        expected += v[0][u] @ item.T + user[u] @ v[1].T       # d(p_u . q_j) along (v_user, v_item)
    assert torch.allclose(influence[1:], expected[1:], rtol=1e-3, atol=1e-6)
    assert (influence[1:] < 0).any() and (influence[1:] > 0).any()


def test_profiles_use_only_risk_lowering_items_and_favour_the_lowest(tiny_split):
    apt, built, trainer = started(tiny_split, temperature=200.0, profile_size=3)
    seed = apt.rng.get_state()
    influence = apt.influence()
    apt.rng.set_state(seed)
    profiles = apt.draw_profiles()
    assert profiles.shape == (apt.n_fake, trainer.n_items)
    assert torch.all(profiles.sum(1) == 3)
    chosen = profiles.any(0)
    assert torch.all(influence[chosen] < 0)
    lowest = torch.argsort(torch.nan_to_num(influence, nan=1e9))[:3]
    assert profiles[:, lowest].float().mean() > 0.9            # sharp: nearly always the 3 lowest


def test_erm_rows_join_the_loss_and_train_only_their_own_users(tiny_split):
    apt, built, trainer = started(tiny_split)
    model = built.model
    batch = first_batch(trainer)
    loss = apt.batch_loss(model, batch, epoch=0)
    users, items = apt._erm_rows
    assert users.numel() == apt.n_fake * 10
    erm = apt._erm_batch(50)
    assert torch.all(erm[trainer.uid] >= model.n_users)
    assert not apt._profiles[erm[trainer.uid] - model.n_users, erm[trainer.neg_iid]].any()
    real = model.calculate_loss(batch)
    assert not torch.allclose(loss, real)
    loss.backward()
    assert apt.fake[0].grad is not None and apt.fake[0].grad.abs().sum() > 0
    history = apt.end_epoch(0)
    assert math.isfinite(history["erm_loss"]) and history["erm_candidates"] > 0


def test_training_runs_and_is_deterministic(tiny_split):
    runs = []
    for _ in range(2):
        apt = APT(**{**SMALL, "pretrain_epochs": 1, "every": 1})
        built, trainer = make(tiny_split, apt, epochs=3)
        runs.append((built, trainer.fit()))
    (a_built, a), (b_built, b) = runs
    assert a.history == b.history
    assert a.history["erm_loss"][0] == 0.0 and all(v > 0 for v in a.history["erm_loss"][1:])
    sa, sb = a_built.model.state_dict(), b_built.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    built, trainer = make(tiny_split, APT(**SMALL), model="NeuMF", epochs=2)
    assert all(math.isfinite(v) for v in trainer.fit().history["train_loss"])


def test_refuses_models_without_per_batch_user_rows(tiny_split):
    for model in ("LightGCN", "MultiVAE"):
        built, trainer = make(tiny_split, APT(**SMALL), model=model)
        with pytest.raises(ValueError, match="APT"):
            trainer.fit()


@pytest.mark.parametrize("params", APT.invalid_params)
def test_refuses_bad_parameters(params):
    with pytest.raises(ValueError):
        APT(**params)
