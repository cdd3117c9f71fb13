"""The RecBole adapter and the lean trainer: every baseline trains, deterministically, quietly."""
import sys

import numpy as np
import pytest

from benchmark.core.evaluation import Scorer, evaluate
from benchmark.core.models import BASELINES, build_model
from benchmark.core.training import LeanTrainer, TrainSettings

FAST = TrainSettings(epochs=3, patience=2, batch_size=256, learning_rate=0.01)


def train_and_test(split, name, seed=0, settings=FAST, params=None):
    built = build_model(name, split, params or {}, seed=seed)
    scorer = Scorer(built, split.train.n_items)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          settings, seed,
                          validate=lambda m: evaluate(scorer, split.train, split.valid, split.n_real_users)["ndcg@10"])
    trainer.fit()
    return built, evaluate(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid,
                           targets=np.array([0, 1]))


@pytest.mark.parametrize("name", BASELINES + ("MultiVAE",))
def test_every_baseline_trains_and_scores_in_range(tiny_split, name):
    _, metrics = train_and_test(tiny_split, name)
    for key in ("recall@10", "ndcg@10", "hit@20", "precision@20", "mrr@10", "f1@10"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["hit@20"] > 0.0
    assert 1 <= metrics["target_rank"] <= tiny_split.train.n_items


@pytest.mark.parametrize("name", ["BPR", "NeuMF", "LightGCN"])
def test_same_seed_gives_identical_metrics(tiny_split, name):
    _, a = train_and_test(tiny_split, name, seed=3)
    _, b = train_and_test(tiny_split, name, seed=3)
    _, c = train_and_test(tiny_split, name, seed=4)
    assert a == b
    assert a != c


def test_recbole_writes_nothing_to_the_working_directory(tiny_split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_and_test(tiny_split, "BPR")
    assert list(tmp_path.iterdir()) == []


def test_recbole_config_ignores_our_argv(tiny_split, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x", "--embedding_size=8", "--learning_rate=9"])
    built = build_model("BPR", tiny_split, {}, seed=0)
    assert built.model.user_embedding.weight.shape[1] == 64
    assert built.config["learning_rate"] == 0.001


def test_bpr_learns_beyond_popularity(tiny_split):
    settings = TrainSettings(epochs=40, patience=5, batch_size=256, learning_rate=0.01)
    _, bpr = train_and_test(tiny_split, "BPR", settings=settings)
    _, pop = train_and_test(tiny_split, "Pop")
    assert bpr["ndcg@10"] > pop["ndcg@10"]


def test_unknown_model_is_bad_input(tiny_split):
    from benchmark.core.errors import BadInput
    with pytest.raises(BadInput, match="unknown model 'Bogus'"):
        build_model("Bogus", tiny_split)
