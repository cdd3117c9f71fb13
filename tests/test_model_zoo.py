"""Every RecBole general and sequential model trains one epoch through the lean path on the tiny
dataset and ranks every item with finite scores, or is refused before any work with one line
saying why. Sequential models train on the leave-one-out split by time and are scored from each
user's train + valid history, as ``benchmark.pipeline`` wires them."""
import importlib.util
import math

import numpy as np
import pytest
import recbole.model.general_recommender as general
import recbole.model.sequential_recommender as sequential
import torch
from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender

from benchmark.core.errors import BadInput
from benchmark.core.evaluation import Evaluator, Scorer, SequenceScorer
from benchmark.core.models import REFUSED, build_model, model_class, size_problem
from benchmark.core.sequences import histories, training_data
from benchmark.core.training import LeanTrainer, TrainSettings


def _classes(module, base):
    return sorted(n for n in dir(module) if isinstance(getattr(module, n), type)
                  and issubclass(getattr(module, n), base) and getattr(module, n) is not base)


MODELS = _classes(general, GeneralRecommender)
SEQUENTIAL_MODELS = _classes(sequential, SequentialRecommender)
TINY_PARAMS = {
    "DGCF": {"train_batch_size": 256}, "NCL": {"num_clusters": 8},   # sized for 40 users
    # Caser runs one horizontal convolution per history length: at RecBole's default of 50 items
    # an epoch here takes 14 s on one thread; L = 5 is the Caser paper's setting.
    "Caser": {"MAX_ITEM_LIST_LENGTH": 5},
    "GRU4RecCPR": {"reranker_CAN_NUM": 20}, "SASRecCPR": {"reranker_CAN_NUM": 20},   # 80 items here
}
NEEDS = {"NCL": "faiss"}


def expected_refusal(name):
    return name in REFUSED or (name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None)


def assert_refused(name):
    with pytest.raises(BadInput) as refused:
        model_class(name)
    assert name in str(refused.value) and "\n" not in str(refused.value)


def test_every_sequential_model_is_listed():
    assert len(SEQUENTIAL_MODELS) >= 30 and {"SASRec", "GRU4Rec", "BERT4Rec"} <= set(SEQUENTIAL_MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_trains_one_epoch_or_is_refused(name, tiny_split):
    split = tiny_split
    if expected_refusal(name):
        assert_refused(name)
        return
    built = build_model(name, split, TINY_PARAMS.get(name, {}), seed=0)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings.from_config(built.config, epochs=1, batch_size=256), seed=0)
    result = trainer.fit()
    losses = (result.history or {}).get("train_loss", [])
    assert all(math.isfinite(x) for x in losses)
    scorer = Scorer(built, split.train.n_items)
    for _, scores in scorer.batches(torch.arange(split.n_real_users).numpy()):
        assert torch.isfinite(scores).all()
    metrics = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid)()
    assert 0.0 <= metrics["ndcg@10"] <= 1.0


@pytest.mark.parametrize("name", SEQUENTIAL_MODELS)
def test_sequential_model_trains_one_epoch_or_is_refused(name, tiny_loo_split):
    split = tiny_loo_split
    if expected_refusal(name):
        assert_refused(name)
        return
    built = build_model(name, split, TINY_PARAMS.get(name, {}), seed=0)
    assert built.sequential
    assert size_problem(name, TINY_PARAMS.get(name, {}), split.dataset.n_users, split.dataset.n_items,
                        len(split.train)) is None
    sequences = training_data(built.model, split.train, built.ids.item, built.ids.user)
    assert len(sequences) > 0
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings.from_config(built.config, epochs=1, batch_size=256), seed=0,
                          sequences=sequences)
    losses = trainer.fit().history["train_loss"]
    assert len(losses) == 1 and math.isfinite(losses[0])
    history = histories(split.train.concat(split.valid), split.n_real_users, int(built.model.max_seq_length),
                        built.ids.item, built.ids.user)
    scorer = SequenceScorer(built, split.train.n_items, history)
    for users, scores in scorer.batches(np.arange(split.n_real_users)):
        assert scores.shape == (len(users), split.train.n_items) and torch.isfinite(scores).all()
    metrics = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid)()
    assert 0.0 <= metrics["ndcg@10"] <= 1.0


@pytest.mark.parametrize("name", ["GRU4RecCPR", "SASRecCPR"])
def test_a_cpr_model_reranking_more_items_than_exist_is_refused_with_the_fix(name, tiny_loo_split):
    data = tiny_loo_split.dataset
    problem = size_problem(name, {}, data.n_users, data.n_items, len(tiny_loo_split.train))
    assert problem.startswith(f"model {name}") and "reranker_CAN_NUM" in problem
    assert size_problem(name, TINY_PARAMS[name], data.n_users, data.n_items, len(tiny_loo_split.train)) is None


@pytest.mark.parametrize("name", ["DGCF", "NCL"])
def test_a_model_too_big_for_the_data_is_refused_with_the_fix(name, tiny_split):
    """At RecBole's defaults both fail inside RecBole on the tiny data; the check says so
    first, and the tiny settings above pass it."""
    train, data = tiny_split.train, tiny_split.dataset
    problem = size_problem(name, {}, data.n_users, data.n_items, len(train))
    assert problem.startswith(f"model {name}") and "model_params" in problem
    assert size_problem(name, TINY_PARAMS[name], data.n_users, data.n_items, len(train)) is None
    assert size_problem(name, {}, 943, 1682, 80000) is None or name == "NCL"   # ml-100k: DGCF fits
