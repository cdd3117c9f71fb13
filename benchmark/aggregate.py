"""From raw cell records to the results document: paired references, robustness, statistics.

Derived per record (never stored in the raw cell files, so they cannot go stale):
- ``clean``: metrics of the clean cell of the same model, seed and defense;
- ``undefended``: metrics of the same attack cell without defense;
- ``robustness``: relative drop ``(clean - attacked) / clean`` of every accuracy metric and the
  shift of the target-item metrics (``prediction_shift`` of target scores, ``rank_change``);
- ``defense_effect``: what the defense buys back versus the undefended cell, and on clean cells
  its cost (relative accuracy loss and train-time ratio).
The summary gives mean and 95% t-interval over seeds, with paired t-tests (scipy.stats).
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict

import numpy as np
from scipy import stats

from benchmark.pipeline import split_cell_id
from benchmark.records import ACCURACY_METRICS, budget_value

HEADLINE = ("ndcg@10", "recall@10")


def _key(record):
    """(dataset/model, seed, attack variant or None, defense variant or None) from the cell id."""
    prefix, attack, defense, seed = split_cell_id(record["cell_id"])
    return prefix, seed, None if attack == "clean" else attack, None if defense == "none" else defense


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
    train, base = record["cost"].get("train_s"), undefended["cost"].get("train_s")
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


def paired_p(a, b) -> float | None:
    """Two-sided paired t-test p-value over seeds; None when it cannot be computed."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.allclose(a - b, (a - b)[0]):
        return None
    return float(stats.ttest_rel(a, b).pvalue)


def summarise(records: list[dict]) -> list[dict]:
    groups = defaultdict(list)
    for r in records:
        if r["status"] != "ok":
            continue
        a = r["attack"]
        _, attack_label, defense_label, _ = split_cell_id(r["cell_id"])
        group = (r["dataset"], r["model"], attack_label, a["family"] if a else "clean",
                 budget_value(a) if a else None, defense_label)
        groups[group].append(r)
    rows = []
    for (dataset, model, attack_label, family, budget, defense), members in sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        members = sorted(members, key=lambda r: r["seed"])
        attack = members[0]["attack"]["name"] if members[0]["attack"] else "clean"
        for source in ("metrics", "robustness"):
            names = sorted({m for r in members for m in (r.get(source) or {})})
            for metric in names:
                pairs = [(r[source][metric], r) for r in members if metric in (r.get(source) or {})]
                values = [v for v, _ in pairs]
                mean, low, high = mean_ci(values)
                row = {"dataset": dataset, "model": model, "attack": attack, "variant": attack_label,
                       "family": family, "budget_value": budget, "defense": defense, "metric": metric, "source": source,
                       "n": len(values), "mean": mean, "ci_low": _nan_none(low), "ci_high": _nan_none(high),
                       "p_value_vs_clean": None, "p_value_vs_undefended": None}
                if source == "metrics":
                    clean = [(v, r["clean"][metric]) for v, r in pairs if (r.get("clean") or {}).get(metric) is not None]
                    if clean and len(clean) == len(pairs):
                        row["p_value_vs_clean"] = paired_p(*zip(*clean))
                    undef = [(v, r["undefended"][metric]) for v, r in pairs
                             if (r.get("undefended") or {}).get(metric) is not None]
                    if undef and len(undef) == len(pairs):
                        row["p_value_vs_undefended"] = paired_p(*zip(*undef))
                rows.append(row)
    return rows


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
                "budget_value": budget_value(a) if a else "", "defense": d["name"] if d else "none",
                "seed": r["seed"], "status": r["status"]}
        rows = [(g, m, v) for g in ("metrics", "robustness", "defense_effect", "detection", "cost")
                for m, v in (r.get(g) or {}).items() if isinstance(v, (int, float)) and v is not None]
        if not rows:
            writer.writerow({**base, "group": "", "metric": "", "value": ""})
        for group, metric, value in rows:
            writer.writerow({**base, "group": group, "metric": metric, "value": repr(float(value))})
    return buffer.getvalue()
