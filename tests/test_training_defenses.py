"""Training-time defenses (APR, GAN) on the tiny dataset with BPR, through the real trainer.

Each model is built with ``benchmark.core.models.build_model`` and trained with
``benchmark.core.training.LeanTrainer`` as ``benchmark.pipeline._run`` does; a few epochs each.
"""
import math

import pytest
import torch

import defenses  # noqa: F401  (fills the registry)
from benchmark.core.embeddings import embedding_tables
from benchmark.core.models import build_model
from benchmark.core.training import LeanTrainer, TrainSettings
from defenses.adversarial import APR
from defenses.gan import GAN

SETTINGS = dict(epochs=3, patience=10, learning_rate=0.01, batch_size=256)


pytestmark = pytest.mark.usefixtures("one_thread")


def make(split, defense=None, seed=0, model="BPR", validate=None, **settings):
    built = build_model(model, split, seed=seed)
    train = split.train
    trainer = LeanTrainer(built, built.ids.users(train.users), built.ids.items(train.items),
                          TrainSettings(**{**SETTINGS, **settings}), seed, validate=validate,
                          defense=defense)
    return built, trainer


def fit(split, defense=None, seed=0, **settings):
    built, trainer = make(split, defense, seed, **settings)
    return built, trainer, trainer.fit()


def first_batch(trainer):
    trainer.generator.manual_seed(123)
    return next(iter(trainer.batches()))


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- APR ---------------------------------------------------------------------------------------
def test_apr_loss_is_plain_during_pretraining_and_larger_after(tiny_split):
    apr = APR(pretrain_epochs=1)
    built, trainer = make(tiny_split, apr)
    model = built.model
    apr.start(model, trainer)
    batch = first_batch(trainer)
    plain = model.calculate_loss(batch)
    assert torch.equal(apr.batch_loss(model, batch, epoch=0).detach(), plain.detach())
    after = apr.batch_loss(model, batch, epoch=1)
    assert float(after.detach()) > float(plain.detach()) + 0.5   # plain + 1.0 * (a loss near log 2 at init)
    # the perturbation raises the loss: L(theta + delta_adv) > L(theta)
    assert apr.end_epoch(1)["adv_loss"] > float(plain.detach())


def test_apr_perturbation_is_eps_per_touched_row(tiny_split):
    for steps in (1, 4):
        apr = APR(eps=0.3, steps=steps)
        built, trainer = make(tiny_split, apr)
        apr.start(built.model, trainer)
        batch = first_batch(trainer)
        deltas = apr.adversarial_deltas(batch, built.model.calculate_loss(batch))
        users, items = batch[trainer.uid], torch.cat([batch[trainer.iid], batch[trainer.neg_iid]])
        for delta, touched in zip(deltas, (users, items)):
            norms = delta.norm(dim=1)
            assert torch.all(norms <= 0.3 + 1e-5)
            if steps == 1:  # FGSM: exactly eps on rows the batch touches, zero elsewhere
                assert torch.allclose(norms[touched.unique()], torch.tensor(0.3), atol=1e-5)
            untouched = torch.ones(norms.shape[0], dtype=torch.bool)
            untouched[touched] = False
            assert torch.all(norms[untouched] == 0)


def test_relative_eps_is_eps_times_each_touched_rows_norm(tiny_split):
    """``eps_mode: relative``: the FGSM radius of a touched row is eps times that row's norm, for
    APR and (times the user's factor) for VAT; rows with twice the norm get twice the radius."""
    from defenses.vat import VAT
    for defense in (APR(eps=0.2, eps_mode="relative"), VAT(eps=0.2, eps_mode="relative")):
        built, trainer = make(tiny_split, defense)
        model = built.model
        with torch.no_grad():
            model.user_embedding.weight[::2] *= 2
        defense.start(model, trainer)
        batch = first_batch(trainer)
        deltas = defense.adversarial_deltas(batch, model.calculate_loss(batch))
        users = batch[trainer.uid]
        row_norms = model.user_embedding.weight.detach().norm(dim=1)
        factor = defense.last_scale if isinstance(defense, VAT) else torch.ones(len(users))
        assert torch.allclose(deltas[0].norm(dim=1)[users], 0.2 * row_norms[users] * factor, atol=1e-5)
        items = torch.cat([batch[trainer.iid], batch[trainer.neg_iid]]).unique()
        if not isinstance(defense, VAT):
            item_norms = model.item_embedding.weight.detach().norm(dim=1)
            assert torch.allclose(deltas[1].norm(dim=1)[items], 0.2 * item_norms[items], atol=1e-5)


