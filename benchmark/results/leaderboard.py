"""The leaderboard: models ranked by how much accuracy they keep under attack (RobustBench-style).

From a results document's summary, undefended cells only, per model:

- ``robust_ndcg@10`` (the score, higher is better): NDCG@10 under attack, the mean over every
  attack variant and budget of the suite that applies to the model (each a mean over seeds);
  like RobustBench's robust accuracy it rewards accuracy and robustness together;
- ``clean_ndcg@10`` and ``mean_drop`` (the mean relative NDCG@10 drop over the same cells);
- what the attacker gains: the strongest target attack (shilling or learned variant and budget
  with the highest mean target HR@50), its ``target_hr@50`` and mean ``target_rank``;
- ``attacks``: how many attack cells the score averages (gradient attacks do not apply to
  models without embeddings, so counts differ).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

TARGET_FAMILIES = ("shilling", "learned")


def leaderboard(summary: list[dict]) -> list[dict]:
    """One row per model with undefended attack cells, best first (see the module doc)."""
    rows = defaultdict(dict)      # model -> metric -> [(label, mean)]
    for r in summary:
        if r["defense"] != "none":
            continue
        rows[r["model"]].setdefault((r["family"], r["metric"]), []).append((r["variant"], r["mean"]))
    board = []
    for model, by in rows.items():
        attacked = [m for (family, metric), values in by.items() if family != "clean" and metric == "ndcg@10"
                    for _, m in values]
        if not attacked:
            continue
        drops = [m for (family, metric), values in by.items() if metric == "drop_ndcg@10" for _, m in values]
        clean = [m for _, m in by.get(("clean", "ndcg@10"), [])]
        targeted = [(m, label) for family in TARGET_FAMILIES for label, m in by.get((family, "target_hr@50"), [])]
        strongest = max(targeted, default=(None, None))
        ranks = dict(v for family in TARGET_FAMILIES for v in by.get((family, "target_rank"), []))
        board.append({"model": model, "robust_ndcg@10": float(np.mean(attacked)),
                      "clean_ndcg@10": clean[0] if clean else None,
                      "mean_drop": float(np.mean(drops)) if drops else None, "attacks": len(attacked),
                      "strongest_target_attack": strongest[1], "target_hr@50": strongest[0],
                      "target_rank": ranks.get(strongest[1])})
    board.sort(key=lambda row: (-row["robust_ndcg@10"], row["model"]))
    for rank, row in enumerate(board, 1):
        row["rank"] = rank
    return board


def text_table(board: list[dict]) -> str:
    """The leaderboard as aligned text (what a run prints at its end)."""
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)
    lines = [f"{'#':>2} {'model':<22} {'NDCG@10 under attack':>20} {'clean':>7} {'drop':>7}  "
             f"{'strongest target attack':<30} {'tHR@50':>7} {'rank':>6}"]
    for r in board:
        lines.append(f"{r['rank']:>2} {r['model'][:22]:<22} {num(r['robust_ndcg@10'], '.4f'):>20} "
                     f"{num(r['clean_ndcg@10'], '.4f'):>7} {num(r['mean_drop'], '.1%'):>7}  "
                     f"{(r['strongest_target_attack'] or '-')[:30]:<30} {num(r['target_hr@50'], '.4f'):>7} "
                     f"{num(r['target_rank'], '.0f'):>6}")
    return "\n".join(lines)
