"""PamaCF on the tiny dataset: the per-user eps follows the user's embedding scale."""
import math

import pytest
import torch

from defenses.adversarial import APR
from defenses.pamacf import PamaCF, magnitude
from tests.conftest import first_defended_batch

pytestmark = pytest.mark.usefixtures("one_thread")


make = first_defended_batch


def test_magnitude_is_a_sigmoid_of_the_relative_squared_norm():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [1.0, 0.0]])   # squared norms 1, 4, 25, 1
    scale = magnitude(rows, user_lambda=2.0)
    assert torch.allclose(scale, 2 * torch.sigmoid(torch.tensor([1.0, 4.0, 25.0, 1.0]) / 7.75 - 1))
    assert scale[2] > scale[1] > scale[0] == scale[3]
    assert torch.allclose(magnitude(torch.ones(5, 3), 3.0), torch.tensor(1.5))


@pytest.mark.parametrize("steps", [1, 3])
def test_larger_users_get_larger_perturbations(tiny_split, steps):
    pama = PamaCF(eps=0.3, steps=steps)
    built, trainer, batch = make(tiny_split, pama)
    model = built.model
    with torch.no_grad():
        model.user_embedding.weight[::3] *= 3
    deltas = pama.adversarial_deltas(batch, model.calculate_loss(batch))
    users, scale = batch[trainer.uid], pama.last_scale
    norms = deltas[0].norm(dim=1)
    assert torch.all(norms[users] <= 0.3 * scale + 1e-5)
    if steps == 1:
        assert torch.allclose(norms[users], 0.3 * scale, atol=1e-5)
        size = model.user_embedding.weight.detach().norm(dim=1)
        touched = users.unique()
        assert norms[touched[size[touched].argmax()]] == norms[touched].max()
        assert norms[touched[size[touched].argmin()]] == norms[touched].min()
        item = batch[trainer.iid][0]
        rows = torch.cat([scale[batch[trainer.iid] == item], scale[batch[trainer.neg_iid] == item]])
        assert torch.allclose(deltas[1][item].norm(), 0.3 * rows.mean(), atol=1e-5)
    assert float(scale.max() - scale.min()) > 0.5


def test_equal_embedding_scales_are_apr(tiny_split):
    pama, apr = PamaCF(eps=0.4), APR(eps=0.4)
    built, _, batch = make(tiny_split, pama)
    model = built.model
    with torch.no_grad():
        weight = model.user_embedding.weight
        weight.copy_(weight / weight.norm(dim=1, keepdim=True))
    apr.start(model, None)
    loss = model.calculate_loss(batch)
    for a, b in zip(pama.adversarial_deltas(batch, loss), apr.adversarial_deltas(batch, loss)):
        assert torch.allclose(a, b, atol=1e-6)


def test_neumf_scale_spans_both_user_tables(tiny_split):
    pama = PamaCF()
    built, trainer, batch = make(tiny_split, pama, model="NeuMF")
    model = built.model
    pama.adversarial_deltas(batch, model.calculate_loss(batch))
    users = batch[trainer.uid]
    squared = (model.user_mf_embedding.weight[users].pow(2).sum(1)
               + model.user_mlp_embedding.weight[users].pow(2).sum(1)).detach()
    assert torch.allclose(pama.last_scale, 2 * torch.sigmoid(squared / squared.mean() - 1), atol=1e-6)


@pytest.mark.parametrize("model", ["BPR", "NeuMF", "LightGCN"])
def test_trains_with_adv_loss_history(tiny_split, model):
    pama = PamaCF(pretrain_epochs=1)
    built, trainer, _ = make(tiny_split, pama, model=model)
    result = trainer.fit()
    assert len(result.history["adv_loss"]) == 2
    assert all(math.isfinite(v) for v in result.history["adv_loss"] + result.history["train_loss"])
    assert pama.describe()["params"]["user_lambda"] == 2.0


def test_refuses_bad_user_lambda():
    for bad in (0, -1.0, "2", float("inf"), True):
        with pytest.raises(ValueError, match="user_lambda"):
            PamaCF(user_lambda=bad)


def test_lightgcn_scale_and_perturbation_are_on_the_propagated_rows(tiny_split):
    """As the reference: ||p_u||^2 of the propagated user rows, delta added after propagation."""
    pama = PamaCF(eps=0.3)
    assert pama.target == "propagated" and pama.pretrain_epochs == 4
    built, trainer, batch = make(tiny_split, pama, model="LightGCN")
    model = built.model
    deltas = pama.adversarial_deltas(batch, model.calculate_loss(batch))
    users = batch[trainer.uid]
    with torch.no_grad():
        users_all, items_all = model.forward()
    squared = users_all[users].pow(2).sum(1)
    assert torch.allclose(pama.last_scale, 2 * torch.sigmoid(squared / squared.mean() - 1), atol=1e-6)
    assert torch.allclose(deltas[0][users].norm(dim=1), 0.3 * pama.last_scale, atol=1e-5)
    # the ego mode measures the ego rows instead: another scale
    ego = PamaCF(eps=0.3, target="ego")
    ego.start(model, trainer)
    ego.adversarial_deltas(batch, model.calculate_loss(batch))
    ego_rows = model.user_embedding.weight.detach()[users].pow(2).sum(1)
    assert torch.allclose(ego.last_scale, 2 * torch.sigmoid(ego_rows / ego_rows.mean() - 1), atol=1e-6)
    assert not torch.allclose(ego.last_scale, pama.last_scale, atol=1e-3)
    adv = pama.perturbed_loss(batch, deltas)
    with torch.no_grad():
        u = users_all[users] + deltas[0][users]
        pos, neg = (items_all + deltas[1])[batch[trainer.iid]], (items_all + deltas[1])[batch[trainer.neg_iid]]
        mf = model.mf_loss((u * pos).sum(1), (u * neg).sum(1))
        reg = model.reg_loss(model.user_embedding(users), model.item_embedding(batch[trainer.iid]),
                             model.item_embedding(batch[trainer.neg_iid]), require_pow=model.require_pow)
    assert torch.allclose(adv.detach(), mf + model.reg_weight * reg, atol=1e-6)
    assert "forward" not in vars(model)


def test_bpr_history_is_the_previous_behaviour(tiny_split):
    """BPR has no propagation: both targets are the tables; the history recorded with the code
    before ``target`` existed (PamaCF(pretrain_epochs=1), 3 epochs on tiny, seed 0)."""
    from tests.test_vat import fresh_trainer
    for target in ("propagated", "ego"):
        history = fresh_trainer(tiny_split, PamaCF(pretrain_epochs=1, target=target)).fit().history
        assert history["train_loss"] == pytest.approx([0.693602454662323, 1.7744203567504884, 1.670803689956665],
                                                      rel=1e-5)
        assert history["adv_loss"] == pytest.approx([1.1954442739486695, 1.115663266181946, 1.0427327871322631],
                                                    rel=1e-5)
