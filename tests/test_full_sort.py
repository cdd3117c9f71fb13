"""The NeuMF full-sort path gives the scores of RecBole's own pairwise ``predict``."""
import numpy as np
import pytest
import torch

from benchmark.core.evaluation import Scorer
from benchmark.core.full_sort import fast_path, neumf_scores
from benchmark.core.models import build_model


@pytest.mark.parametrize("params", [{}, {"mlp_hidden_size": [32, 16], "dropout_prob": 0.3}])
def test_neumf_fast_path_equals_predict(tiny_split, params):
    from recbole.data.interaction import Interaction
    built = build_model("NeuMF", tiny_split, params, seed=0)
    model = built.model
    with torch.no_grad():  # give the untrained layers non-trivial values
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.eval()
    users = built.ids.users(np.arange(tiny_split.n_real_users))
    items = built.ids.items(np.arange(tiny_split.train.n_items))
    cfg = built.config
    u, i = users.repeat_interleave(len(items)), items.repeat(len(users))
    with torch.no_grad():
        expected = model.predict(Interaction({cfg["USER_ID_FIELD"]: u, cfg["ITEM_ID_FIELD"]: i}))
        got = neumf_scores(model, users, items)
    assert got.shape == (len(users), len(items))
    torch.testing.assert_close(got.reshape(-1), expected, rtol=1e-5, atol=1e-6)
    assert Scorer(built, tiny_split.train.n_items).full_sort is False  # NeuMF has no own full sort


def test_fast_path_only_in_eval_mode(tiny_split):
    model = build_model("NeuMF", tiny_split, {}, seed=0).model
    model.train()
    assert fast_path(model) is None
    model.eval()
    assert fast_path(model) is neumf_scores
    assert fast_path(build_model("BPR", tiny_split, {}, seed=0).model) is None
