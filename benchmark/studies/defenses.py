"""Which defense helps against what: each defense against the undefended model, cell by cell
(docs/results.md, the `defenses` suite).

    python -m benchmark.studies.defenses DIR [--metric ndcg@10] [--metric target_hr@50]

From a run's ``results.json`` summary (means over seeds; tests against the undefended cell with
training runs as replicates, against the model's noise floor, Benjamini-Hochberg adjusted over
each metric's table, ``benchmark.results.noise_floor``): per model, one Markdown table per metric with a row per defense and a
column per cell (clean and every attack variant): the defense's value minus the undefended
value, bold where the adjusted p is below 0.05. The last column is the defense's training
time on clean data over the plain model's (a trainer defense's own phase only: it starts from
the plain model; a detector's detection plus retraining).
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

ALPHA = 0.05


def differences(document: dict, metric: str) -> dict:
    """(model, defense, variant) -> (defended mean - undefended mean, adjusted p or None)."""
    rows = {(row["model"], row["defense"], row["variant"]): row for row in document["summary"]
            if row["metric"] == metric and row["source"] == "metrics"}
    return {(model, defense, variant): (row["mean"] - rows[(model, "none", variant)]["mean"],
                                        row["p_adjusted_vs_undefended"])
            for (model, defense, variant), row in rows.items()
            if defense != "none" and (model, "none", variant) in rows}


def train_time_ratios(document: dict) -> dict:
    """(model, defense) -> mean over seeds of the clean job's seconds (train + defense) over the
    plain model's training seconds on the same seed."""
    clean = defaultdict(dict)
    for r in document["records"]:
        if r["status"] == "ok" and r["attack"] is None and not r.get("player") and r["replicate"] == 0:
            cost = r["cost"]
            clean[(r["model"], r["variant"]["defense"])][r["seed"]] = cost.get("train_s", 0.0) + cost.get("defense_s", 0.0)
    ratios = {}
    for (model, defense), by_seed in clean.items():
        plain = clean.get((model, "none"), {})
        shared = [s for s in by_seed if plain.get(s)]
        if defense != "none" and shared:
            ratios[(model, defense)] = float(np.mean([by_seed[s] / plain[s] for s in shared]))
    return ratios


def markdown(document: dict, metrics: list[str]) -> str:
    ratios = train_time_ratios(document)
    out = []
    for metric in metrics:
        table = differences(document, metric)
        for model in sorted({k[0] for k in table}):
            variants = sorted({k[2] for k in table if k[0] == model}, key=lambda v: (v != "clean", v))
            defenses = sorted({k[1] for k in table if k[0] == model})
            out.append(f"**{model}: {metric}, defended minus undefended** (bold: adjusted p < {ALPHA})\n")
            out.append("| defense | " + " | ".join(variants) + " | train time vs plain |")
            out.append("|---" * (len(variants) + 2) + "|")
            for defense in defenses:
                cells = []
                for variant in variants:
                    if (model, defense, variant) not in table:
                        cells.append("-")
                        continue
                    delta, p = table[(model, defense, variant)]
                    text = f"{delta:+.4f}"
                    cells.append(f"**{text}**" if p is not None and p < ALPHA else text)
                ratio = ratios.get((model, defense))
                out.append(f"| {defense} | " + " | ".join(cells) + f" | {'-' if ratio is None else f'{ratio:.2f}x'} |")
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    from benchmark.results.records import read_results
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("out", help="a run directory holding results.json")
    parser.add_argument("--metric", action="append", default=None)
    args = parser.parse_args(argv)
    print(markdown(read_results(Path(args.out) / "results.json"), args.metric or ["ndcg@10", "target_hr@50"]))


if __name__ == "__main__":
    main()
