"""Our vectorised metrics agree with RecBole's metric classes on the same rankings."""
import numpy as np
import pytest
import torch

from benchmark.core.evaluation import accuracy_from_topk


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
    from benchmark.core.evaluation import evaluate

    class Oracle:
        built = type("B", (), {"model": torch.nn.Module()})()

        def batches(self, users):
            train = tiny_split.train.csr()[users].toarray()
            test = tiny_split.test.csr()[users].toarray() if users.max() < tiny_split.test.n_users else 0
            yield users, torch.from_numpy(train * 10.0 + test * 1.0).float()

    m = evaluate(Oracle(), tiny_split.train, tiny_split.test, tiny_split.n_real_users)
    assert m["hit@10"] == 1.0 and m["recall@20"] > 0.99


def test_target_metrics_ignore_fake_users_and_training_items(tiny_split):
    """ARLib counts fake users and ranks training items in its attack metric; we do neither.

    Fake users (ids >= n_real_users) score the target first; real users who interacted with the
    target in train would also score it first. Neither may count: only real users who never saw
    the target are eligible, and for them the target is ranked last."""
    from benchmark.core.data import Interactions
    from benchmark.core.evaluation import evaluate
    split = tiny_split
    n_real, n_items = split.n_real_users, split.train.n_items
    target = int(np.argmax(split.train.item_counts()))
    fake = Interactions.build(np.arange(n_real, n_real + 5).repeat(3), np.tile([target, 1, 2], 5),
                              np.ones(15), n_real + 5, n_items)
    poisoned = split.train.concat(fake)
    had_target = set(split.train.users[split.train.items == target].tolist())
    scored_users = []

    class Scorer:
        built = type("B", (), {"model": torch.nn.Module()})()

        def batches(self, users):
            scored_users.extend(users.tolist())
            scores = torch.zeros(len(users), n_items)
            for row, user in enumerate(users):
                if user >= n_real or user in had_target:
                    scores[row, target] = 100.0       # would be a hit if counted
                else:
                    scores[row, target] = -100.0      # real, unseen: ranked last
            yield users, scores

    m = evaluate(Scorer(), poisoned, split.test, n_real, targets=np.array([target]))
    assert max(scored_users) < n_real                     # fake users are never scored
    assert m["target_hr@10"] == 0.0 and m["target_hr@50"] == 0.0
    assert m["target_rank"] > 1
