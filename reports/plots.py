"""Figures of the HTML report, drawn from a frame of result records (``records_frame``).

Each ``plot_*`` function takes that frame and returns a PNG data URI, so the report stays one
self-contained file, or ``None`` when the frame holds no data for the figure.
"""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

DPI = 90

BUDGET_AXIS = {"noise": "interactions changed (fraction of train)",
               "shilling": "fake users (fraction of real users)",
               "learned": "fake users (fraction of real users)",
               "gradient": "ε: L2 norm per embedding row (absolute), or its ratio to the row's norm (-relative)"}
COST_PARTS = ("start_train_s", "train_s", "attack_s", "eval_s", "defense_s")
FRAME_COLUMNS = ("cell_id", "model", "attack", "family", "budget", "label", "defense", "seed",
                 "status", "error", "history")

sns.set_theme(style="whitegrid", context="paper")


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record; metrics, robustness, defense effect and cost flattened into columns
    under their own names, detection as ``detection_<measure>``. A clean cell has attack "none",
    family "clean" and budget 0. A gradient attack in relative-eps mode is named
    ``<attack>-relative`` (every figure and table then says which mode it shows), and a
    defense's extra player ``<defense>-<player>`` (IRGAN's ``gan-generator``)."""
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
               "seed": rec["seed"], "status": rec["status"], "error": rec.get("error"),
               "history": rec.get("history")}
        row.update(rec["metrics"])
        row.update(rec.get("robustness") or {})
        row.update(rec.get("defense_effect") or {})
        row.update({f"detection_{k}": v for k, v in (rec.get("detection") or {}).items()})
        row.update(rec["cost"])
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=FRAME_COLUMNS)


def has_data(df: pd.DataFrame, *columns: str) -> bool:
    return not df.empty and all(c in df and df[c].notna().any() for c in columns)


def undefended_attacks(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.status == "ok") & (df.defense == "none") & (df.family != "clean")]


def _uri(fig) -> str:
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
    """(a) Clean NDCG@10 against mean relative NDCG@10 drop under attack, per model and defense."""
    ok = df[df.status == "ok"]
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
    ax.margins(0.08)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    return _uri(fig)


def plot_degradation(df: pd.DataFrame, accuracy=("ndcg@10", "recall@10"),
                     success=("target_hr@50", "target_rank")) -> str | None:
    """(b) Against the budget, one panel per (family, metric): accuracy for the families that
    degrade the model, attack success for those that aim at target items; budget 0 is clean."""
    attacked = undefended_attacks(df)
    wanted = {family: [m for m in (success if family in ("shilling", "learned") else accuracy)
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
        ax.set_xlabel(BUDGET_AXIS.get(panel.split(" · ")[0], "budget"))
    return _uri(grid.figure)


def plot_heatmaps(df: pd.DataFrame) -> str | None:
    """(c) Model x attack heatmaps of the relative NDCG@10 drop and of target HR@50."""
    attacked = undefended_attacks(df).sort_values(["family", "attack", "budget"])
    panels = [(col, title, fmt) for col, title, fmt in (
        ("drop_ndcg@10", "relative NDCG@10 drop", ".0%"),
        ("target_hr@50", "target HR@50 (attack success)", ".3f")) if has_data(attacked, col)]
    if not panels:
        return None
    order = list(dict.fromkeys(attacked["label"]))
    n_models = attacked["model"].nunique()
    width = max(8.5, 2.5 + 0.42 * len(order))   # room for each cell's number
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, len(panels) * (1.4 + 0.4 * n_models)),
                             squeeze=False)
    for ax, (col, title, fmt) in zip(axes[:, 0], panels):
        table = attacked.pivot_table(index="model", columns="label", values=col).reindex(columns=order)
        percent = PercentFormatter(1.0) if fmt.endswith("%") else None
        sns.heatmap(table, annot=True, fmt=fmt, cmap="Reds", ax=ax, annot_kws={"size": 7},
                    cbar_kws={"pad": 0.01, "format": percent})
        ax.set(title=title, xlabel="", ylabel="", facecolor="0.92")  # grey: not applicable
        ax.grid(False)
        ax.tick_params(axis="x", rotation=35)
        ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return _uri(fig)


def plot_detection(df: pd.DataFrame) -> str | None:
    """(d) Detector precision, recall and F1 of fake users per attack and budget."""
    columns = ["detection_precision", "detection_recall", "detection_f1"]
    found = df[df.status == "ok"]
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
    return _uri(grid.figure)


def plot_gan_losses(df: pd.DataFrame) -> str | None:
    """(e) Generator and discriminator loss per epoch, mean and spread over GAN-trained cells."""
    ok = df[df.status == "ok"]
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
    return _uri(fig)


def plot_cost(df: pd.DataFrame) -> str | None:
    """(f) Mean seconds per cell, split into train, attack, eval and defense, by model and defense."""
    ok = df[df.status == "ok"]
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
    return _uri(fig)
