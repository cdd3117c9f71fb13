"""Pop on ml-100k equals a count-based popularity ranking of the same split (3 seeds, about 10 s).

    python -m pytest tests/test_pop_popularity.py -s   # prints the numbers per seed

The two rankings differ only where items tie on their count at the top-10 boundary (Pop's
top-k and a stable numpy sort break those ties differently): per user, the counts of the
top-10 items are the same multiset, and NDCG@10 / Recall@10 agree within 0.001."""
import numpy as np
import pytest
import torch

from benchmark.cells import Job
from benchmark.core.evaluation import Scorer
from benchmark.core.models import build_model
from benchmark.core.training import LeanTrainer, TrainSettings
from benchmark.pipeline import run_job
from benchmark.shared import fixed_split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pop_is_a_popularity_count(seed):
    split = fixed_split("ml-100k", None, seed)
    n, m = split.n_real_users, split.train.n_items
    counts = np.bincount(split.train.items, minlength=m)
    train, valid, test = (part.csr().toarray()[:n, :m].astype(bool)
                          for part in (split.train, split.valid, split.test))
    built = build_model("Pop", split, seed=seed)
    LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                TrainSettings(), seed).fit()
    scores = Scorer(built, m)(np.arange(n)).masked_fill(torch.from_numpy(train | valid), -torch.inf)
    pop_top = torch.topk(scores, 10, dim=1).indices.numpy()
    ndcg, recall = [], []
    for user in range(n):
        candidates = np.flatnonzero(~(train[user] | valid[user]))
        top = candidates[np.argsort(-counts[candidates], kind="stable")][:10]
        assert sorted(counts[top]) == sorted(counts[pop_top[user]]), user
        relevant = np.flatnonzero(test[user])
        if len(relevant):
            hit = np.isin(top, relevant)
            ndcg.append((hit / np.log2(np.arange(2, 12))).sum()
                        / (1 / np.log2(np.arange(2, min(len(relevant), 10) + 2))).sum())
            recall.append(hit.sum() / len(relevant))
    record = run_job(Job(suite="t", dataset="ml-100k", rating_threshold=None, model="Pop", seed=seed,
                         defense=None, poisoning=None)).records[0]
    print(f"seed {seed}: largest count {counts.max()}; NDCG@10 numpy {np.mean(ndcg):.4f} Pop "
          f"{record['metrics']['ndcg@10']:.4f}; Recall@10 numpy {np.mean(recall):.4f} Pop "
          f"{record['metrics']['recall@10']:.4f}")
    assert record["metrics"]["ndcg@10"] == pytest.approx(np.mean(ndcg), abs=1e-3)
    assert record["metrics"]["recall@10"] == pytest.approx(np.mean(recall), abs=1e-3)
