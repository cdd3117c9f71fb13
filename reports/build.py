"""Build the self-contained HTML report from ``DIR/results.json``: ``python -m reports.build DIR``.

Every string from a results file (item titles, names, errors) is untrusted: the Jinja2
environment autoescapes all of it, and the page loads nothing from outside (figures are data
URIs, CSS and the table-sorting script are inline).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NamedTuple

import jinja2

from benchmark.core.atomic import write_text_atomic
from benchmark.core.errors import BadInput
from benchmark.results.aggregate import mean_ci
from benchmark.results.leaderboard import TARGET_FAMILIES, leaderboards
from benchmark.results.records import read_results
from reports import plots, threats
from reports.formatting import FILTERS

PLOTS = (  # section id, title, figure, how to read it
    ("pareto", "Accuracy vs robustness", plots.plot_pareto,
     "One point per model and defense: clean NDCG@10 against the mean relative NDCG@10 drop over "
     "every attack cell that applies to it. Points on the dashed Pareto front are not beaten on "
     "both axes by any other point."),
    ("degradation", "Degradation with the attack budget", plots.plot_degradation,
     "Undefended models as the budget grows; budget 0 is the clean cell. Noise and gradient "
     "attacks: accuracy; shilling and learned attacks, which aim at target items: target HR@50 "
     "(from 0) and mean target rank. Bands: one standard deviation over seeds. Gradient budgets: "
     "ε is the L2 norm of the perturbation per embedding row, absolute, or (attacks named "
     "-relative) as a ratio to the row's norm."),
    ("heatmaps", "Model x attack", plots.plot_heatmaps,
     "Undefended cells, mean over seeds. Every colour scale starts at 0 and is shared by the cells "
     "of its map: the NDCG@10 drop diverges around 0 (blue: the attack raised accuracy) up to at "
     "least 10 %; target HR@50 runs from 0 to at least 0.05, so a near-zero success stays pale. "
     "Target maps print the clean model's value under its name. Grey: the attack does not apply "
     "to the model; grey with a dash: a noise or gradient attack, which does not aim at the "
     "target items, left out of the target maps."),
    ("detection", "Fake-user detection", plots.plot_detection,
     "Detector defenses: precision, recall and F1 of the users they flag as fake."),
    ("gan", "GAN training", plots.plot_gan_losses,
     "Loss of both players per epoch, mean and one standard deviation over GAN-trained cells."),
    ("cost", "Cost", plots.plot_cost, "Mean wall-clock seconds of one cell, by part."),
)
CELL_COLUMNS = (  # frame column, heading, filter (num or pct), digits
    ("ndcg@10", "NDCG@10", "num", 4), ("recall@10", "Recall@10", "num", 4),
    ("drop_ndcg@10", "NDCG@10 drop", "pct", 1), ("target_hr@50", "target HR@50", "num", 4),
    ("target_rank", "target rank", "num", 0),
    ("buyback_ndcg@10", "buyback NDCG@10", "num", 4), ("seconds", "seconds", "num", 1),
)
DETECTION_MEASURES = ("precision", "recall", "f1", "fpr")
BEYOND_COLUMNS = (  # summary metric, heading, digits (docs/protocol.md, "Metrics")
    ("rbo@10", "RBO@10 vs clean", 3), ("jaccard@10", "Jaccard@10 vs clean", 3),
    ("shift_arp@10", "ARP@10 shift", 2), ("shift_tail_share@10", "long-tail share shift", 3),
    ("shift_exposure_gini@10", "exposure Gini shift", 3),
)
STEALTH_DETECTORS = ("pca_detector", "degree_sad", "fap")


class Estimate(NamedTuple):
    mean: float
    low: float | None   # 95% confidence interval, None with fewer than 2 values
    high: float | None
    n: int


def estimate(values) -> Estimate:
    """The summary's statistic (``benchmark.results.aggregate.mean_ci``) of independent values."""
    mean, low, high = mean_ci(values)
    return Estimate(mean, None if math.isnan(low) else low, None if math.isnan(high) else high, len(values))


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(("html", "j2"), default=True),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(FILTERS)


