"""Does early stopping hide poisoning? Target success at the selected epoch vs a fixed budget.

Model selection uses real users' validation NDCG@10 and never looks at the targets, so an attack
whose effect grows with training could be cut short by it. For BPR under PGA and bandwagon at 5 %
(and the clean cell, for what training alone does to the targets), per seed: train as the grid
does (early stopping, best validation epoch E kept), then train the same model on the same
poisoned table for a fixed 2 (E + 1) epochs and keep the last one. Both are scored on the same
candidates. The fixed run continues the selected run's own trajectory (same seed, same
sampling), so each seed gives one paired effect, and the test is over seeds' runs
(``benchmark.results.noise_floor.paired_runs``: one-sample t-test; sign-flip permutation for
target hits)::

    python -m benchmark.studies.early_stopping --seeds 3 --workers 2 [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor

from benchmark.cells import Job
from benchmark.pipeline import prepare, run_job
from benchmark.results.noise_floor import paired_runs
from benchmark.spec import AttackSpec

ATTACKS = {
    "clean": None,
    "pga@0.05": AttackSpec("pga", "learned", "fake_user_fraction", 0.05, {}),
    "bandwagon@0.05": AttackSpec("bandwagon", "shilling", "fake_user_fraction", 0.05, {}),
}
TRAINING = {"epochs": 300, "patience": 10}   # RecBole's defaults, as the clean and defenses suites
METRICS = ("target_hr@50", "target_hr@10", "target_rank", "ndcg@10")


def one(seed: int, attack: str) -> dict:
    job = Job(suite="early_stopping", dataset="ml-100k", rating_threshold=None, model="BPR",
              seed=seed, defense=None, poisoning=ATTACKS[attack], training=tuple(sorted(TRAINING.items())))
    prepared = prepare(job) if job.poisoning is not None else None
    selected = run_job(job, prepared).records[0]
    epochs = 2 * (selected["cost"]["best_epoch"] + 1)
    fixed_job = Job(**{**job.__dict__, "training": tuple(sorted(
        {**TRAINING, "epochs": epochs, "patience": 10 ** 6, "keep": "last"}.items()))})
    fixed = run_job(fixed_job, prepared).records[0]
    return {"seed": seed, "attack": attack, "selected": selected, "fixed": fixed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    tasks = [(seed, attack) for seed in range(args.seeds) for attack in ATTACKS]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(one, *zip(*tasks)))
    rows = []
    for attack in ATTACKS:
        runs = [r for r in results if r["attack"] == attack]
        if any(r[k]["status"] != "ok" for r in runs for k in ("selected", "fixed")):
            print(f"{attack}: a run failed: {[r[k]['error'] for r in runs for k in ('selected', 'fixed')]}",
                  file=sys.stderr)
            return 1
        row = {"attack": attack, "seeds": len(runs),
               "selected_epoch": [r["selected"]["cost"]["best_epoch"] + 1 for r in runs],
               "fixed_epochs": [r["fixed"]["cost"]["epochs"] for r in runs]}
        for metric in METRICS:
            sel = [r["selected"]["metrics"][metric] for r in runs]
            fix = [r["fixed"]["metrics"][metric] for r in runs]
            p, test, _ = paired_runs([f - s for f, s in zip(fix, sel)], metric)
            row[metric] = {"selected": sum(sel) / len(sel), "fixed": sum(fix) / len(fix),
                           "per_seed_selected": sel, "per_seed_fixed": fix, "p_value": p, "test": test}
        rows.append(row)
    fmt = lambda v: "n/a" if v is None else f"{v:.2g}"  # noqa: E731
    print(f"{'attack':<16}{'epochs, selected / fixed':<34}{'target HR@50, selected -> fixed (p)':<38}"
          f"NDCG@10, selected -> fixed (p)")
    for row in rows:
        hr, nd = row["target_hr@50"], row["ndcg@10"]
        epochs = f"{row['selected_epoch']} / {row['fixed_epochs']}"
        target = f"{hr['selected']:.4f} -> {hr['fixed']:.4f} ({fmt(hr['p_value'])})"
        print(f"{row['attack']:<16}{epochs:<34}{target:<38}"
              f"{nd['selected']:.4f} -> {nd['fixed']:.4f} ({fmt(nd['p_value'])})")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
