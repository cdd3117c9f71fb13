"""From raw cell records to the results document: paired references, robustness, statistics.

Derived per record (never stored in the raw cell files, so they cannot go stale):
- ``clean``: metrics of the clean cell of the same model, seed and defense;
- ``undefended``: metrics of the same attack cell without defense;
- ``robustness``: relative drop ``(clean - attacked) / clean`` of every accuracy metric and the
  shift of the target-item metrics (``prediction_shift`` of target scores, ``rank_change``) and
  of the popularity metrics (``shift_arp@10``, ...); and the stability of the top-10 lists
  against the clean cell's (``rbo@10``, ``jaccard@10``, ``benchmark.core.beyond``, from the
  records' ``top10``). A clean retrain (``replicate`` >= 1) has only these two, against the
  clean cell of its seed (replicate 0): the reshuffling that training noise alone causes;
- ``defense_effect``: what the defense buys back versus the undefended cell, and on clean cells
  its cost (relative accuracy loss and train-time ratio).
The summary gives, per (model, attack variant, defense variant, metric), the mean and the 95 %
t-interval over seeds, and p-values with the *training run* as the unit of replication: each
cell against the model's noise floor, the spread of its clean retrains on the same split
(``benchmark.results.noise_floor``, docs/protocol.md). Users of one trained model share its
training noise, so they are not replicates. P-values are corrected for multiple comparisons with
Benjamini-Hochberg across the rows of one table (one metric and one reference over the whole
run): ``p_adjusted_vs_*``. Each row names its test and the training runs it rests on
(``n_runs_vs_*``); with too few runs there is no p-value, and the test says why.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict

import numpy as np
from scipy import stats

from benchmark.core import beyond
from benchmark.core.kinds import EVASION_FAMILIES
from benchmark.results import noise_floor
from benchmark.results.records import ACCURACY_METRICS

HEADLINE = ("ndcg@10", "recall@10")
POPULARITY_METRICS = ("arp@10", "tail_share@10", "exposure_gini@10")   # shifted against clean
STABILITY_METRICS = ("rbo@10", "jaccard@10")    # top-10 lists against the clean cell's


def _key(record):
    """((dataset, model), (seed, replicate), attack variant or None, defense variant or None)."""
    variant = record["variant"]
    return ((record["dataset"], record["model"]), (record["seed"], record["replicate"]),
            variant["attack"] if record["attack"] else None, variant["defense"] if record["defense"] else None)


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
            if attack is not None and clean is not None:
                _add_stability(record, clean)
            elif attack is None and seed[1] > 0:        # a clean retrain against its seed's clean cell
                first = ok.get((prefix, (seed[0], 0), None, defense))
                if first is not None:
                    _add_stability(record, first)
            record["defense_effect"] = _defense_effect(record, undefended, ok, attack)
        out.append(record)
    return out


def _add_stability(record: dict, reference: dict) -> None:
    """``rbo@10`` and ``jaccard@10`` of the record's top-10 lists against ``reference``'s, into
    its ``robustness`` (nothing when either has no lists)."""
    measures = beyond.stability(record.get("top10"), reference.get("top10"))
    if measures:
        record["robustness"] = {**(record["robustness"] or {}), **measures}


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
    for m in POPULARITY_METRICS:
        if m in metrics and m in clean:
            out[f"shift_{m}"] = metrics[m] - clean[m]
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


def summarise(records: list[dict]) -> list[dict]:
    """Per (model, attack variant, defense variant, metric) over the seeds' cells (replicate 0):
    mean and 95 % t-interval over seeds, and the tests against clean and against undefended,
    with training runs as replicates (``benchmark.results.noise_floor``)."""
    ok = [r for r in records if r["status"] == "ok"]
    floors = noise_floor.floor(ok)
    stability_floors = noise_floor.stability_floor(ok, STABILITY_METRICS)
    runs = defaultdict(list)                    # (dataset, model, seed, attack, defense) -> records
    for r in ok:
        runs[(r["dataset"], r["model"], r["seed"], r["variant"]["attack"], r["variant"]["defense"])].append(r)
    groups = defaultdict(list)
    for r in ok:
        if r["replicate"] == 0:
            a = r["attack"]
            groups[(r["dataset"], r["model"], r["variant"]["attack"], a["family"] if a else "clean",
                    a["budget_value"] if a else None, r["variant"]["defense"])].append(r)
    rows = []
    for (dataset, model, attack_label, family, budget, defense), members in sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        members = sorted(members, key=lambda r: r["seed"])
        first = members[0]
        attack = first["attack"]["name"] if first["attack"] else "clean"
        clean_label = "clean"
        undefended_label = "none" if first["defense"] else None
        for source in ("metrics", "robustness"):
            names = sorted({m for r in members for m in (r.get(source) or {})})
            for metric in names:
                values = [r[source][metric] for r in members if metric in (r.get(source) or {})]
                mean, low, high = mean_ci(values)
                row = {"dataset": dataset, "model": model, "split": first.get("split", "random"),
                       "attack": attack, "variant": attack_label,
                       "family": family, "budget_value": budget, "defense": defense, "metric": metric, "source": source,
                       "n": len(values), "mean": mean, "ci_low": _nan_none(low), "ci_high": _nan_none(high)}
                for versus in ("clean", "undefended"):
                    row.update({f"p_value_vs_{versus}": None, f"p_adjusted_vs_{versus}": None,
                                f"test_vs_{versus}": None, f"n_runs_vs_{versus}": None})
                if source == "metrics":
                    floor = floors.get((dataset, model))
                    tests = {}
                    if first["attack"] is not None:
                        tests["clean"] = _test(members, runs, metric, floor, defense_label=defense,
                                               attack_label=clean_label, paired=family in EVASION_FAMILIES)
                    if undefended_label is not None:
                        tests["undefended"] = _test(members, runs, metric, floor, defense_label=undefended_label,
                                                    attack_label=attack_label, paired=False)
                    for versus, (p, test, n_runs) in tests.items():
                        row.update({f"p_value_vs_{versus}": p, f"test_vs_{versus}": test,
                                    f"n_runs_vs_{versus}": n_runs})
                elif metric in STABILITY_METRICS and first["attack"] is not None:
                    row.update(_stability_floor(metric, stability_floors.get((dataset, model), {})))
                rows.append(row)
    _adjust(rows)
    return rows


def _test(members: list[dict], runs: dict, metric: str, floor: dict | None, *, defense_label: str,
          attack_label: str, paired: bool):
    """(p, test, runs) of the group's cells against the reference cells (``attack_label``,
    ``defense_label``) of the same seeds. ``paired``: an evasion attack on the reference's own
    trained models: the per-run effects, over every replicate of the cell."""
    def values(key) -> list[float]:
        return [r["metrics"][metric] for r in runs.get(key, []) if metric in r["metrics"]]

    if paired:
        effects = []
        for member in members:
            prefix = (member["dataset"], member["model"], member["seed"])
            cells = {r["replicate"]: r for r in runs[(*prefix, member["variant"]["attack"], member["variant"]["defense"])]}
            references = {r["replicate"]: r for r in runs.get((*prefix, attack_label, defense_label), [])}
            effects += [cell["metrics"][metric] - references[k]["metrics"][metric] for k, cell in cells.items()
                        if k in references and metric in cell["metrics"] and metric in references[k]["metrics"]]
        return noise_floor.paired_runs(effects, metric) if effects else (None, None, None)
    cell = {m["seed"]: m["metrics"][metric] for m in members if metric in m["metrics"]}
    references = {seed: values((members[0]["dataset"], members[0]["model"], seed, attack_label, defense_label))
                  for seed in cell}
    return noise_floor.versus_runs(cell, references, metric, floor)


def _stability_floor(metric: str, model_floor: dict) -> dict:
    """A stability row's noise floor: ``noise_floor_mean``, the same measure between each clean
    retrain of the model and its seed's clean cell, mean over the retrains
    (``noise_floor.stability_floor``), and ``noise_floor_runs``, how many; no p-value."""
    values = [v for by_seed in model_floor.get(metric, {}).values() for v in by_seed]
    return {"noise_floor_mean": float(np.mean(values)) if values else None, "noise_floor_runs": len(values),
            "test_vs_clean": noise_floor.STABILITY_FLOOR}


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


CSV_FIELDS = ("cell_id", "dataset", "model", "split", "attack", "family", "budget_value", "defense", "seed",
              "status", "group", "metric", "value")


def to_csv(records: list[dict]) -> str:
    """Long format: one row per cell and metric (groups: metrics, clean, robustness, ...)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        a, d = r["attack"], r["defense"]
        base = {"cell_id": r["cell_id"], "dataset": r["dataset"], "model": r["model"], "split": r.get("split", "random"),
                "attack": a["name"] if a else "clean", "family": a["family"] if a else "clean",
                "budget_value": a["budget_value"] if a else "", "defense": d["name"] if d else "none",
                "seed": r["seed"], "status": r["status"]}
        rows = [(g, m, v) for g in ("metrics", "robustness", "defense_effect", "detection", "stealth", "cost")
                for m, v in (r.get(g) or {}).items() if isinstance(v, (int, float)) and v is not None]
        if not rows:
            writer.writerow({**base, "group": "", "metric": "", "value": ""})
        for group, metric, value in rows:
            writer.writerow({**base, "group": group, "metric": metric, "value": repr(float(value))})
    return buffer.getvalue()
