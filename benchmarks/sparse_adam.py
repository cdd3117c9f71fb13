"""Dense Adam against lazy Adam (``optimizer: sparse_adam``): BPR trained to its validation
plateau, or for a fixed number of epochs, at one data size per process.

    python -m benchmarks.sparse_adam SIZE OPTIMIZER [--epochs N] [--patience P] [--lr LR]

SIZE: ml-100k (the bundled data), ml-1m or 10x-ml-1m (synthetic power-law data of that size,
``benchmarks.scaling``); OPTIMIZER: adam or sparse_adam. Prints one JSON line: epochs run, best
epoch, train seconds and seconds per epoch (validation included), and test NDCG@10 / Recall@10
of the best epoch (full-sort, the harness's evaluator). One thread.
"""
import argparse
import json
import time

import torch

from benchmarks.scaling import SIZES, load_split


def measure(size: str, optimizer: str, epochs: int, patience: int, lr: float) -> dict:
    from benchmark.core.evaluation import Evaluator, Scorer
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    torch.set_num_threads(1)
    split = load_split(size)
    built = build_model("BPR", split, {"learning_rate": lr, "weight_decay": 0.0}, seed=0)
    scorer = Scorer(built, split.train.n_items)
    validation = Evaluator(scorer, split.train, split.valid, split.n_real_users)
    testing = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid)
    settings = TrainSettings.from_config(built.config, epochs=epochs, patience=patience, optimizer=optimizer)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          settings, seed=0, validate=lambda model: validation()["ndcg@10"])
    start = time.perf_counter()
    fit = trainer.fit()
    seconds = time.perf_counter() - start
    metrics = testing()
    return {"size": size, "optimizer": optimizer, "lr": lr, "epochs_run": fit.epochs_run,
            "best_epoch": fit.best_epoch, "train_s": round(seconds, 2),
            "s_per_epoch": round(seconds / max(fit.epochs_run, 1), 3),
            "test_ndcg@10": round(metrics["ndcg@10"], 4), "test_recall@10": round(metrics["recall@10"], 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("size", choices=["ml-100k", *SIZES])
    parser.add_argument("optimizer", choices=["adam", "sparse_adam"])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.001)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.size, args.optimizer, args.epochs, args.patience, args.lr)))


if __name__ == "__main__":
    main()
