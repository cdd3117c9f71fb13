"""What a suite would cost, from the job costs measured in earlier runs (docs/performance.md).

    python -m benchmark.studies.budget SUITE --seeds 3 --workers 2 --runs DIR [DIR ...]

A job is one trained model and the cells that share it (``benchmark.cells.Job``). From the
runs' ``results.json``, every finished job's seconds: its training (0 when it reused the
undefended model of an unchanged table), its defense's own work, its evaluations, and the
gradient attacks it ran; and every poisoned table's generation seconds (``attack_s``, once per
attack, budget and seed). The suite is then planned at ``--seeds`` and every job weighed by the
mean measured seconds of its kind ``(model, defense variant)`` (``apr`` and ``apr[lam=0]`` are
two kinds), or, where no run measured that kind, by
the progress bar's prior (``benchmark.progress``), marked as such; jobs whose defense does not
apply cost nothing. The Markdown table gives jobs, seconds per job and worker seconds per kind;
the total divided by ``--workers`` is a lower bound on the wall time (perfect packing).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmark.core.kinds import EVASION_FAMILIES, Family

UNPOISONED = (Family.CLEAN, *EVASION_FAMILIES)   # cells that train on the clean table


def variant(defense: dict | None) -> str:
    """A record's defense variant as its job names it (a GAN's player left out), ``none`` without."""
    return defense["variant"] if defense else "none"


def measured_costs(documents: list[dict]) -> tuple[dict, dict, set]:
    """``(job seconds by (model, defense variant), generation seconds by (attack name, budget),
    refused)`` from results documents: lists of measurements, and the (model, defense variant)
    kinds that were only ever ``not_applicable`` (refused when built, as APT on LightGCN)."""
    jobs, tables, refused = defaultdict(list), {}, set()
    for document in documents:
        for r in document["records"]:
            if r["status"] == "not_applicable" and r["defense"]:
                refused.add((r["model"], variant(r["defense"])))
            if r["status"] != "ok":
                continue
            family = r["attack"]["family"] if r["attack"] else Family.CLEAN
            poisoning = "clean" if family in UNPOISONED else r["variant"]["attack"]
            # one job: a trained model and every cell it gives (evasions, a GAN's generator)
            jobs[(id(document), r["model"], r["seed"], r["replicate"], r["variant"]["defense"], poisoning)].append(r)
            if family not in UNPOISONED:
                key = (r["attack"]["name"], r["attack"]["budget_value"])
                tables[(id(document), key, r["variant"]["attack"], r["seed"])] = (key, r["cost"].get("attack_s", 0.0))
    job_s = defaultdict(list)
    for (_, model, *_), members in jobs.items():
        cost = members[0]["cost"]
        seconds = cost.get("train_s", 0.0) + cost.get("defense_s", 0.0) + sum(
            r["cost"].get("eval_s", 0.0) + (r["cost"].get("attack_s", 0.0) if r["attack"] and r["attack"]["family"] in EVASION_FAMILIES else 0.0)
            for r in members)
        defense = members[0]["defense"]
        job_s[(model, variant(defense))].append(seconds)
    generation_s = defaultdict(list)
    for key, seconds in tables.values():
        generation_s[key].append(seconds)
    return dict(job_s), dict(generation_s), refused - set(job_s)


def projection(suite, job_s: dict, generation_s: dict, refused=frozenset()) -> tuple[list[dict], float]:
    """Rows per (model, defense variant) of the planned suite, and the generation seconds; a job of a
    ``refused`` kind is not applicable, as one whose defense cannot apply at all."""
    from benchmark.cells import defense_variant, inapplicable
    from benchmark.plan import plan
    from benchmark.progress import expected_s
    rows: dict = {}
    tables = set()
    for job in plan(suite):
        name = defense_variant(job.defense)
        row = rows.setdefault((job.model, name), {"model": job.model, "defense": name, "jobs": 0,
                                                  "not_applicable": 0, "worker_s": 0.0})
        row["jobs"] += 1
        if inapplicable(job) or (job.model, name) in refused:
            row["not_applicable"] += 1
            continue
        if (job.model, name) in job_s:
            row["s_per_job"], row["source"] = float(np.mean(job_s[(job.model, name)])), "measured"
        else:
            row["s_per_job"], row["source"] = expected_s(job), "prior"
        row["worker_s"] += row["s_per_job"]
        if job.poisoning is not None and job.poisoning.family not in UNPOISONED:
            tables.add((job.poisoning.name, job.poisoning.budget, job.poisoning.label, job.seed))
    generation = 0.0
    for name, budget, _, _ in tables:
        same = generation_s.get((name, budget)) or [s for (n, _), v in generation_s.items() if n == name for s in v]
        generation += float(np.mean(same)) if same else 0.0
    return sorted(rows.values(), key=lambda r: (r["model"], r["defense"])), generation


def main(argv: list[str] | None = None) -> None:
    from benchmark.results.records import read_results
    from benchmark.spec import load_suite
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("suite")
    parser.add_argument("--seeds", type=int, default=None, help="plan the suite with this many seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", nargs="+", required=True, help="run directories holding results.json")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    if args.seeds is not None:
        suite.seeds = args.seeds
    job_s, generation_s, refused = measured_costs([read_results(Path(d) / "results.json") for d in args.runs])
    rows, generation = projection(suite, job_s, generation_s, refused)
    print("| model | defense | jobs | not applicable | s per job | source | worker s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per_job = f"{r['s_per_job']:.1f}" if "s_per_job" in r else "-"
        print(f"| {r['model']} | {r['defense']} | {r['jobs']} | {r['not_applicable']} | {per_job} | "
              f"{r.get('source', '-')} | {r['worker_s']:.0f} |")
    total = sum(r["worker_s"] for r in rows) + generation
    print(f"\npoisoned tables: {generation:.0f} worker s; total {total:.0f} worker s; "
          f"at least {total / args.workers / 60:.0f} min with --workers {args.workers}")
    print(json.dumps({"worker_s": round(total), "generation_s": round(generation),
                      "wall_lower_bound_s": round(total / args.workers)}))


if __name__ == "__main__":
    main()
