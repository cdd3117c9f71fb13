"""Detector precision, recall, F1 and false-positive rate by attack and budget (docs/results.md).

    python -m benchmark.studies.detection DIR

From a run's ``results.json``: every ok cell defended by a detector, its ``detection`` block
(the fake users it flagged against those injected; FPR over real users), mean over seeds (once
per seed: detection does not depend on the victim model), as one
Markdown table per detector: a row per attack (its label without the budget), a column per
budget. Clean cells give the detector's false-positive rate alone. Beside every figure, the
collateral: real users removed (``detection.false_positives``), who are scored by the popularity
of the cleaned table (docs/protocol.md). Detectors are named by their label ("DegreeSAD
(unsupervised variant)"), which says when they are not the published method.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmark.api import records_frame

SCORES = ["detection.precision", "detection.recall", "detection.f1", "detection.fpr",
          "detection.false_positives"]


def detection_table(results) -> pd.DataFrame:
    """Mean over seeds of precision, recall, F1 and FPR per (detector, attack, budget)."""
    frame = records_frame(results)
    frame = frame[(frame["status"] == "ok") & frame["detection.fpr"].notna()].copy()
    if "defense.label" in frame:   # the label in place of the name, the variant's parameters kept
        frame["defense"] = [variant.replace(name, label, 1) if isinstance(label, str) else variant
                            for variant, name, label in zip(frame["defense"], frame["defense.name"], frame["defense.label"])]
    frame["attack"] = frame["attack"].str.replace(r"@[0-9.e-]+", "", regex=True)
    frame["budget"] = frame["budget"].fillna(0.0)
    # A detector reads the poisoned train table only: every model of a seed gives the same counts.
    frame = frame.drop_duplicates(["defense", "attack", "budget", "seed"])
    table = frame.groupby(["defense", "attack", "budget"])[SCORES].agg(["mean", "count"])
    means = table.xs("mean", axis=1, level=1).copy()
    means["seeds"] = table.xs("count", axis=1, level=1)[SCORES[0]]
    means.columns = [c.replace("detection.", "") for c in means.columns]
    return means.reset_index()


def _text(row) -> str:
    collateral = f"{row['false_positives']:.0f} real users removed"
    if row["attack"] == "clean":
        return f"FPR {row['fpr']:.3f}, {collateral}"
    return f"{row['precision']:.2f} / {row['recall']:.2f} / {row['f1']:.2f} ({row['fpr']:.3f}; {collateral})"


def markdown(table: pd.DataFrame) -> str:
    """One Markdown table per detector: P / R / F1 (FPR) per attack and budget."""
    out = []
    for detector, rows in table.groupby("defense"):
        budgets = sorted(b for b in rows["budget"].unique() if b)
        out.append(f"**{detector}** (precision / recall / F1 (FPR; real users removed), mean over seeds)\n")
        out.append("| attack | " + " | ".join(f"{b:g}" for b in budgets) + " |")
        out.append("|---" * (1 + len(budgets)) + "|")
        for attack, cells in rows.groupby("attack", sort=False):
            by_budget = {r["budget"]: _text(r) for _, r in cells.iterrows()}
            if attack == "clean":
                out.append(f"| clean | {by_budget[0.0]} |" + " |" * (len(budgets) - 1))
            else:
                out.append(f"| {attack} | " + " | ".join(by_budget.get(b, "-") for b in budgets) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("out", help="a run directory holding results.json")
    args = parser.parse_args(argv)
    print(markdown(detection_table(Path(args.out) / "results.json")))


if __name__ == "__main__":
    main()
