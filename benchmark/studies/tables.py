"""Markdown tables for the README from a run's results.json (what the report shows, in text).

    python -m benchmark.studies.tables DIR [--metric target_hr@50]

Rows: model x defense, or attack variant x budget; values: mean over seeds (± 95 % CI half-width
when there are several seeds) of the NDCG@10 drop and the target metric, from the summary, with
the Benjamini-Hochberg adjusted p of the test against clean and the training runs it rests on
(``benchmark.results.noise_floor``; none without clean retrains).
"""
import argparse
import json
from pathlib import Path


def _cell(row) -> str:
    if row is None:
        return "-"
    mean, low, high = row["mean"], row["ci_low"], row["ci_high"]
    text = f"{mean:.4f}"
    if low is not None and high is not None:
        text += f" ± {(high - low) / 2:.4f}"
    if row.get("p_adjusted_vs_clean") is not None:
        text += f" (p_adj={row['p_adjusted_vs_clean']:.2g}, {row['n_runs_vs_clean']} runs)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("out")
    parser.add_argument("--metric", action="append", default=None)
    args = parser.parse_args()
    results = json.loads((Path(args.out) / "results.json").read_text())
    metrics = args.metric or ["ndcg@10", "drop_ndcg@10", "target_hr@50", "target_rank"]
    rows: dict = {}
    for row in results["summary"]:
        key = (row["model"], row["defense"], row["variant"] or "clean")
        rows.setdefault(key, {})[row["metric"]] = row
    print("| model | defense | cell | " + " | ".join(metrics) + " |")
    print("|" + "---|" * (3 + len(metrics)))
    for (model, defense, variant), by_metric in sorted(rows.items()):
        print(f"| {model} | {defense} | {variant} | " + " | ".join(_cell(by_metric.get(m)) for m in metrics) + " |")
    run = results["run"]
    statuses: dict = {}
    for record in results["records"]:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    print(f"\nwall {run['wall_s']:.0f} s, workers {run['workers']}, cells {statuses}")


if __name__ == "__main__":
    main()
