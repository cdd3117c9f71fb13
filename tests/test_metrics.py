"""Our vectorised metrics agree with RecBole's metric classes on the same rankings."""
import numpy as np
import pytest
import torch

from benchmark.evaluation import accuracy_from_topk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_matches_recbole_evaluator(seed, monkeypatch):
    # RecBole 1.2.1's MRR and NDCG still use np.float, removed in NumPy 1.24: shim it here only.
    monkeypatch.setattr(np, "float", float, raising=False)
    from recbole.evaluator.metrics import MRR, NDCG, Hit, Precision, Recall
    rng = np.random.default_rng(seed)
    users, maxk = 200, 20
    hits = rng.random((users, maxk)) < 0.15
    n_pos = rng.integers(1, 30, size=users)
    n_pos = np.maximum(n_pos, hits.sum(1))
    ours = accuracy_from_topk(torch.from_numpy(hits), torch.from_numpy(n_pos).double())
    config = {"topk": [10, 20], "metric_decimal_place": 12}
    for cls in (Recall, NDCG, Hit, Precision, MRR):
        metric = cls(config)
        result = metric.metric_info(hits, n_pos) if cls in (Recall, NDCG) else metric.metric_info(hits)
        for k in (10, 20):
            expected = float(result[:, k - 1].mean())
            assert ours[f"{cls.__name__.lower()}@{k}"] / users == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_evaluation_masks_train_items_and_scores_real_users_only(tiny_split):
    """A model that scores train items highest still cannot recommend them."""
    from benchmark.evaluation import evaluate

    class Oracle:
        built = type("B", (), {"model": torch.nn.Module()})()

        def batches(self, users):
            train = tiny_split.train.csr()[users].toarray()
            test = tiny_split.test.csr()[users].toarray() if users.max() < tiny_split.test.n_users else 0
            yield users, torch.from_numpy(train * 10.0 + test * 1.0).float()

    m = evaluate(Oracle(), tiny_split.train, tiny_split.test, tiny_split.n_real_users)
    assert m["hit@10"] == 1.0 and m["recall@20"] > 0.99
