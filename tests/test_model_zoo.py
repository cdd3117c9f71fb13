"""Every RecBole general model trains one epoch through the lean path on the tiny dataset and
ranks every item with finite scores, or is refused before any work with one line saying why."""
import importlib.util
import math

import pytest
import recbole.model.general_recommender as general
import torch
from recbole.model.abstract_recommender import GeneralRecommender

from benchmark.core.errors import BadInput
from benchmark.core.evaluation import Evaluator, Scorer
from benchmark.core.models import REFUSED, build_model, model_class, size_problem
from benchmark.core.training import LeanTrainer, TrainSettings

MODELS = sorted(n for n in dir(general) if isinstance(getattr(general, n), type)
                and issubclass(getattr(general, n), GeneralRecommender) and n != "GeneralRecommender")
TINY_PARAMS = {"DGCF": {"train_batch_size": 256}, "NCL": {"num_clusters": 8}}   # sized for 40 users
NEEDS = {"NCL": "faiss"}


def expected_refusal(name):
    return name in REFUSED or (name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None)


@pytest.mark.parametrize("name", MODELS)
def test_trains_one_epoch_or_is_refused(name, tiny_split):
    split = tiny_split
    if expected_refusal(name):
        with pytest.raises(BadInput) as refused:
            model_class(name)
        assert name in str(refused.value) and "\n" not in str(refused.value)
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


@pytest.mark.parametrize("name", ["DGCF", "NCL"])
def test_a_model_too_big_for_the_data_is_refused_with_the_fix(name, tiny_split):
    """At RecBole's defaults both fail inside RecBole on the tiny data; the check says so
    first, and the tiny settings above pass it."""
    train, data = tiny_split.train, tiny_split.dataset
    problem = size_problem(name, {}, data.n_users, data.n_items, len(train))
    assert problem.startswith(f"model {name}") and "model_params" in problem
    assert size_problem(name, TINY_PARAMS[name], data.n_users, data.n_items, len(train)) is None
    assert size_problem(name, {}, 943, 1682, 80000) is None or name == "NCL"   # ml-100k: DGCF fits
