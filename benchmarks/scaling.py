"""Cost versus data size, one size per process so that peak memory is that size's own.

    python -m benchmarks.scaling SIZE [adam|sparse_adam]    # SIZE: ml-100k, ml-1m, 10x-ml-1m

Prints one JSON line: seconds for the split, the RecBole build, one BPR epoch, a full-sort
evaluation of all users, 5% random shilling profiles, an FGSM perturbation, and the peak RSS.
The epoch uses dense Adam (RecBole's) or, with ``sparse_adam``, lazy Adam (``LazyAdam``).
"""
import json
import resource
import sys
import time

import torch

SIZES = {"ml-1m": (6_040, 3_706, 1_000_000), "10x-ml-1m": (60_400, 37_060, 10_000_000)}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def load_split(size: str):
    """The bundled ml-100k split, or synthetic power-law data of a named size."""
    if size == "ml-100k":
        from benchmark.core.data import load_dataset, split_dataset
        return split_dataset(load_dataset("ml-100k"), 0)
    from benchmark.core.synthetic import synthetic_split
    return synthetic_split(*SIZES[size])


def measure(size: str, optimizer_name: str = "adam") -> dict:
    from attacks.base import AttackContext, get_attack
    from benchmark.core.evaluation import Scorer, evaluate
    from benchmark.core.models import build_model
    from benchmark.core.targets import choose_targets
    from benchmark.core.training import LazyAdam, LeanTrainer, TrainSettings
    torch.set_num_threads(1)
    split, split_s = timed(lambda: load_split(size))
    built, build_s = timed(lambda: build_model("BPR", split, {}, seed=0))
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings.from_config(built.config), seed=0)
    optimizer = (LazyAdam(built.model, built.model.parameters(), lr=1e-3) if optimizer_name == "sparse_adam"
                 else torch.optim.Adam(built.model.parameters(), lr=1e-3))

    def epoch():
        for batch in trainer.batches():
            optimizer.zero_grad(set_to_none=True)
            built.model.calculate_loss(batch).backward()
            optimizer.step()
    _, epoch_s = timed(epoch)
    for table in built.model.modules():   # FGSM reads dense gradients
        if isinstance(table, torch.nn.Embedding):
            table.sparse = False
    scorer = Scorer(built, split.train.n_items)
    _, eval_s = timed(lambda: evaluate(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid))
    targets = choose_targets(split.train, "unpopular", 5, 0)
    attack = get_attack("random", fake_user_fraction=0.05)
    _, attack_s = timed(lambda: attack.poison(AttackContext(split=split, targets=targets), seed=0))
    fgsm = get_attack("fgsm", eps=0.5)

    def perturb():
        with fgsm.perturbed(built.model, trainer.batches):
            pass
    _, fgsm_s = timed(perturb)
    return {"size": size, "optimizer": optimizer_name, "users": split.n_real_users, "items": split.train.n_items,
            "interactions": len(split.train) + len(split.valid) + len(split.test),
            "split_s": split_s, "build_s": build_s, "bpr_epoch_s": epoch_s, "full_sort_eval_s": eval_s,
            "shilling_5pct_s": attack_s, "fgsm_s": fgsm_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    print(json.dumps(measure(*sys.argv[1:3])))
