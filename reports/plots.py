"""Figures of the HTML report, drawn from a frame of result records (``records_frame``).

Each ``plot_*`` function takes that frame and returns a PNG data URI, so the report stays one
self-contained file, or ``None`` when the frame holds no data for the figure.
"""
from __future__ import annotations

import base64
import io
import math
import textwrap
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from benchmark.results.leaderboard import TARGET_FAMILIES  # noqa: E402
from reports.formatting import num, pct, plain  # noqa: E402

DPI = 90

BUDGET_AXIS = {"noise": "interactions changed (fraction of train)",
               "shilling": "fake users (fraction of real users)",
               "learned": "fake users (fraction of real users)",
               "gradient": "ε: L2 norm per embedding row (-relative: ratio to the row's norm)",
               "pollution": "history items changed per user"}
LABEL_WIDTH = 34   # characters of an axis label on one line of a small panel
# The smallest upper bound of a colour scale or axis (the scales start at 0): a drop of 0.8 % or
# a target HR@50 of 0.0004 is drawn pale / near the floor, not as the darkest cell.
DROP_FLOOR = 0.10
HR_FLOOR = 0.05
NAME_COLUMNS = ("model", "attack", "family", "label", "defense")
COST_PARTS = ("start_train_s", "train_s", "attack_s", "eval_s", "defense_s")
FRAME_COLUMNS = ("cell_id", "model", "attack", "family", "budget", "label", "defense", "seed",
                 "replicate", "status", "error", "history")

sns.set_theme(style="whitegrid", context="paper")


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record; metrics, robustness, defense effect and cost flattened into columns
    under their own names, detection as ``detection_<measure>``. A clean cell has attack "none",
    family "clean" and budget 0. A gradient attack in relative-eps mode is named
    ``<attack>-relative`` (every figure and table then says which mode it shows), and a
    defense's extra player ``<defense>-<player>`` (IRGAN's ``gan-generator``). ``replicate`` is 0
    for the cell the summary counts, k >= 1 for a clean retrain of it (``first_runs``)."""
    rows = []
    for rec in records:
        attack, defense = rec["attack"] or {}, rec["defense"] or {}
        name = attack.get("name", "none")
        if (attack.get("params") or {}).get("eps_mode") == "relative":
            name += "-relative"
        if attack:
            budget = attack["budget_value"]
            label = name if budget is None else f"{name} {budget:g}"
        else:
            budget, label = 0.0, "clean"
        defense_name = defense.get("name", "none")
        if defense.get("player") not in (None, "recommender"):
            defense_name += f"-{defense['player']}"
        row = {"cell_id": rec["cell_id"], "model": rec["model"],
               "attack": name, "family": attack.get("family", "clean"),
               "budget": budget, "label": label, "defense": defense_name,
               "seed": rec["seed"], "replicate": rec.get("replicate", 0),
               "status": rec["status"], "error": rec.get("error"),
               "history": rec.get("history")}
        row.update(rec["metrics"])
        row.update(rec.get("robustness") or {})
        row.update(rec.get("defense_effect") or {})
        row.update({f"detection_{k}": v for k, v in (rec.get("detection") or {}).items()})
        row.update(rec["cost"])
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=FRAME_COLUMNS)


def first_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The cells the summary and every figure count: replicate 0 (the clean retrains that measure
    the training noise are listed with the cells, not averaged into the clean reference)."""
    return df[df["replicate"] == 0] if "replicate" in df else df


def has_data(df: pd.DataFrame, *columns: str) -> bool:
    return not df.empty and all(c in df and df[c].notna().any() for c in columns)


def undefended_attacks(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.status == "ok") & (df.defense == "none") & (df.family != "clean")]


