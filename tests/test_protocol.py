"""The measurement protocol (docs/protocol.md), checked on what the product writes: one candidate
set per seed, Pop counting every row, per-user paired tests, trainer defenses started from the
shared plain model, both GAN players, gradient budgets with their mode and row norms."""
import json

import numpy as np
import pytest
import torch

from benchmark.cells import Job
from benchmark.harness import execute
from benchmark.pipeline import prepare, run_job
from benchmark.plan import plan
from benchmark.shared import fixed_split
from benchmark.spec import parse_suite
from tests.conftest import TINY

TRAINING = {"epochs": 3, "patience": 2, "batch_size": 256, "learning_rate": 0.01}


def _suite(**entries):
    return parse_suite({"name": "t", "dataset": TINY, "models": ["BPR"], "training": TRAINING,
                        "targets": {"count": 3}, **entries})


def _run(suite, tmp_path):
    (tmp_path / "cells").mkdir(exist_ok=True)
    return {r["cell_id"]: r for r in execute(plan(suite), tmp_path, workers=1)}


def test_a_noise_cell_ranks_the_same_candidates_as_its_clean_cell(tmp_path):
    """noise_remove deletes real users' train items; they stay masked in evaluation."""
    suite = _suite(attacks=[{"name": "noise_remove", "budgets": [0.2]}])
    records = _run(suite, tmp_path)
    clean = records[f"{TINY}/BPR/clean/none/seed0"]
    noisy = records[f"{TINY}/BPR/noise_remove@0.2/none/seed0"]
    assert clean["status"] == noisy["status"] == "ok"
    assert noisy["candidates"] == clean["candidates"]
    # ... although the model learned from another table: masking it would change the candidates
    from benchmark.core.evaluation import Evaluator, Scorer
    from benchmark.core.models import build_model
    job = next(j for j in plan(suite) if j.poisoning is not None)
    split = fixed_split(TINY, None, 0)
    poisoned = prepare(job).train
    assert len(poisoned) < len(split.train)
    scorer = Scorer(build_model("BPR", split, seed=0), split.train.n_items)
    as_poisoned = Evaluator(scorer, poisoned, split.test, split.n_real_users, also_mask=split.valid)
    assert as_poisoned.candidates != clean["candidates"]


def test_pop_counts_every_train_row_and_ranks_as_a_popularity_count(tmp_path):
    """Pop's scores are the train table's item counts (RecBole's own loop counts an item once
    per batch), and its accuracy equals a numpy popularity ranking of the same split."""
    from benchmark.core.evaluation import Scorer
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    split = fixed_split(TINY, None, 0)
    built = build_model("Pop", split, seed=0)
    LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                TrainSettings(batch_size=64), 0).fit()
    counts = np.bincount(split.train.items, minlength=split.train.n_items)
    scores = Scorer(built, split.train.n_items)(np.array([0]))[0].double().numpy()
    assert np.array_equal(np.rint(scores * counts.max()).astype(int), counts)

    record = _run(parse_suite({"name": "p", "dataset": TINY, "models": ["Pop"]}), tmp_path)[
        f"{TINY}/Pop/clean/none/seed0"]
    # independent: rank unseen items by count (ties by item id, as a stable sort does)
    train, valid, test = (part.csr().toarray()[:split.n_real_users].astype(bool)
                          for part in (split.train, split.valid, split.test))
    ndcg = []
    for user in range(split.n_real_users):
        relevant = np.flatnonzero(test[user, :split.train.n_items])
        if not len(relevant):
            continue
        candidates = np.flatnonzero(~(train[user] | valid[user, :split.train.n_items]))
        ranked = candidates[np.argsort(-counts[candidates], kind="stable")][:10]
        gains = np.isin(ranked, relevant) / np.log2(np.arange(2, len(ranked) + 2))
        ideal = (1 / np.log2(np.arange(2, min(len(relevant), 10) + 2))).sum()
        ndcg.append(gains.sum() / ideal)
    tied = np.unique(counts, return_counts=True)[1].max() > 1
    assert record["metrics"]["ndcg@10"] == pytest.approx(np.mean(ndcg), abs=0.02 if tied else 1e-9)