def headline(df, column: str = "drop_ndcg@10", families=None):
    """Model x attack family: the mean of ``column`` over undefended attacked cells, 95% CI over
    seeds (each seed's value is the mean over the family's attacks and budgets)."""
    attacked = plots.undefended_attacks(df)
    if families is not None:
        attacked = attacked[attacked["family"].isin(families)]
    if not plots.has_data(attacked, column):
        return [], []
    per_seed = attacked.groupby(["model", "family", "seed"])[column].mean().dropna()
    estimates = {key: estimate(group) for key, group in per_seed.groupby(level=["model", "family"])}
    families = sorted(attacked["family"].unique())
    models = sorted(attacked["model"].unique())
    return families, [(model, [estimates.get((model, f)) for f in families]) for model in models]


def attacker_gains(df) -> list[dict]:
    """Model x target family (shilling, learned): what the attacker gains against the clean model.
    Per seed, the mean over the family's attacks and budgets of the attacked target HR@50 and mean
    target rank and of their paired shift from the clean cell of the seed; then the mean, 95% CI
    over seeds, beside the clean model's value (mean over seeds)."""
    attacked = plots.undefended_attacks(df)
    attacked = attacked[attacked["family"].isin(TARGET_FAMILIES)]
    if not plots.has_data(attacked, "target_hr@50"):
        return []
    clean = df[(df.status == "ok") & (df.defense == "none") & (df.family == "clean")]
    columns = [c for c in ("target_hr@50", "shift_target_hr@50", "target_rank", "rank_change") if c in attacked]
    per_seed = attacked.groupby(["model", "family", "seed"])[columns].mean()
    rows = []
    for (model, family), group in per_seed.groupby(level=["model", "family"]):
        def stat(column):
            values = group[column].dropna() if column in group else ()
            return estimate(values) if len(values) else None

        def clean_mean(column):
            values = clean.loc[clean["model"] == model, column].dropna() if column in clean else ()
            return float(values.mean()) if len(values) else None
        moved = stat("rank_change")
        rows.append({"model": model, "family": family,
                     "clean_hr": clean_mean("target_hr@50"), "hr": stat("target_hr@50"),
                     "gain": stat("shift_target_hr@50"),
                     "clean_rank": clean_mean("target_rank"), "rank": stat("target_rank"),
                     "rank_gain": None if moved is None else -moved.mean})
    return rows


def detection_rows(df) -> list[dict]:
    columns = [f"detection_{m}" for m in DETECTION_MEASURES if f"detection_{m}" in df]
    if not columns:
        return []
    found = df[df.status == "ok"].dropna(subset=columns, how="all")
    table = found.sort_values(["model", "defense", "attack", "budget"]).groupby(
        ["model", "defense", "label"], sort=False)[columns]
    rows = table.mean().join(table.size().rename("n")).reset_index()
    return rows.rename(columns=lambda c: c.removeprefix("detection_")).to_dict("records")


def target_rows(document) -> list[dict]:
    """The promoted target items of each seed (``run.target_items``), with the attacks using them."""
    attacks = sorted({r["attack"]["name"] for r in document["records"]
                      if r["attack"] and r["attack"]["family"] in ("shilling", "learned")})
    return [{"seed": seed, "titles": [t.get("title") or t.get("token", "") for t in items],
             "attacks": ", ".join(attacks)}
            for seed, items in sorted((document["run"].get("target_items") or {}).items())] if attacks else []


def beyond_rows(summary: list[dict]) -> list[dict]:
    """Undefended attack variants (summary rows, mean over seeds): the top-10 lists' stability
    against the clean cell, beside the same between clean retrains and the clean cell (the
    noise floor of stability), and the shift of the popularity of what is recommended."""
    rows: dict = {}
    for row in summary:
        if row["defense"] != "none" or row["family"] == "clean" or row["source"] != "robustness":
            continue
        if row["metric"] in {c for c, _, _ in BEYOND_COLUMNS}:
            entry = rows.setdefault((row["dataset"], row["model"], row["family"], row["variant"]),
                                    {"model": row["model"], "family": row["family"], "variant": row["variant"]})
            entry[row["metric"]] = row["mean"]
            if row.get("noise_floor_runs"):
                entry[f"floor_{row['metric']}"] = row.get("noise_floor_mean")
    return [rows[k] for k in sorted(rows, key=lambda k: tuple(str(x) for x in k))]