def plain_names(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose untrusted names (model, attack, defense...) matplotlib shows literally:
    every figure draws from this, so no name reaches mathtext (``Bad$Model$``, ``a$_$``)."""
    out = df.copy()
    for column in NAME_COLUMNS:
        if column in out:
            out[column] = out[column].map(plain, na_action="ignore")
    return out


def nice_bound(value: float, floor: float = 0.0) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``max(value, floor)`` (``floor`` when
    there is nothing to bound): the common upper end of a scale that starts at 0."""
    value = max(float(value) if not _nan(value) else 0.0, floor)
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(round(m * power, 12) for m in (1, 2, 2.5, 5, 10) if round(m * power, 12) >= value * (1 - 1e-12))


def padded_range(values, min_span: float, include: float | None = None, pad: float = 0.08) -> tuple[float, float]:
    """Axis limits around ``values`` (and ``include``), padded by ``pad`` of the span on each
    side, and never narrower than ``min_span``: one point, or points that nearly agree, get a
    readable range instead of ticks that differ in the fourth digit."""
    values = [float(v) for v in values if not _nan(v)] + ([include] if include is not None else [])
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    span = max(high - low, min_span)
    middle = (low + high) / 2
    low, high = min(low, middle - span / 2), max(high, middle + span / 2)
    return low - pad * span, high + pad * span


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class HeatmapPanel(NamedTuple):
    """One model x attack heatmap as drawn: colours from ``values`` on [vmin, vmax] (centred at
    ``center`` for a diverging map), cell texts ``annot``, and the ``untargeted`` columns
    (attacks that do not aim at target items) greyed in a target panel."""
    column: str
    title: str
    values: pd.DataFrame     # model x attack label, what the colours show
    annot: pd.DataFrame      # model x attack label, the cell texts
    vmin: float
    vmax: float
    center: float | None
    cmap: str
    percent: bool            # colour bar in percent
    untargeted: list
    row_labels: list


def heatmap_panels(df: pd.DataFrame) -> list[HeatmapPanel]:
    """The panels of ``plot_heatmaps`` with the numbers they are drawn from. Every scale is
    anchored at 0 and shared by all cells of its panel: the NDCG@10 drop diverges around 0 on
    [-b, b] (negative: the attack raised accuracy), b at least ``DROP_FLOOR``; target HR@50 runs
    from 0 to at least ``HR_FLOOR``; the target rank's colour is the share of the clean rank the
    attacker gained, diverging on [-1, 1]. Noise and gradient attacks do not aim at targets: their
    columns are greyed in the target panels. Rows of a target panel say the clean value."""
    attacked = undefended_attacks(df).sort_values(["family", "attack", "budget"])
    if attacked.empty:
        return []
    order = list(dict.fromkeys(attacked["label"]))
    family = dict(zip(attacked["label"], attacked["family"]))
    untargeted = [label for label in order if family[label] not in TARGET_FAMILIES]
    clean = df[(df.status == "ok") & (df.defense == "none") & (df.family == "clean")]
    models = sorted(attacked["model"].unique())

    def pivot(frame, column):
        return frame.pivot_table(index="model", columns="label", values=column).reindex(index=models, columns=order)

    def clean_mean(column):
        return clean.groupby("model")[column].mean() if has_data(clean, column) else pd.Series(dtype=float)

    panels = []
    if has_data(attacked, "drop_ndcg@10"):
        values = pivot(attacked, "drop_ndcg@10")
        bound = nice_bound(np.nanmax(np.abs(values.to_numpy())), DROP_FLOOR)
        panels.append(HeatmapPanel("drop_ndcg@10", "relative NDCG@10 drop (blue: accuracy rose)", values,
                                   values.map(lambda v: pct(v, 1)), -bound, bound, 0.0, "RdBu_r",
                                   True, [], models))
    targeted = attacked[attacked["family"].isin(TARGET_FAMILIES)]
    note = "grey —: noise and gradient attacks do not aim at target items" if untargeted else ""
    if has_data(targeted, "target_hr@50"):
        values = pivot(attacked, "target_hr@50")
        values[untargeted] = np.nan
        hr = clean_mean("target_hr@50")
        panels.append(HeatmapPanel(
            "target_hr@50", "\n".join(filter(None, ("target HR@50 (attack success), clean → attacked", note))),
            values, values.map(lambda v: num(v, 4)), 0.0, nice_bound(np.nanmax(values.to_numpy()), HR_FLOOR),
            None, "Reds", False, untargeted, [f"{m}\nclean {num(hr.get(m), 4)}" for m in models]))
    if has_data(targeted, "target_rank", "rank_change"):
        with_clean = targeted.assign(gained=-targeted["rank_change"] / (targeted["target_rank"] - targeted["rank_change"]))
        values = pivot(with_clean, "gained").reindex(columns=order)
        ranks = pivot(attacked, "target_rank")
        ranks[untargeted] = np.nan
        rank = clean_mean("target_rank")
        panels.append(HeatmapPanel(
            "target_rank", "\n".join(filter(None, (
                "mean target rank, clean → attacked (red: share of the clean rank gained by the attacker)", note))),
            values, ranks.map(lambda v: num(v, 0)), -1.0, 1.0, 0.0, "RdBu_r", True, untargeted,
            [f"{m}\nclean {num(rank.get(m), 0)}" for m in models]))
    return panels


def figure_uri(fig) -> str:
    """A figure as an embedded PNG data URI (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not beaten on both bigger ``x`` and smaller ``y``, sorted by ``x``."""
    best, keep = float("inf"), []
    for index, row in points.sort_values([x, y], ascending=[False, True]).iterrows():
        if row[y] < best:
            best = row[y]
            keep.append(index)
    return points.loc[keep].sort_values(x)


def plot_pareto(df: pd.DataFrame) -> str | None:
    """(a) Clean NDCG@10 against mean relative NDCG@10 drop under attack, per model and defense;
    the drop axis always shows 0, and neither axis is narrower than a readable span."""
    ok = plain_names(df[df.status == "ok"])
    if not has_data(ok, "ndcg@10", "drop_ndcg@10"):
        return None
    groups = ["model", "defense"]
    points = pd.concat({"clean": ok[ok.family == "clean"].groupby(groups)["ndcg@10"].mean(),
                        "drop": ok[ok.family != "clean"].groupby(groups)["drop_ndcg@10"].mean()},
                       axis=1).dropna().reset_index()
    if points.empty:
        return None
    front = pareto_front(points, "clean", "drop")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.step(front["clean"], front["drop"], where="pre", color="0.5", ls="--", lw=1, marker="o",
            markersize=15, markerfacecolor="none", label="Pareto front", zorder=1)
    sns.scatterplot(points, x="clean", y="drop", hue="model", style="defense", s=90, ax=ax, zorder=2)
    ax.set(xlabel="clean NDCG@10 (higher is better)",
           ylabel="mean NDCG@10 drop under attack (lower is better)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(*padded_range(points["clean"], max(0.02, 0.1 * points["clean"].abs().max())))
    ax.set_ylim(*padded_range(points["drop"], 0.02, include=0.0))
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    return figure_uri(fig)


def success_limits(values) -> tuple[float, float]:
    """The y range of a target HR@50 panel: from 0 (a hit rate is never negative) to a nice
    bound above the data, at least ``HR_FLOOR``."""
    values = [float(v) for v in values if not _nan(v)]
    return 0.0, nice_bound(1.05 * max(values, default=0.0), HR_FLOOR)


def plot_degradation(df: pd.DataFrame, accuracy=("ndcg@10", "recall@10"),
                     success=("target_hr@50", "target_rank")) -> str | None:
    """(b) Against the budget, one panel per (family, metric): accuracy for the families that
    degrade the model, attack success for those that aim at target items; budget 0 is clean."""
    df = plain_names(df)
    attacked = undefended_attacks(df)
    wanted = {family: [m for m in (success if family in TARGET_FAMILIES else accuracy)
                       if has_data(attacked[attacked.family == family], m)]
              for family in sorted(attacked["family"].unique())}
    if not any(wanted.values()):
        return None
    clean = df[(df.status == "ok") & (df.defense == "none") & (df.family == "clean")]
    pairs = attacked[["model", "attack", "family"]].drop_duplicates()
    starts = clean.drop(columns=["attack", "family"]).merge(pairs, on="model")
    metrics = sorted({m for ms in wanted.values() for m in ms})
    curves = pd.concat([attacked, starts]).melt(
        id_vars=["model", "attack", "family", "budget", "seed"], value_vars=metrics, var_name="metric")
    curves = curves[[m in wanted.get(f, ()) for f, m in zip(curves["family"], curves["metric"])]].dropna(subset=["value"])
    curves["panel"] = curves["family"] + " · " + curves["metric"]
    panels = [f"{f} · {m}" for f, ms in wanted.items() for m in ms]
    grid = sns.relplot(curves, x="budget", y="value", col="panel", col_order=panels, col_wrap=min(4, len(panels)),
                       hue="attack", style="model", kind="line", markers=True, dashes=False, errorbar="sd",
                       height=2.4, aspect=1.25, facet_kws={"sharex": False, "sharey": False})
    grid.set_titles("{col_name}")
    grid.set_ylabels("")
    for ax, panel in zip(grid.axes.flat, panels):
        family, metric = panel.split(" · ")
        ax.set_xlabel(textwrap.fill(BUDGET_AXIS.get(family, "budget"), LABEL_WIDTH), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
        if metric.startswith("target_hr"):
            ax.set_ylim(*success_limits(curves.loc[curves["panel"] == panel, "value"]))
    grid.tight_layout()   # keeps the legend's room on the right
    return figure_uri(grid.figure)


def plot_heatmaps(df: pd.DataFrame) -> str | None:
    """(c) Model x attack heatmaps: the relative NDCG@10 drop, and what the attacker gains on the
    targets (HR@50, mean rank); scales and grey cells as ``heatmap_panels`` says."""
    panels = heatmap_panels(df)
    if not panels:
        return None
    n_columns, n_models = panels[0].values.shape[1], panels[0].values.shape[0]
    width = max(8.5, 3.0 + 0.6 * n_columns)   # room for each cell's number
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, len(panels) * (1.6 + 0.45 * n_models)),
                             squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        sns.heatmap(panel.values, annot=panel.annot.to_numpy(), fmt="", cmap=panel.cmap, ax=ax,
                    vmin=panel.vmin, vmax=panel.vmax, center=panel.center, annot_kws={"size": 7},
                    cbar_kws={"pad": 0.01, "format": PercentFormatter(1.0, decimals=0) if panel.percent else None},
                    xticklabels=[plain(c) for c in panel.values.columns],
                    yticklabels=[plain(r) for r in panel.row_labels])
        for j, label in enumerate(panel.values.columns):
            if label in panel.untargeted:
                for i in range(len(panel.values.index)):
                    ax.text(j + 0.5, i + 0.5, "—", ha="center", va="center", color="0.55", fontsize=8)
        ax.set_title(plain(panel.title), fontsize=9)
        ax.set(xlabel="", ylabel="", facecolor="0.92")  # grey: not applicable, or not a target attack
        ax.grid(False)
        ax.tick_params(axis="x", rotation=35)
        ax.tick_params(axis="y", rotation=0)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    fig.tight_layout()
    return figure_uri(fig)


def plot_detection(df: pd.DataFrame) -> str | None:
    """(d) Detector precision, recall and F1 of fake users per attack and budget."""
    columns = ["detection_precision", "detection_recall", "detection_f1"]
    found = plain_names(df[df.status == "ok"])
    if not has_data(found, *columns):
        return None
    # A detector sees the train table, not the model: one result per (detector, cell, seed).
    scored = found.dropna(subset=columns).drop_duplicates(["defense", "label", "seed"])
    bars = scored.sort_values(["attack", "budget"]).melt(
        id_vars=["label", "defense"], value_vars=columns, var_name="measure")
    bars["measure"] = bars["measure"].str.removeprefix("detection_")
    n_labels = bars["label"].nunique()
    grid = sns.catplot(bars, x="label", y="value", hue="measure", row="defense", kind="bar",
                       errorbar="sd", height=2.6, aspect=max(2.5, 0.35 * n_labels))
    grid.set(ylim=(0, 1), xlabel="attack and budget", ylabel="")
    grid.set_titles("{row_name}")
    grid.tick_params(axis="x", rotation=30)
    return figure_uri(grid.figure)


def plot_gan_losses(df: pd.DataFrame) -> str | None:
    """(e) Generator and discriminator loss per epoch, mean and spread over GAN-trained cells."""
    ok = plain_names(df[df.status == "ok"])
    rows = [{"model": model, "player": key.removesuffix("_loss"), "epoch": epoch, "loss": loss}
            for model, history in zip(ok["model"], ok["history"]) if history
            for key in ("generator_loss", "discriminator_loss")
            for epoch, loss in enumerate(history.get(key, []), start=1)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.lineplot(pd.DataFrame(rows), x="epoch", y="loss", hue="player", style="model",
                 errorbar="sd", ax=ax)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    return figure_uri(fig)


def plot_cost(df: pd.DataFrame) -> str | None:
    """(f) Mean seconds per cell, split into train, attack, eval and defense, by model and defense."""
    ok = plain_names(df[df.status == "ok"])
    parts = [p for p in COST_PARTS if has_data(ok, p)]
    if not parts:
        return None
    mean = ok.groupby(["model", "defense"])[parts].mean()
    mean = mean.sort_index(key=lambda level: level if level.name == "model" else level != "none",
                           kind="stable")
    mean.index = [f"{model} · {defense}" for model, defense in mean.index]
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.28 * len(mean)))
    mean.rename(columns=lambda c: c.removesuffix("_s")).plot.barh(stacked=True, ax=ax, width=0.7)
    ax.invert_yaxis()
    ax.set(xlabel="mean seconds per cell", ylabel="")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    return figure_uri(fig)