def test_one_training_run_per_cell_gives_no_p_value_and_says_why(tmp_path):
    """Without clean retrains (noise_floor 0) a cell rests on one training run: the summary
    prints no p-value and names why, however many users the run scored."""
    from benchmark.results.aggregate import derive, summarise
    from benchmark.results.noise_floor import NO_RETRAINS, ONE_RUN
    suite = _suite(attacks=[{"name": "noise_insert", "budgets": [0.3]},
                            {"name": "random", "budgets": [0.2], "params": {"filler_items": 10}},
                            {"name": "fgsm", "budgets": [2.0]}])
    records = list(_run(suite, tmp_path).values())
    ok = [r for r in records if r["status"] == "ok"]
    n_real = fixed_split(TINY, None, 0).n_real_users
    assert all(len(r["per_user"]["ndcg@10"]) == n_real for r in ok)
    assert all(r["replicate"] == 0 and r["train_seed"] == r["seed"] for r in ok)
    rows = summarise(derive(records))
    attacked = [r for r in rows if r["source"] == "metrics" and r["variant"] != "clean"
                and r["metric"] in ("ndcg@10", "target_hr@50")]
    assert attacked and all(r["n"] == 1 for r in attacked)
    for row in attacked:
        assert row["p_value_vs_clean"] is None and row["p_adjusted_vs_clean"] is None
        expected = ONE_RUN if row["family"] == "gradient" else NO_RETRAINS
        assert row["test_vs_clean"] == expected, row


def test_trainer_defenses_start_from_the_shared_plain_model(tmp_path):
    suite = _suite(attacks=[{"name": "random", "budgets": [0.1], "params": {"filler_items": 10}}],
                   defenses=[{"name": "apr"}, {"name": "apr", "params": {"pretrain_epochs": 1}}])
    records = _run(suite, tmp_path)
    for attack in ("clean", "random@0.1[filler_items=10]"):
        plain = records[f"{TINY}/BPR/{attack}/none/seed0"]
        apr = records[f"{TINY}/BPR/{attack}/apr/seed0"]
        assert apr["cost"]["start_train_s"] == plain["cost"]["train_s"]    # shared, not retrained
        assert apr["cost"]["start_epoch"] == plain["cost"]["best_epoch"]
        assert "start_train_s" not in records[f"{TINY}/BPR/{attack}/apr[pretrain_epochs=1]/seed0"]["cost"]
    # Run alone (no shared model handed over), the job trains the same plain model itself.
    job = next(j for j in plan(suite) if j.defense is not None and j.defense.params == {}
               and j.poisoning is None)
    alone = run_job(job).records[0]
    shared = records[alone["cell_id"]]
    assert alone["metrics"] == shared["metrics"] and alone["cost"]["start_epoch"] == shared["cost"]["start_epoch"]


def test_gan_records_both_players_on_the_same_candidates(tmp_path):
    suite = _suite(defenses=[{"name": "gan"}])
    records = _run(suite, tmp_path)
    recommender = records[f"{TINY}/BPR/clean/gan/seed0"]
    generator = records[f"{TINY}/BPR/clean/gan-generator/seed0"]
    assert recommender["defense"]["player"] == "recommender"
    assert generator["defense"]["player"] == "generator" and generator["status"] == "ok"
    assert generator["candidates"] == recommender["candidates"]
    assert generator["metrics"] != recommender["metrics"]


def test_biased_mf_gives_the_gan_generator_its_item_bias(tiny_split):
    from benchmark.core.models import build_model
    from defenses.gan import Generator
    built = build_model("BiasedMF", tiny_split, seed=0)
    with torch.no_grad():
        built.model.item_bias.copy_(torch.linspace(-1, 1, built.model.n_items))
    g = Generator.from_model(built.model)
    assert torch.equal(g.bias, built.model.item_bias)
    assert torch.equal(g.user, built.model.user_embedding.weight)
    users = torch.tensor([1, 2])
    logits = torch.logit(built.model.full_sort_predict(
        {built.config["USER_ID_FIELD"]: users}).view(2, -1).double())
    assert torch.allclose(logits, g(users).double(), atol=1e-4)


@pytest.mark.parametrize("mode", ["absolute", "relative"])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_gradient_budgets_in_both_modes(tiny_split, name, mode):
    from attacks.base import get_attack
    from benchmark.core.embeddings import embedding_tables, mean_row_norms
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    built = build_model("BPR", tiny_split, seed=0)
    trainer = LeanTrainer(built, built.ids.users(tiny_split.train.users),
                          built.ids.items(tiny_split.train.items), TrainSettings(epochs=2, batch_size=256), 0)
    trainer.fit()
    tables = embedding_tables(built.model)
    before = [t.weight.detach().clone() for t in tables]
    eps = 0.3
    attack = get_attack(name, eps=eps, eps_mode=mode, **({"steps": 3} if name == "pgd" else {}))
    with attack.perturbed(built.model, trainer.batches) as deltas:
        for table, original, delta in zip(tables, before, deltas):
            assert torch.allclose(table.weight, original + delta)
            radius = eps if mode == "absolute" else eps * original[1:].norm(dim=1)
            norms = delta[1:].norm(dim=1)
            assert torch.all(norms <= radius + 1e-5)
            if name == "fgsm":   # one full step: on the sphere wherever the gradient is nonzero
                moved = norms > 0
                assert torch.allclose(norms[moved], (radius if mode == "absolute" else radius[moved])
                                      * torch.ones_like(norms[moved]), atol=1e-5)
            assert torch.all(delta[0] == 0)                                # padding row
    assert all(torch.equal(t.weight, b) for t, b in zip(tables, before))  # restored
    assert set(mean_row_norms(built.model)) == {"user_embedding", "item_embedding"}


