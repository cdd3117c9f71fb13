"""VAT on the tiny dataset: the per-user eps follows the user's fit, and training runs through it."""
import math

import pytest
import torch
import torch.nn.functional as F

import defenses.vat as vat_module
from defenses.adversarial import APR
from defenses.vat import VAT, row_losses, vulnerability
from tests.conftest import first_defended_batch

pytestmark = pytest.mark.usefixtures("one_thread")


make = first_defended_batch


def test_vulnerability_grows_as_the_users_loss_falls():
    users = torch.tensor([1, 1, 2, 3, 3, 3])
    losses = torch.tensor([0.1, 0.1, 1.0, 0.5, 0.5, 0.5])   # per user: 0.2, 1.0, 1.5; mean 0.9
    scale = vulnerability(users, losses, user_lambda=2.0)
    expected = {1: 2 * torch.sigmoid(torch.tensor(0.9 / 0.2 - 1)),
                2: 2 * torch.sigmoid(torch.tensor(0.9 / 1.0 - 1)),
                3: 2 * torch.sigmoid(torch.tensor(0.9 / 1.5 - 1))}
    for user, value in expected.items():
        assert torch.allclose(scale[users == user], value)
    assert scale[0] > scale[2] > scale[3] and bool(((scale > 0) & (scale < 2)).all())
    # every user's loss alike: user_lambda / 2, i.e. APR's eps at the default user_lambda = 2
    same = torch.tensor([0.5, 0.5, 1.0, 1 / 3, 1 / 3, 1 / 3])
    assert torch.allclose(vulnerability(users, same, 2.0), torch.tensor(1.0))
    # L_u sums the user's rows of the batch (as the reference): equal rows, more rows, less eps
    rows = vulnerability(users, torch.ones(6), 2.0)
    assert rows[2] > rows[0] > rows[3]


def test_row_losses_are_the_models_bpr_loss(tiny_split):
    vat = VAT()
    built, _, batch = make(tiny_split, vat)
    rows = row_losses(built.model, batch)
    assert rows.shape == (len(batch),) and not rows.requires_grad
    assert torch.allclose(rows.mean(), built.model.calculate_loss(batch).detach(), atol=1e-5)


@pytest.mark.parametrize("steps", [1, 3])
def test_each_user_row_is_perturbed_by_its_own_eps(tiny_split, steps):
    vat = VAT(eps=0.3, steps=steps)
    built, trainer, batch = make(tiny_split, vat)
    model = built.model
    with torch.no_grad():   # spread the users' fit: scale some users' embeddings up
        model.user_embedding.weight[::3] *= 3
    deltas = vat.adversarial_deltas(batch, model.calculate_loss(batch))
    users, scale = batch[trainer.uid], vat.last_scale
    losses = row_losses(model, batch)
    per_user = torch.zeros(model.user_embedding.num_embeddings).index_add_(0, users, losses)
    norms = deltas[0].norm(dim=1)
    assert torch.all(norms[users] <= 0.3 * scale + 1e-5)
    if steps == 1:   # FGSM: exactly eps_u on every user row the batch touches
        assert torch.allclose(norms[users], 0.3 * scale, atol=1e-5)
        # the best-fitted user of the batch gets the largest perturbation, the worst the smallest
        touched = users.unique()
        assert norms[touched[per_user[touched].argmin()]] == norms[touched].max()
        assert norms[touched[per_user[touched].argmax()]] == norms[touched].min()
        # an item row: the mean eps of the batch rows that touch it (as positive or negative)
        item = batch[trainer.iid][0]
        rows = torch.cat([scale[batch[trainer.iid] == item], scale[batch[trainer.neg_iid] == item]])
        assert torch.allclose(deltas[1][item].norm(), 0.3 * rows.mean(), atol=1e-5)
    assert float(scale.max() - scale.min()) > 0.1


def test_equal_fit_everywhere_is_apr(tiny_split, monkeypatch):
    def same_loss_per_user(model, batch):   # every user's summed loss is 1
        users = batch[model.USER_ID]
        return 1.0 / torch.bincount(users)[users].float()

    monkeypatch.setattr(vat_module, "row_losses", same_loss_per_user)
    vat, apr = VAT(eps=0.4), APR(eps=0.4)
    built, _, batch = make(tiny_split, vat)
    apr.start(built.model, None)
    loss = built.model.calculate_loss(batch)
    for a, b in zip(vat.adversarial_deltas(batch, loss), apr.adversarial_deltas(batch, loss)):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("model", ["BPR", "NeuMF", "LightGCN"])
def test_trains_with_adv_loss_history(tiny_split, model):
    vat = VAT(pretrain_epochs=1)
    built, trainer, _ = make(tiny_split, vat, model=model)
    result = trainer.fit()
    assert len(result.history["adv_loss"]) == 2
    assert all(math.isfinite(v) for v in result.history["adv_loss"] + result.history["train_loss"])
    assert vat.last_scale is not None and bool((vat.last_scale > 0).all())
    assert vat.describe()["params"]["user_lambda"] == 2.0


def test_refuses_bad_user_lambda():
    for bad in (0, -1.0, "2", float("nan"), True):
        with pytest.raises(ValueError, match="user_lambda"):
            VAT(user_lambda=bad)


# -- graph models: the perturbation on the propagated representations (the reference's) --------
def lightgcn_loss(model, batch, users_all, items_all):
    """LightGCN's ``calculate_loss`` from given propagated rows (BPR on them + reg on the ego rows)."""
    user, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    u = users_all[user]
    mf = model.mf_loss((u * items_all[pos]).sum(1), (u * items_all[neg]).sum(1))
    reg = model.reg_loss(model.user_embedding(user), model.item_embedding(pos), model.item_embedding(neg),
                         require_pow=model.require_pow)
    return mf + model.reg_weight * reg


