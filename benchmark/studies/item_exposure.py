"""What a number of train interactions buys an item in a clean model (README, issue 3).

    python -m benchmark.studies.item_exposure --model BPR --seeds 3 [--suite all]

Every item is treated as a target: its HR@50 among the real users who had not interacted with
it, ranked among their unseen items (the attack metric of ``benchmark/evaluation.py``), and its
mean rank. Items are binned by train count. A shilling attack with ``m`` fake users adds ``m``
interactions to each target, so the bins say what target HR@50 that many interactions buy when
they come from a real item's audience (README: heuristic fake users buy far less).
The model is trained as in the suite's cells (its ``training`` and ``model_params``).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

BINS = (1, 5, 10, 20, 50, 100, 200, 400, 1000)


def train_clean(model: str, seed: int, suite_name: str):
    """(split, scorer) of ``model`` trained on seed's clean train table as in the suite's cells."""
    from benchmark.core.evaluation import Evaluator, Scorer
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    from benchmark.shared import fixed_split
    from benchmark.spec import load_suite

    suite = load_suite(suite_name)
    split = fixed_split(suite.dataset, suite.rating_threshold, seed)
    built = build_model(model, split, dict(suite.model_params.get(model, {})), seed=seed)
    scorer = Scorer(built, split.train.n_items)
    validation = Evaluator(scorer, split.train, split.valid, split.n_real_users)
    settings = TrainSettings.from_config(built.config, **dict(suite.training))
    LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items), settings,
                seed, validate=lambda _: validation()["ndcg@10"]).fit()
    return split, scorer


def exposure(split, scorer, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(HR@k, mean rank) of every item as a target: over the real users who had not interacted
    with it in train or valid (what the test evaluator masks), ranked among their unseen items.
    NaN for an item every user has seen."""
    n_items, n_users = split.train.n_items, split.n_real_users
    seen = torch.zeros(n_users, n_items, dtype=torch.bool)
    for part in (split.train, split.valid):
        real = part.users < n_users
        seen[torch.tensor(part.users[real]), torch.tensor(part.items[real])] = True
    hits = torch.zeros(n_items, dtype=torch.float64)
    rank_sum = torch.zeros(n_items, dtype=torch.float64)
    for chunk, scores in scorer.batches(np.arange(n_users)):
        mask = seen[torch.from_numpy(chunk)]
        negated = -scores.masked_fill(mask, -torch.inf)
        # the evaluator's rank (1 + unseen items scored strictly higher; tests/test_item_exposure.py),
        # by one sort per user instead of its users x items x items comparison (8x faster here)
        ranks = torch.searchsorted(negated.sort(1).values, negated.contiguous()) + 1
        eligible = ~mask
        hits += ((ranks <= k) & eligible).sum(0).double()
        rank_sum += torch.where(eligible, ranks, 0).sum(0).double()
    n_eligible = (~seen).sum(0).double()
    return (hits / n_eligible).numpy(), (rank_sum / n_eligible).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--suite", default="all", help="whose training settings to use")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_seed = []
    for seed in range(args.seeds):
        split, scorer = train_clean(args.model, seed, args.suite)
        hr, rank = exposure(split, scorer)
        counts = split.train.item_counts()
        keep = (counts > 0) & ~np.isnan(hr)
        per_seed.append((counts[keep], hr[keep], rank[keep]))
    print(f"{args.model}, {args.seeds} seed(s), training of the '{args.suite}' suite; items binned by train count")
    print("| train interactions | items | item HR@50 (mean) | share of items with HR@50 >= 0.01 | mean rank |")
    print("|---|---|---|---|---|")
    edges = (*BINS, np.inf)
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = [((c >= low) & (c < high), h, r) for c, h, r in per_seed]
        hr = np.concatenate([h[b] for b, h, _ in in_bin])
        rank = np.concatenate([r[b] for b, _, r in in_bin])
        if hr.size:
            label = f"{low}-{high - 1:g}" if np.isfinite(high) else f">= {low}"
            print(f"| {label} | {hr.size / args.seeds:.0f} | {hr.mean():.4f} | {(hr >= 0.01).mean():.2f} | {rank.mean():.0f} |")


if __name__ == "__main__":
    main()