def test_gradient_records_carry_the_mode_and_row_norms(tmp_path):
    suite = _suite(attacks=[{"name": "fgsm", "budgets": [0.5]},
                            {"name": "pgd", "budgets": [0.2], "params": {"eps_mode": "relative", "steps": 2}}])
    records = _run(suite, tmp_path)
    absolute = records[f"{TINY}/BPR/fgsm@0.5/none/seed0"]
    relative = records[f"{TINY}/BPR/pgd@0.2[eps_mode=relative,steps=2]/none/seed0"]
    assert absolute["attack"]["params"]["eps_mode"] == "absolute"
    assert relative["attack"]["params"]["eps_mode"] == "relative"
    for record in (absolute, relative):
        assert record["embedding_norms"]["user_embedding"] > 0
        assert record["candidates"] == records[f"{TINY}/BPR/clean/none/seed0"]["candidates"]


def test_keep_last_trains_a_fixed_budget(tiny_split):
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    built = build_model("BPR", tiny_split, seed=0)
    trainer = LeanTrainer(built, built.ids.users(tiny_split.train.users), built.ids.items(tiny_split.train.items),
                          TrainSettings(epochs=4, patience=10 ** 6, batch_size=256, keep="last"), 0,
                          validate=lambda m: -float(len(trainer_epochs.append(0) or trainer_epochs)))
    trainer_epochs = []
    result = trainer.fit()
    assert result.epochs_run == 4 and result.best_epoch == 0   # validation got worse, last kept anyway
    with pytest.raises(ValueError, match="keep"):
        TrainSettings(keep="middle")


def test_job_cells_list_every_player():
    from benchmark.spec import DefenseSpec
    job = Job(suite="t", dataset=TINY, rating_threshold=None, model="BPR", seed=0,
              defense=DefenseSpec("gan", "trainer", {}), poisoning=None)
    assert [player for _, _, player in job.cells()] == [None, "generator"]


def test_records_name_the_threat_model(product_results):
    """Every attack record says what its attacker knows and which surrogate it optimised
    against, as its class declares (a learned attack's surrogate is never empty)."""
    from attacks.base import ATTACKS
    records = json.loads(product_results.read_text())["records"]
    attacked = [r for r in records if r["attack"]]
    assert {r["attack"]["family"] for r in attacked} >= {"noise", "shilling", "gradient"}
    for record in attacked:
        cls = ATTACKS.get_class(record["attack"]["name"])
        assert (record["attack"]["knowledge"], record["attack"]["surrogate"]) == (cls.knowledge, cls.surrogate)


def test_a_real_user_without_train_rows_gets_the_popularity_ranking(tiny_split):
    """A detector that removes a real user leaves their embedding untrained; they are scored, as
    a deployed system would, by the popularity of the table the model learned from: exactly
    Pop's ranking of that table (Pop scores items by their train count)."""
    from benchmark.core.evaluation import Evaluator, Scorer, with_fallback
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    split = tiny_split
    removed = np.unique(split.test.users)[:3]
    cleaned = split.with_train(split.train.take(~np.isin(split.train.users, removed)))

    def per_user(model):
        built = build_model(model, cleaned, seed=0)
        LeanTrainer(built, built.ids.users(cleaned.train.users), built.ids.items(cleaned.train.items),
                    TrainSettings(epochs=2), 0).fit()
        scorer = with_fallback(Scorer(built, split.train.n_items), cleaned.train, split.n_real_users)
        evaluation = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid).run()
        return scorer, evaluation.per_user["ndcg@10"]

    bpr_scorer, bpr = per_user("BPR")
    _, pop = per_user("Pop")
    assert bpr_scorer.users == len(removed)
    np.testing.assert_array_equal(bpr[removed], pop[removed])
    kept = np.setdiff1d(np.unique(split.test.users), removed)
    assert not np.array_equal(bpr[kept], pop[kept])