def test_lightgcn_perturbs_the_propagated_rows(tiny_split):
    vat = VAT(eps=0.3)
    assert vat.target == "propagated" and vat.pretrain_epochs == 4   # the reference's defaults
    built, trainer, batch = make(tiny_split, vat, model="LightGCN")
    model = built.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deltas = vat.adversarial_deltas(batch, model.calculate_loss(batch))
    # FGSM on the propagated rows: the gradient of the loss at the propagated rows, per row
    users_all, items_all = (t.detach().requires_grad_(True) for t in model.forward())
    grads = torch.autograd.grad(lightgcn_loss(model, batch, users_all, items_all), (users_all, items_all))
    users, scale = batch[trainer.uid], vat.last_scale
    direction = deltas[0][users] / deltas[0][users].norm(dim=1, keepdim=True)
    assert torch.allclose(direction, grads[0][users] / grads[0][users].norm(dim=1, keepdim=True), atol=1e-5)
    item = batch[trainer.iid][0]
    assert torch.allclose(deltas[1][item] / deltas[1][item].norm(), grads[1][item] / grads[1][item].norm(),
                          atol=1e-5)
    # each propagated user row's perturbation has its user's radius; untouched rows none
    assert torch.allclose(deltas[0][users].norm(dim=1), 0.3 * scale, atol=1e-5)
    untouched = torch.ones(deltas[0].shape[0], dtype=torch.bool)
    untouched[users] = False
    assert float(deltas[0][untouched].abs().max()) == 0.0
    # the vulnerability is measured on the propagated model: the user's BPR loss of these scores
    rows = F.softplus((users_all[users] * (items_all[batch[trainer.neg_iid]] - items_all[batch[trainer.iid]])).sum(1))
    assert torch.allclose(scale, vulnerability(users, rows.detach(), 2.0), atol=1e-5)
    # L(theta + delta) is the model's loss with delta added after the propagation
    adv = vat.perturbed_loss(batch, deltas)
    with torch.no_grad():
        expected = lightgcn_loss(model, batch, model.forward()[0] + deltas[0], model.forward()[1] + deltas[1])
    assert torch.allclose(adv.detach(), expected, atol=1e-6)
    # ... which is not the ego-perturbed loss: the same eps on the ego rows moves the scores less
    ego = VAT(eps=0.3, target="ego")
    ego.start(model, trainer)
    ego_adv = ego.perturbed_loss(batch, ego.adversarial_deltas(batch, model.calculate_loss(batch)))
    clean = float(model.calculate_loss(batch).detach())
    assert float(adv.detach()) > float(ego_adv.detach()) > clean
    # trained through the loss only: the weights are untouched, forward is the model's again,
    # and the adversarial term's gradient reaches the ego embeddings through the propagation
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "forward" not in vars(model)
    adv.backward()
    assert float(model.user_embedding.weight.grad[users].abs().sum()) > 0


@pytest.mark.parametrize("steps", [1, 3])
def test_lightgcn_batch_loss_stays_within_the_propagated_radii(tiny_split, steps):
    vat = VAT(eps=0.3, steps=steps)
    built, trainer, batch = make(tiny_split, vat, model="LightGCN")
    model = built.model
    seen = []
    original = vat.perturbed_loss
    vat.perturbed_loss = lambda b, deltas: seen.append(deltas) or original(b, deltas)
    loss = vat.batch_loss(model, batch, epoch=4)   # the first adversarial epoch at the default start
    deltas, users = seen[0], batch[trainer.uid]
    norms = deltas[0][users].norm(dim=1)
    assert torch.all(norms <= 0.3 * vat.last_scale + 1e-5) and float(norms.min()) > 0
    assert "forward" not in vars(model) and vat._outputs is None
    clean = model.calculate_loss(batch)
    assert torch.allclose(loss.detach(), clean.detach() + vat.end_epoch(4)["adv_loss"], atol=1e-5)


def fresh_trainer(split, defense, model="BPR", epochs=3):
    """A lean trainer on ``split`` as the pipeline makes it (seed 0), nothing drawn yet."""
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    built = build_model(model, split, seed=0)
    return LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                       TrainSettings(epochs=epochs, patience=10, learning_rate=0.01, batch_size=256), 0,
                       defense=defense)


def test_bpr_history_is_the_previous_behaviour(tiny_split):
    """On BPR (no propagation) ``target: propagated`` is the tables: the history recorded with the
    code before ``target`` existed (VAT(pretrain_epochs=1), 3 epochs on tiny, seed 0)."""
    for target in ("propagated", "ego"):
        history = fresh_trainer(tiny_split, VAT(pretrain_epochs=1, target=target), epochs=3).fit().history
        assert history["train_loss"] == pytest.approx([0.693602454662323, 1.78545024394989, 1.6804853439331056],
                                                      rel=1e-5)
        assert history["adv_loss"] == pytest.approx([1.207606601715088, 1.1266523599624634, 1.0520981669425964],
                                                    rel=1e-5)


def test_the_reference_start_is_four_plain_epochs(tiny_split):
    """Default start: epochs 0-3 are plain training (the trainer's own loss, epoch for epoch);
    the adversarial term switches on at epoch 4, the reference's ``begin_adv = 5`` (from 1)."""
    defended = fresh_trainer(tiny_split, VAT(), epochs=5).fit().history["train_loss"]
    plain = fresh_trainer(tiny_split, None, epochs=5).fit().history["train_loss"]
    assert defended[:4] == pytest.approx(plain[:4], rel=1e-6)
    assert defended[4] > plain[4] + 0.3
    assert VAT(pretrain_epochs=None).starts_from_plain and not VAT().starts_from_plain
