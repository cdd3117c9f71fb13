"""Attacks against a reference attack at the same budget, and the transfer table (docs/results.md).

    python -m benchmark.studies.versus DIR [--reference random] [--defense none]

From a run's ``results.json`` (undefended cells of the shilling and learned families, whose
budgets are fake users as a fraction of real users): per victim model, attack and budget, the
target HR@10 / HR@50 and mean target rank (mean over seeds), the NDCG@10 drop against clean, the
attack's generation time (``cost.attack_s``, mean over seeds), and the test of target HR@50
against the reference attack at the same budget and seeds with training runs as replicates (an
exact permutation over runs, ``benchmark.results.noise_floor``: the run needs ``noise_floor``
retrains, else no p-value), Benjamini-Hochberg adjusted over the table. Then the transfer table:
each attack (and the surrogate it optimised against) by victim, target HR@50 at each budget.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from benchmark.core.kinds import PROFILE_FAMILIES
from benchmark.results import noise_floor


def _cells(records: list[dict], defense: str) -> dict:
    """(model, attack name, budget) -> records of the seeds: ok cells of the defense variant
    with an attack of a fake-profile family (their budgets share one unit)."""
    cells = defaultdict(list)
    for r in records:
        if (r["status"] == "ok" and r["variant"]["defense"] == defense and r["attack"]
                and r["attack"]["family"] in PROFILE_FAMILIES):
            cells[(r["model"], r["attack"]["name"], r["attack"]["budget_value"])].append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in cells.items()}


def compare(document: dict, reference: str = "random", defense: str = "none") -> list[dict]:
    """One row per (model, attack, budget): means over seeds and the test against
    ``reference`` at the same budget (``p`` None for the reference itself or without one)."""
    cells = _cells(document["records"], defense)
    floors = noise_floor.floor(document["records"])
    rows = []
    for (model, name, budget), members in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0]))):
        ref = {r["seed"]: r for r in cells.get((model, reference, budget), [])}
        row = {"model": model, "attack": name, "budget": budget, "seeds": len(members),
               "surrogate": members[0]["attack"].get("surrogate", ""), "p": None, "p_adjusted": None}
        for metric in ("target_hr@10", "target_hr@50", "target_rank"):
            row[metric] = float(np.mean([r["metrics"].get(metric, np.nan) for r in members]))
        row["drop_ndcg@10"] = float(np.mean([(r.get("robustness") or {}).get("drop_ndcg@10", np.nan)
                                             for r in members]))
        row["attack_s"] = float(np.mean([r["cost"].get("attack_s", np.nan) for r in members]))
        if name != reference and ref:
            metric = "target_hr@50"
            cell = {r["seed"]: r["metrics"][metric] for r in members if r["seed"] in ref and metric in r["metrics"]}
            references = {seed: [ref[seed]["metrics"][metric]] for seed in cell if metric in ref[seed]["metrics"]}
            row["p"], row["test"], row["runs"] = noise_floor.versus_runs(
                cell, references, metric, floors.get((members[0]["dataset"], model)))
        rows.append(row)
    tested = [r for r in rows if r["p"] is not None]
    if tested:
        for row, value in zip(tested, stats.false_discovery_control([r["p"] for r in tested], method="bh")):
            row["p_adjusted"] = float(value)
    return rows


def markdown(rows: list[dict], reference: str) -> str:
    lines = [f"| victim | attack | budget | target HR@10 | target HR@50 | p vs {reference} (BH) | "
             "mean target rank | NDCG@10 drop | generation s |", "|" + "---|" * 9]
    for r in rows:
        p = "-" if r["p_adjusted"] is None else f"{r['p_adjusted']:.2g}"
        lines.append(f"| {r['model']} | {r['attack']} | {r['budget']:g} | {r['target_hr@10']:.4f} | "
                     f"{r['target_hr@50']:.4f} | {p} | {r['target_rank']:.0f} | "
                     f"{100 * r['drop_ndcg@10']:.1f} % | {r['attack_s']:.1f} |")
    models = sorted({r["model"] for r in rows})
    by = {(r["attack"], r["budget"], r["model"]): r["target_hr@50"] for r in rows}
    surrogate = {r["attack"]: r["surrogate"] or "-" for r in rows}
    lines += ["", "| attack | surrogate | budget | " + " | ".join(models) + " |", "|" + "---|" * (3 + len(models))]
    for attack, budget in sorted({(r["attack"], r["budget"]) for r in rows}):
        values = " | ".join(f"{by[(attack, budget, m)]:.4f}" if (attack, budget, m) in by else "-" for m in models)
        lines.append(f"| {attack} | {surrogate[attack]} | {budget:g} | {values} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("out", help="a run folder with results.json")
    parser.add_argument("--reference", default="random", help="the attack every other is tested against")
    parser.add_argument("--defense", default="none", help="defense variant of the cells (default: none)")
    args = parser.parse_args(argv)
    document = json.loads((Path(args.out) / "results.json").read_text())
    print(markdown(compare(document, args.reference, args.defense), args.reference))


if __name__ == "__main__":
    main()