def stealth_rows(records: list[dict]) -> list[dict]:
    """Per poisoned-table variant (attack and budget): each unsupervised detector's AUC at
    separating its fake users from the real ones, mean over seeds (one value per table)."""
    tables: dict = {}
    for r in records:
        if r["status"] == "ok" and r.get("stealth") and r.get("replicate", 0) == 0:
            tables.setdefault(r["variant"]["attack"], {})[(r["dataset"], r["seed"])] = r["stealth"]
    rows = []
    for variant, by_seed in sorted(tables.items()):
        row = {"variant": variant, "n": len(by_seed)}
        for name in STEALTH_DETECTORS:
            values = [v[name] for v in by_seed.values() if name in v]
            row[name] = sum(values) / len(values) if values else None
        rows.append(row)
    return rows


def render(document: dict) -> str:
    """The report of a validated results document, as one HTML string."""
    df = plots.records_frame(document["records"])
    parts = [c for c in plots.COST_PARTS if c in df]
    df["seconds"] = df[parts].sum(axis=1, min_count=1) if parts else math.nan
    first = plots.first_runs(df)   # what the summary counts; every cell is listed below
    families, headline_rows = headline(first)
    gains = attacker_gains(first)
    cells = df.sort_values(["model", "family", "attack", "budget", "defense", "seed", "replicate"])
    figures = [{"id": id_, "title": title, "uri": figure(first), "caption": caption}
               for id_, title, figure, caption in PLOTS]
    cards = threats.threat_cards(document["records"])
    return _env.get_template("report.html.j2").render(
        run=document["run"], boards=leaderboards(document["summary"]), families=families,
        headline=headline_rows, gains=gains,
        counts=df["status"].value_counts().to_dict(),
        plots=[f for f in figures if f["uri"]],   # a plot without data is left out
        cell_columns=CELL_COLUMNS, cells=cells.to_dict("records"),
        detection=detection_rows(first), measures=DETECTION_MEASURES,
        targets=target_rows(document),
        beyond=beyond_rows(document.get("summary") or []), beyond_columns=BEYOND_COLUMNS,
        stealth=stealth_rows(document["records"]), stealth_detectors=STEALTH_DETECTORS,
        cards=cards, cards_plot=threats.plot_success_vs_stealth(cards),
        failed=df[df.status == "failed"].to_dict("records"),
        floor=floor_rows(document.get("noise_floor") or []), floor_metrics=FLOOR_METRICS)


FLOOR_METRICS = ("ndcg@10", "recall@10", "target_hr@50", "target_rank")


def floor_rows(noise_floor: list[dict]) -> list[dict]:
    """Per (dataset, model): its clean runs and the standard deviation of ``FLOOR_METRICS``
    (rows with retrains only: one run per seed has no floor)."""
    rows: dict = {}
    for r in noise_floor:
        row = rows.setdefault((r["dataset"], r["model"]), {"model": r["model"], "runs": r["runs"],
                                                           "seeds": r["seeds"], "deterministic": r.get("deterministic")})
        if r["metric"] in FLOOR_METRICS:
            row[r["metric"]] = r["sd"]
    return [row for _, row in sorted(rows.items()) if row["runs"] > row["seeds"]]


def build_report(results_dir: str | Path, document: dict | None = None) -> Path:
    """Write ``DIR/report.html`` atomically from ``document`` (a results document, validated when
    it was written), else from ``DIR/results.json``, read and validated."""
    results_dir = Path(results_dir)
    html = render(document if document is not None else read_results(results_dir / "results.json"))
    out = results_dir / "report.html"
    write_text_atomic(out, html)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2 instead of usage + message
        raise BadInput(f"{message} (see python -m reports.build --help)")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m reports.build", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("results_dir", metavar="DIR", help="folder holding results.json")
    try:
        print(build_report(parser.parse_args(argv).results_dir))
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