def test_apr_adversarial_gradient_flows_to_the_embeddings(tiny_split):
    apr = APR(pretrain_epochs=0, lam=1.0)
    built, trainer = make(tiny_split, apr)
    model = built.model
    apr.start(model, trainer)
    batch = first_batch(trainer)
    weights = [t.weight for t in embedding_tables(model)]
    before = [w.detach().clone() for w in weights]
    deltas = apr.adversarial_deltas(batch, model.calculate_loss(batch))
    grads_apr = torch.autograd.grad(apr.batch_loss(model, batch, epoch=0), weights)
    assert all(torch.equal(w, b) for w, b in zip(weights, before)), "weights left perturbed"
    grads_plain = torch.autograd.grad(model.calculate_loss(batch), weights)
    # expected: grad L(theta) + lam * grad L evaluated at theta + delta (delta constant)
    with torch.no_grad():
        for w, d in zip(weights, deltas):
            w.add_(d)
    grads_at_adv = torch.autograd.grad(model.calculate_loss(batch), weights)
    with torch.no_grad():
        for w, d in zip(weights, deltas):
            w.sub_(d)
    for g, gp, ga in zip(grads_apr, grads_plain, grads_at_adv):
        assert not torch.allclose(g, gp), "the adversarial term added no gradient"
        assert torch.allclose(g, gp + ga, atol=1e-6)


def test_apr_training_history_and_determinism(tiny_split):
    _, _, plain = fit(tiny_split, None, epochs=3)
    built_a, _, a = fit(tiny_split, APR(pretrain_epochs=2), epochs=3)
    built_b, _, b = fit(tiny_split, APR(pretrain_epochs=2), epochs=3)
    assert a.history == b.history and same_state(built_a.model, built_b.model)
    assert len(a.history["adv_loss"]) == len(a.history["train_loss"]) == 3
    assert all(math.isfinite(v) for v in a.history["adv_loss"])
    # pre-training is plain training; the adversarial term makes the loss larger afterwards
    assert a.history["train_loss"][:2] == plain.history["train_loss"][:2]
    assert a.history["train_loss"][2] > plain.history["train_loss"][2] + 0.3
    built_c, _, c = fit(tiny_split, APR(pretrain_epochs=2), seed=1, epochs=3)
    assert not same_state(built_a.model, built_c.model)


def test_model_selection_ignores_pretraining_epochs(tiny_split):
    scores = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])   # the best validation would be epoch 0

    def validate(model):
        return next(scores)

    _, _, result = fit(tiny_split, APR(pretrain_epochs=2), validate=validate, epochs=4)
    assert result.best_epoch == 2 and result.best_valid == 0.9   # first APR epoch
    _, _, plain = fit(tiny_split, None, validate=lambda m: 0.5, epochs=2)
    assert plain.best_epoch == 0


def test_apr_works_for_neumf_and_lightgcn(tiny_split):
    for model in ("NeuMF", "LightGCN"):
        apr = APR(pretrain_epochs=1, steps=2)
        built, trainer = make(tiny_split, apr, model=model, epochs=2)
        result = trainer.fit()
        assert len(result.history["adv_loss"]) == 2
        assert all(math.isfinite(v) for v in result.history["train_loss"])


