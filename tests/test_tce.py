"""T-CE (defenses/tce.py) on the tiny dataset through the real trainer: the schedule, which rows
are dropped, the loss it returns, and that it drops injected noise more than real interactions."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import defenses  # noqa: F401  (fills the registry)
from benchmark.core.data import Dataset, Interactions, split_dataset
from benchmark.core.models import build_model
from benchmark.core.training import LeanTrainer, TrainSettings
from defenses.tce import TCE

SETTINGS = dict(epochs=3, patience=10, learning_rate=0.01, batch_size=256)


pytestmark = pytest.mark.usefixtures("one_thread")


def make(split, defense=None, model="BPR", seed=0, **settings):
    built = build_model(model, split, seed=seed)
    train = split.train
    trainer = LeanTrainer(built, built.ids.users(train.users), built.ids.items(train.items),
                          TrainSettings(**{**SETTINGS, **settings}), seed, defense=defense)
    return built, trainer


def first_batch(trainer):
    trainer.generator.manual_seed(123)
    return next(iter(trainer.batches()))


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_schedule_rises_linearly_in_iterations_then_stays():
    tce = TCE(max_drop_rate=0.2, num_gradual=100)
    assert tce.drop_rate(0) == 0.0
    assert tce.drop_rate(50) == pytest.approx(0.1)
    assert tce.drop_rate(100) == tce.drop_rate(10_000) == pytest.approx(0.2)
    rates = [tce.drop_rate(t) for t in range(120)]
    assert all(b >= a for a, b in zip(rates, rates[1:]))


def test_bpr_drops_the_largest_loss_triples_and_trains_on_the_rest(tiny_split):
    tce = TCE(max_drop_rate=0.3, num_gradual=1)
    built, trainer = make(tiny_split, tce)
    model = built.model
    tce.start(model, trainer)
    tce.batch_loss(model, first_batch(trainer), epoch=0)   # iteration 0: rate 0
    batch = first_batch(trainer)
    n = len(batch)
    rows, positives, dropped = tce.kept_rows(model, batch, 0.3)
    assert positives == n and dropped == n - int(0.7 * n) == n - rows.numel()
    with torch.no_grad():
        u = model.user_embedding(batch[trainer.uid])
        margin = (u * model.item_embedding(batch[trainer.iid])).sum(1) - \
                 (u * model.item_embedding(batch[trainer.neg_iid])).sum(1)
        per_row = -F.logsigmoid(margin)
    out = torch.ones(n, dtype=torch.bool)
    out[rows] = False
    assert per_row[out].min() >= per_row[rows].max()          # the dropped are the largest losses
    loss = tce.batch_loss(model, batch, epoch=0)              # iteration 1: full rate
    assert torch.allclose(loss, per_row[rows].mean(), atol=1e-5)
    assert loss.requires_grad
    assert float(loss.detach()) < float(per_row.mean())
    assert tce.end_epoch(0) == {"drop_rate": pytest.approx(0.15), "dropped": pytest.approx(dropped / (2 * n))}


def test_pointwise_models_drop_positives_only(tiny_split):
    for name in ("BiasedMF", "NeuMF"):
        tce = TCE(max_drop_rate=0.25, num_gradual=1)
        built, trainer = make(tiny_split, tce, model=name)
        model = built.model
        tce.start(model, trainer)
        batch = first_batch(trainer)
        labels = batch[trainer.label]
        model.train()
        rows, positives, dropped = tce.kept_rows(model, batch, 0.25)
        assert model.training, "the model's mode was not restored"
        assert positives == int((labels > 0).sum()) and dropped == positives - int(0.75 * positives)
        kept = torch.zeros(len(batch), dtype=torch.bool)
        kept[rows] = True
        assert kept[labels == 0].all(), "a negative was dropped"
        assert int((~kept).sum()) == dropped
        with torch.no_grad():
            model.eval()
            scores = model.predict(batch)
        # the dropped are the lowest-scored positives (scored without dropout)
        assert scores[~kept].max() <= scores[kept & (labels > 0)].min()


def test_rate_zero_is_plain_training(tiny_split):
    plain, trainer = make(tiny_split)
    plain_fit = trainer.fit()
    tce_built, trainer = make(tiny_split, TCE(max_drop_rate=0.0))
    tce_fit = trainer.fit()
    assert same_state(plain.model, tce_built.model)
    assert tce_fit.history["train_loss"] == plain_fit.history["train_loss"]
    assert tce_fit.history["dropped"] == [0.0, 0.0, 0.0]


def test_training_history_follows_the_schedule_and_is_deterministic(tiny_split):
    runs = []
    for _ in range(2):
        built, trainer = make(tiny_split, TCE(max_drop_rate=0.2, num_gradual=8, pretrain_epochs=1), epochs=4)
        runs.append((built, trainer.fit()))
    (a_model, a), (b_model, b) = runs
    assert a.history == b.history and same_state(a_model.model, b_model.model)
    per_epoch = math.ceil(len(tiny_split.train) / 256)        # iterations in an epoch
    assert a.history["drop_rate"][0] == a.history["dropped"][0] == 0.0   # plain epoch
    expected = [np.mean([0.2 * min(t / 8, 1) for t in range(e * per_epoch, (e + 1) * per_epoch)])
                for e in range(3)]
    assert a.history["drop_rate"][1:] == pytest.approx(expected)
    assert a.history["dropped"][1:] == pytest.approx(expected, abs=0.02)  # int() rounding per batch


def clustered_with_noise(n_users=90, n_items=60, groups=3, per_user=12, noise=0.2, seed=0):
    """Users of group g interact only with the items of group g; then ``noise`` x train rows of
    cross-group interactions are added to train. Returns the split and the noise (user, item)."""
    rng = np.random.default_rng(seed)
    size = n_items // groups
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(np.arange(size), per_user, replace=False) + (u % groups) * size
                            for u in range(n_users)])
    inter = Interactions.build(users, items, np.ones(users.size), n_users, n_items)
    split = split_dataset(Dataset("clustered", inter, np.arange(n_users).astype(str),
                                  np.arange(n_items).astype(str), explicit=False), seed)
    noise_users, noise_items = [], []
    while len(noise_users) < int(noise * users.size):
        u, i = int(rng.integers(n_users)), int(rng.integers(n_items))
        if i // size != u % groups and (u, i) not in zip(noise_users, noise_items):
            noise_users.append(u)
            noise_items.append(i)
    noisy = split.train.concat(Interactions.build(noise_users, noise_items, np.ones(len(noise_users)),
                                                  n_users, n_items))
    return split.with_train(noisy), np.array(noise_users), np.array(noise_items)


def test_noisy_interactions_are_dropped_more_often():
    """Cross-group noise keeps larger losses while T-CE trains: it is dropped well above its share."""
    split, noise_users, noise_items = clustered_with_noise()
    tce = TCE(max_drop_rate=0.2, num_gradual=10)
    built, trainer = make(split, tce, epochs=5, learning_rate=0.05)
    assert trainer.fit().history["dropped"][-1] == pytest.approx(0.2, abs=0.01)
    is_noise = set(zip(built.ids.users(noise_users).tolist(), built.ids.items(noise_items).tolist()))
    dropped_noise, dropped = 0, 0
    for batch in trainer.batches():
        rows, _, _ = tce.kept_rows(built.model, batch, 0.2)
        out = torch.ones(len(batch), dtype=torch.bool)
        out[rows] = False
        pairs = zip(batch[trainer.uid][out].tolist(), batch[trainer.iid][out].tolist())
        dropped_noise += sum(p in is_noise for p in pairs)
        dropped += int(out.sum())
    share = noise_users.size / len(split.train)                # about 0.19
    assert dropped_noise / dropped > 2 * share


def test_refuses_models_it_cannot_truncate(tiny_split):
    built, trainer = make(tiny_split, TCE(), model="Pop")
    assert "T-CE needs a model trained by gradient" in TCE().unsupported(built.model, trainer)
    for model in ("MultiVAE", "ENMF"):   # losses over whole user histories: nothing to drop
        built, trainer = make(tiny_split, TCE(), model=model)
        with pytest.raises(ValueError, match="T-CE needs a loss per"):
            trainer.fit()


@pytest.mark.parametrize("params", TCE.invalid_params)
def test_refuses_bad_parameters(params):
    with pytest.raises(ValueError):
        TCE(**params)


def test_lightgcn_trains_with_its_own_regulariser(tiny_split):
    tce = TCE(max_drop_rate=0.2, num_gradual=5)
    built, trainer = make(tiny_split, tce, model="LightGCN", epochs=2)
    result = trainer.fit()
    assert all(math.isfinite(v) for v in result.history["train_loss"])
    assert result.history["dropped"][-1] > 0.1


def test_a_one_row_batch_keeps_its_row(tiny_split):
    tce = TCE(max_drop_rate=0.5, num_gradual=1)
    built, trainer = make(tiny_split, tce)
    tce.start(built.model, trainer)
    batch = first_batch(trainer)[torch.tensor([0])]
    rows, positives, dropped = tce.kept_rows(built.model, batch, 0.5)
    assert rows.tolist() == [0] and positives == 1 and dropped == 0
    tce._iteration = 5
    assert math.isfinite(float(tce.batch_loss(built.model, batch, epoch=0).detach()))
