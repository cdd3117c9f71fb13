"""AUSH (Lin et al., CIKM 2020): the straight-through top-k, the templates, the GAN's training
and the profiles it makes, on the tiny checked-in dataset (``tiny_split``)."""
import numpy as np
import pytest
import torch

from attacks.aush import AUSH
from attacks.base import AttackContext
from attacks.learned import Templates, keep_top

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def targets(tiny_split):
    counts = tiny_split.train.item_counts()
    return np.sort(np.argsort(counts, kind="stable")[:2])   # the two least popular items


def test_keep_top_keeps_candidates_first_and_passes_the_gradient():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 12, generator=generator, requires_grad=True)
    allowed = torch.ones(4, 12, dtype=torch.bool)
    allowed[:, [0, 1]] = False
    candidates = torch.zeros(4, 12, dtype=torch.bool)
    candidates[:, 2:5] = True
    candidates[0, 2:10] = True
    out = keep_top(scores, candidates, allowed, 5)
    assert torch.equal(out.detach().sum(1), torch.full((4,), 5.0))
    assert set(torch.nonzero(out[0].detach()).flatten().tolist()) <= set(range(2, 10))
    for row in range(1, 4):   # 3 candidates: all kept, then the 2 best other allowed items
        kept = set(torch.nonzero(out[row].detach()).flatten().tolist())
        others = torch.argsort(-scores[row, 5:].detach())[:2] + 5
        assert kept == {2, 3, 4} | set(others.tolist())
    weights = torch.rand(4, 12, generator=generator)
    (out * weights).sum().backward()
    assert torch.allclose(scores.grad, weights * allowed)


def test_templates_pool_selected_and_real_samples(tiny_split, targets):
    generator = torch.Generator().manual_seed(1)
    data = Templates.build(tiny_split, targets, 12, 3, generator)
    counts = tiny_split.train.item_counts()
    assert not data.allowed[torch.as_tensor(targets)].any()
    assert torch.all(data.R.sum(1)[data.pool] >= 12)
    popular = np.argsort(-counts, kind="stable")
    popular = [i for i in popular if data.allowed[i]][:20]
    assert data.selected.numel() == 3 and set(data.selected.tolist()) <= set(popular)
    users = data.sample(7, generator)
    assert users.unique().numel() == 7
    real = data.reduced(users, 12, generator)
    assert torch.all(real.sum(1) == 12) and torch.all(real <= data.R[users])


def test_selected_items_are_rated_together_by_a_group_without_targets(tiny_split, targets):
    """The authors' ``exp_select``: a combination of the 20 most popular items rated in full
    by the most (at least ``group``) real users who hold no target."""
    from attacks.learned import select_items
    train, n_real = tiny_split.train, tiny_split.n_real_users
    real = train.users < n_real
    R = torch.zeros(n_real, train.n_items)
    R[torch.as_tensor(train.users[real]), torch.as_tensor(train.items[real])] = 1.0
    no_target = R[:, torch.as_tensor(targets)].sum(1) == 0
    counts = torch.as_tensor(np.bincount(train.items[real], minlength=train.n_items))
    allowed = counts > 0
    allowed[torch.as_tensor(targets)] = False
    holders = [int((R[no_target][:, select_items(R[no_target], counts, allowed, 2, g,
                                                 torch.Generator().manual_seed(0))].sum(1) == 2).sum())
               for g in (1, 10_000)]
    assert holders[0] >= 1                  # the first combination held by a group of >= 1 user
    best = max(int((R[no_target][:, [a, b]].sum(1) == 2).sum())
               for a in range(train.n_items) for b in range(a + 1, train.n_items)
               if a in set(np.argsort(-counts.numpy(), kind="stable")[:20].tolist()) - set(targets.tolist())
               and b in set(np.argsort(-counts.numpy(), kind="stable")[:20].tolist()) - set(targets.tolist()))
    assert holders[1] == best               # no combination reaches the group: the most held one
    assert select_items(R, counts, allowed, 0, 30, torch.Generator()).numel() == 0


def train(split, targets, zr_ratio):
    """The GAN trained on the tiny split: its trace, and the mean keep-score of the selected
    items the templates lack."""
    attack = AUSH(filler_items=8, hidden=16, epochs=40, batch_size=16, selected_items=3, zr_ratio=zr_ratio)
    generator = torch.Generator().manual_seed(2)
    data = Templates.build(split, targets, 8, 3, generator)
    G, trace = attack.train_gan(data, 8, generator, seed=3)
    with torch.no_grad():
        templates = data.R[data.pool]
        scores = G(templates)[:, data.selected]
    return np.array(trace), float(scores[templates[:, data.selected] == 0].mean())


def test_shilling_loss_pulls_selected_items_in_and_zero_reconstruction_holds_them_back(tiny_split, targets):
    trace, lacking_score = train(tiny_split, targets, 0.0)
    assert trace[-4:, 2].mean() < 0.1 * trace[:4, 2].mean()     # L_shill falls
    assert np.all(trace[:, 3] == 0)                             # no L_recon without ZR
    assert lacking_score > 0.9                                  # selected items scored high
    trace, lacking_score_zr = train(tiny_split, targets, 0.6)
    assert trace[:, 3].max() > 0
    assert lacking_score_zr < lacking_score - 0.1               # ZR pulls their scores down


def test_profiles_hold_the_targets_and_fillers_from_a_template(tiny_split, targets):
    attack = AUSH(**{**AUSH.test_params, "filler_items": 6})
    out = attack.poison(AttackContext(split=tiny_split, targets=targets), seed=4)
    train, n_real = out.train, tiny_split.n_real_users
    rated = set(np.unique(tiny_split.train.items).tolist()) - set(targets.tolist())
    real = [set(tiny_split.train.items[tiny_split.train.users == u].tolist()) for u in range(n_real)]
    popular = set(np.argsort(-tiny_split.train.item_counts(), kind="stable")[:10].tolist())
    assert out.n_fake_users == max(1, round(AUSH.test_params["fake_user_fraction"] * n_real))
    for u in range(n_real, n_real + out.n_fake_users):
        items = train.items[train.users == u]
        fillers = set(np.setdiff1d(items, targets).tolist())
        assert len(np.unique(items)) == len(items) == 6 + len(targets)
        assert set(targets.tolist()) <= set(items.tolist()) and fillers <= rated
        # fillers: a real user's items plus (at most 3) popular selected items
        assert any(len(fillers - profile - popular) == 0 and len(fillers - profile) <= 3 for profile in real)


def test_too_many_fillers_are_refused(tiny_split, targets):
    with pytest.raises(ValueError, match="lower"):
        AUSH(filler_items=1000).poison(AttackContext(split=tiny_split, targets=targets), seed=0)


@pytest.mark.parametrize("params", AUSH.invalid_params)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        AUSH(**params)