@pytest.mark.parametrize("params", APR.invalid_params)
def test_apr_refuses_bad_parameters(params):
    with pytest.raises(ValueError):
        APR(**params)


# -- GAN ---------------------------------------------------------------------------------------
def test_gan_records_both_players_losses_deterministically(tiny_split):
    _, _, plain = fit(tiny_split, None, epochs=3)
    built_a, _, a = fit(tiny_split, GAN(pretrain_epochs=1, g_dim=8), epochs=3)
    built_b, _, b = fit(tiny_split, GAN(pretrain_epochs=1, g_dim=8), epochs=3)
    for key in ("generator_loss", "discriminator_loss", "generator_reward"):
        assert len(a.history[key]) == 3 and all(math.isfinite(v) for v in a.history[key])
    assert a.history == b.history and same_state(built_a.model, built_b.model)
    # pre-training: the discriminator is trained exactly as without the defense
    assert a.history["discriminator_loss"][0] == plain.history["train_loss"][0]
    assert a.history["discriminator_loss"] == a.history["train_loss"]
    assert a.history["train_loss"][1:] != plain.history["train_loss"][1:]


def test_gan_samples_are_real_unseen_items(tiny_split):
    gan = GAN(pretrain_epochs=0, g_dim=8)
    built, trainer, _ = fit(tiny_split, gan, epochs=1)
    seen = set(zip(trainer.users.tolist(), trainer.items.tolist()))
    for batch in trainer.batches():
        users = batch[trainer.uid]
        log_p, _, inverse = gan._policy(users)
        samples, weight = gan._draw(log_p, inverse)
        assert samples.min() >= 1 and samples.max() < trainer.n_items
        assert not any((u, i) in seen for u, i in zip(users.tolist(), samples.tolist()))
        assert torch.all(weight == 1)
    assert gan.last_samples is not None and gan.last_samples.min() >= 1


def test_gan_sampler_matches_the_policy():
    gan = GAN()
    gan.rng = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.0, 0.1, 0.9, 0.0]])
    inverse = torch.tensor([0, 1, 1] * 4000)
    samples = gan._sample(probs, inverse)
    first, second = samples[inverse == 0], samples[inverse == 1]
    assert set(first.tolist()) == {1, 3} and set(second.tolist()) == {1, 2}
    assert abs(float((second == 2).float().mean()) - 0.9) < 0.02


def test_gan_importance_sampling_and_neumf(tiny_split):
    built, trainer = make(tiny_split, GAN(pretrain_epochs=1, g_dim=8, sample_lambda=0.3),
                          model="NeuMF", epochs=2)
    result = trainer.fit()
    assert all(math.isfinite(v) for v in result.history["generator_loss"])


@pytest.mark.parametrize("params", GAN.invalid_params)
def test_gan_refuses_bad_parameters(params):
    with pytest.raises(ValueError):
        GAN(**params)


# -- through the pipeline -------------------------------------------------------------------------
def test_pipeline_job_with_apr_and_an_adaptive_fgsm():
    from benchmark.cells import Job
    from benchmark.pipeline import run_job
    from benchmark.spec import AttackSpec, DefenseSpec
    from tests.conftest import TINY
    job = Job(suite="t", dataset=TINY, rating_threshold=None, model="BPR", seed=0,
              defense=DefenseSpec("apr", "trainer", {"pretrain_epochs": 1}), poisoning=None,
              evasions=(AttackSpec("fgsm", "gradient", "eps", 0.5, {}),),
              training=(("epochs", 3), ("patience", 5), ("batch_size", 256)),
              targets=(("count", 3), ("policy", "unpopular")))
    records = run_job(job).records
    assert [r["status"] for r in records] == ["ok", "ok"], records[0].get("error")
    assert len(records[0]["history"]["adv_loss"]) == records[0]["cost"]["epochs"]
    assert records[0]["cost"]["best_epoch"] >= 1
