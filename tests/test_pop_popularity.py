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


def test_tied_targets_take_their_expected_rank_on_pop():
    """Pop scores items by their train count, so many items tie. A target's rank is its expected
    position among the candidates it ties with (scipy's "average" rank), and its HR@k the chance
    that a uniformly random order of the ties puts it in the top k: ties never favour the target."""
    from scipy.stats import rankdata

    from benchmark.core.evaluation import Evaluator
    from benchmark.core.targets import choose_targets
    split = fixed_split("ml-100k", None, 0)
    n, m = split.n_real_users, split.train.n_items
    counts = np.bincount(split.train.items, minlength=m).astype(float)
    targets = choose_targets(split.train, "unpopular", 5, 0)
    built = build_model("Pop", split, seed=0)
    LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                TrainSettings(), 0).fit()
    metrics = Evaluator(Scorer(built, m), split.train, split.test, n, also_mask=split.valid,
                        targets=targets)()
    seen = split.train.csr().toarray()[:n, :m].astype(bool) | split.valid.csr().toarray()[:n, :m].astype(bool)
    ranks, hr50 = [], []
    for user in range(n):
        candidates = np.flatnonzero(~seen[user])
        average = rankdata(-counts[candidates], method="average")
        low = rankdata(-counts[candidates], method="min")
        high = rankdata(-counts[candidates], method="max")
        for target in targets:
            if seen[user, target]:
                continue
            at = np.searchsorted(candidates, target)
            ranks.append(average[at])
            hr50.append(np.clip((50 - (low[at] - 1)) / (high[at] - low[at] + 1), 0, 1))
    assert high[at] - low[at] > 10          # the unpopular targets do tie with many items
    assert metrics["target_rank"] == pytest.approx(np.mean(ranks), rel=1e-9)
    assert metrics["target_hr@50"] == pytest.approx(np.mean(hr50), abs=1e-12)
