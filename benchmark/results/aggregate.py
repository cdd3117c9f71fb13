"""From raw cell records to the results document: paired references, robustness, statistics.

Derived per record (never stored in the raw cell files, so they cannot go stale):
- ``clean``: metrics of the clean cell of the same model, seed and defense;
- ``undefended``: metrics of the same attack cell without defense;
- ``robustness``: relative drop ``(clean - attacked) / clean`` of every accuracy metric and the
  shift of the target-item metrics (``prediction_shift`` of target scores, ``rank_change``);
- ``defense_effect``: what the defense buys back versus the undefended cell, and on clean cells
  its cost (relative accuracy loss and train-time ratio).
The summary gives, per (model, attack variant, defense variant, metric), the mean and the 95 %
t-interval over seeds, and p-values of paired tests with *users* as the unit (IR practice):
each user's difference to the reference cell of the same seed (clean, or undefended), averaged
over seeds, tested with the Wilcoxon signed-rank test (accuracy, target rank) or, for the
sparse target hits, an exact-or-Monte-Carlo sign-flip permutation test (scipy.stats). P-values
are corrected for multiple comparisons with Benjamini-Hochberg across the rows of one table
(one metric and one reference over the whole run): ``p_adjusted_vs_*``. Each row names its test.
A single seed is enough: the sample is the users, not the seeds.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict

import numpy as np
from scipy import stats

from benchmark.results.records import ACCURACY_METRICS

WILCOXON = "wilcoxon signed-rank over users"
SIGN_FLIP = "sign-flip permutation over users"
SPARSE_METRICS = ("target_hr@10", "target_hr@50")   # mostly zeros: the permutation test
PERMUTATIONS = 9999

HEADLINE = ("ndcg@10", "recall@10")


def _key(record):
    """(dataset, model, seed, attack variant or None, defense variant or None) of a record."""
    variant = record["variant"]
    return ((record["dataset"], record["model"]), record["seed"], variant["attack"] if record["attack"] else None,
            variant["defense"] if record["defense"] else None)


def derive(records: list[dict]) -> list[dict]:
    ok = {_key(r): r for r in records if r["status"] == "ok"}
    out = []
    for record in records:
        record = {k: v for k, v in record.items()
                  if k not in ("clean", "undefended", "robustness", "defense_effect")}
        if record["status"] == "ok":
            prefix, seed, attack, defense = _key(record)
            clean = ok.get((prefix, seed, None, defense))
            undefended = ok.get((prefix, seed, attack, None)) if defense else None
            record["clean"] = clean["metrics"] if clean and attack else None
            record["undefended"] = undefended["metrics"] if undefended else None
            record["robustness"] = _robustness(record["metrics"], record["clean"])
            record["defense_effect"] = _defense_effect(record, undefended, ok, attack)
        out.append(record)
    return out


def _robustness(metrics: dict, clean: dict | None) -> dict | None:
    if not clean:
        return None
    out = {}
    for m in ACCURACY_METRICS:
        if m in metrics and clean.get(m):
            out[f"drop_{m}"] = (clean[m] - metrics[m]) / clean[m]
    for m in ("target_hr@10", "target_hr@50", "target_ndcg@50"):
        if m in metrics and m in clean:
            out[f"shift_{m}"] = metrics[m] - clean[m]
    if "target_score" in metrics and "target_score" in clean:
        out["prediction_shift"] = metrics["target_score"] - clean["target_score"]
    if "target_rank" in metrics and "target_rank" in clean:
        out["rank_change"] = metrics["target_rank"] - clean["target_rank"]
    return out


def _defense_effect(record, undefended, ok, attack) -> dict | None:
    if not record["defense"] or not undefended:
        return None
    out = {}
    for m in HEADLINE:
        if m in record["metrics"] and m in undefended["metrics"]:
            out[f"buyback_{m}"] = record["metrics"][m] - undefended["metrics"][m]
            if attack is None and undefended["metrics"][m]:
                out[f"clean_cost_{m}"] = (undefended["metrics"][m] - record["metrics"][m]) / undefended["metrics"][m]
    for m in ("target_hr@50",):
        if m in record["metrics"] and m in undefended["metrics"]:
            out[f"buyback_{m}"] = undefended["metrics"][m] - record["metrics"][m]
    # what the defended model cost in all: its own phase plus the plain model it started from
    train = (record["cost"].get("train_s") or 0.0) + (record["cost"].get("start_train_s") or 0.0)
    base = undefended["cost"].get("train_s")
    if train and base:
        out["train_time_ratio"] = train / base
    return out


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t confidence interval (NaN bounds for a single value)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)) if values.std() > 0 else 0.0
    return mean, mean - half, mean + half


def per_user_differences(members: list[dict], references: list[dict | None], metric: str) -> np.ndarray:
    """Each user's (cell - reference) difference of ``metric``, averaged over the seeds where
    both have a value; users with none are left out."""
    diffs = []
    for record, reference in zip(members, references):
        x = (record.get("per_user") or {}).get(metric)
        c = ((reference or {}).get("per_user") or {}).get(metric)
        if x is None or c is None or len(x) != len(c):
            return np.zeros(0)
        diffs.append(np.array([np.nan if a is None or b is None else a - b for a, b in zip(x, c)], float))
    if not diffs:
        return np.zeros(0)
    stacked = np.vstack(diffs)
    seen = ~np.isnan(stacked)
    counts = seen.sum(0)
    mean = np.where(seen, stacked, 0.0).sum(0) / np.maximum(counts, 1)
    return mean[counts > 0]


def paired_user_test(diffs: np.ndarray, metric: str) -> tuple[float | None, str]:
    """Two-sided p-value of 'no difference' from per-user differences, and the test's name;
    None when every difference is zero (nothing to test)."""
    sparse = metric in SPARSE_METRICS
    name = SIGN_FLIP if sparse else WILCOXON
    nonzero = diffs[diffs != 0]
    if len(nonzero) == 0:
        return None, name
    if sparse:  # zero differences do not change the sign-flip distribution of the sum
        if len(nonzero) == 1:   # both sign patterns are as extreme as the one observed
            return 1.0, name
        result = stats.permutation_test((nonzero,), np.sum, permutation_type="samples",
                                        vectorized=True, n_resamples=PERMUTATIONS,
                                        alternative="two-sided", random_state=0)
        return float(result.pvalue), name
    return float(stats.wilcoxon(diffs).pvalue), name   # zero differences dropped (zero_method='wilcox')


def _references(records: list[dict]):
    """Lookups of the clean and the undefended reference record of each ok record."""
    ok = {_key(r): r for r in records if r["status"] == "ok"}

    def clean(r):
        prefix, seed, attack, defense = _key(r)
        return ok.get((prefix, seed, None, defense)) if attack else None

    def undefended(r):
        prefix, seed, attack, defense = _key(r)
        return ok.get((prefix, seed, attack, None)) if defense else None
    return clean, undefended


def summarise(records: list[dict]) -> list[dict]:
    clean_of, undefended_of = _references(records)
    groups = defaultdict(list)
    for r in records:
        if r["status"] != "ok":
            continue
        a = r["attack"]
        attack_label, defense_label = r["variant"]["attack"], r["variant"]["defense"]
        group = (r["dataset"], r["model"], attack_label, a["family"] if a else "clean",
                 a["budget_value"] if a else None, defense_label)
        groups[group].append(r)
    rows = []
    for (dataset, model, attack_label, family, budget, defense), members in sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        members = sorted(members, key=lambda r: r["seed"])
        attack = members[0]["attack"]["name"] if members[0]["attack"] else "clean"
        for source in ("metrics", "robustness"):
            names = sorted({m for r in members for m in (r.get(source) or {})})
            for metric in names:
                values = [r[source][metric] for r in members if metric in (r.get(source) or {})]
                mean, low, high = mean_ci(values)
                row = {"dataset": dataset, "model": model, "attack": attack, "variant": attack_label,
                       "family": family, "budget_value": budget, "defense": defense, "metric": metric, "source": source,
                       "n": len(values), "mean": mean, "ci_low": _nan_none(low), "ci_high": _nan_none(high)}
                for versus, reference_of in (("clean", clean_of), ("undefended", undefended_of)):
                    row.update({f"p_value_vs_{versus}": None, f"p_adjusted_vs_{versus}": None,
                                f"test_vs_{versus}": None, f"n_users_vs_{versus}": None})
                    references = [reference_of(r) for r in members]
                    if source != "metrics" or not any(references):
                        continue
                    diffs = per_user_differences(members, references, metric)
                    if len(diffs):
                        p, test = paired_user_test(diffs, metric)
                        row.update({f"p_value_vs_{versus}": p, f"test_vs_{versus}": test,
                                    f"n_users_vs_{versus}": int(len(diffs))})
                rows.append(row)
    _adjust(rows)
    return rows


def _adjust(rows: list[dict]) -> None:
    """Benjamini-Hochberg across the rows of one table: one metric, one reference."""
    for versus in ("clean", "undefended"):
        tables = defaultdict(list)
        for row in rows:
            if row[f"p_value_vs_{versus}"] is not None:
                tables[row["metric"]].append(row)
        for table in tables.values():
            adjusted = stats.false_discovery_control([r[f"p_value_vs_{versus}"] for r in table], method="bh")
            for row, value in zip(table, adjusted):
                row[f"p_adjusted_vs_{versus}"] = float(value)


def _nan_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


CSV_FIELDS = ("cell_id", "dataset", "model", "attack", "family", "budget_value", "defense", "seed",
              "status", "group", "metric", "value")


def to_csv(records: list[dict]) -> str:
    """Long format: one row per cell and metric (groups: metrics, clean, robustness, ...)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        a, d = r["attack"], r["defense"]
        base = {"cell_id": r["cell_id"], "dataset": r["dataset"], "model": r["model"],
                "attack": a["name"] if a else "clean", "family": a["family"] if a else "clean",
                "budget_value": a["budget_value"] if a else "", "defense": d["name"] if d else "none",
                "seed": r["seed"], "status": r["status"]}
        rows = [(g, m, v) for g in ("metrics", "robustness", "defense_effect", "detection", "cost")
                for m, v in (r.get(g) or {}).items() if isinstance(v, (int, float)) and v is not None]
        if not rows:
            writer.writerow({**base, "group": "", "metric": "", "value": ""})
        for group, metric, value in rows:
            writer.writerow({**base, "group": group, "metric": metric, "value": repr(float(value))})
    return buffer.getvalue()
