"""VAT on the tiny dataset: the per-user eps follows the user's fit, and training runs through it."""
import math

import pytest
import torch

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
