"""The leaderboard: models ranked by how much accuracy they keep under attack (RobustBench-style).

From a results document's summary, undefended cells only, per model:

- ``robust_ndcg@10`` (the score, higher is better): NDCG@10 under attack, the mean over every
  attack variant and budget of the suite that applies to the model (each a mean over seeds);
  like RobustBench's robust accuracy it rewards accuracy and robustness together;
- ``clean_ndcg@10`` and ``mean_drop`` (the mean relative NDCG@10 drop over the same cells);
- what the attacker gains, against the clean model: the strongest target attack (the shilling or
  learned variant and budget with the largest gain in mean target HR@50 over the clean cell,
  ``target_hr_gain``; ties broken by how far it moved the targets' mean rank up,
  ``target_rank_gain`` = clean rank - attacked rank, then by name), its ``target_hr@50`` and mean
  ``target_rank``, and the clean model's ``clean_target_hr@50`` and ``clean_target_rank``;
- ``attacks``: how many attack cells the score averages (gradient attacks do not apply to
  models without embeddings, so counts differ);
- one board per task (``leaderboards``): general recommenders on the random split (top-n) and
  sequential ones on the leave-one-out split by time (next item) solve different tasks, so they
  are never ranked together; Pop or another general model run leave-one-out joins the second as
  its baseline;
- whether the attacker's gain clears the training noise: the summary's test of that variant's
  target HR@50 and mean target rank against clean (``target_hr_p`` / ``target_rank_p``, the
  Benjamini-Hochberg adjusted p; ``*_test`` names the test, or why there is none) and
  ``significant``: either adjusted p below ``ALPHA``.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

TARGET_FAMILIES = ("shilling", "learned", "pollution")
ALPHA = 0.05
TASKS = {"random": "Top-n recommendation (general models, random 8:1:1 split)",
         "leave_one_out": "Next-item recommendation (sequential models, leave-one-out split by time)"}


def leaderboards(summary: list[dict]) -> list[tuple[str, list[dict]]]:
    """(task title, leaderboard) for each task the summary has cells of, top-n first."""
    boards = [(title, leaderboard(summary, split)) for split, title in TASKS.items()]
    return [(title, board) for title, board in boards if board]


def leaderboard(summary: list[dict], split: str = "random") -> list[dict]:
    """One row per model with undefended attack cells on ``split``, best first (module doc)."""
    rows = defaultdict(dict)      # model -> metric -> [(label, mean)]
    tests = {}                    # (model, variant, metric) -> (adjusted p, test)
    for r in summary:
        if r["defense"] != "none" or r.get("split", "random") != split:
            continue
        rows[r["model"]].setdefault((r["family"], r["metric"]), []).append((r["variant"], r["mean"]))
        tests[(r["model"], r["variant"], r["metric"])] = (r["p_adjusted_vs_clean"], r["test_vs_clean"])
    board = []
    for model, by in rows.items():
        attacked = [m for (family, metric), values in by.items() if family != "clean" and metric == "ndcg@10"
                    for _, m in values]
        if not attacked:
            continue
        drops = [m for (family, metric), values in by.items() if metric == "drop_ndcg@10" for _, m in values]
        clean = [m for _, m in by.get(("clean", "ndcg@10"), [])]
        target = _strongest_target_attack(by)
        for metric, key in (("target_hr@50", "target_hr"), ("target_rank", "target_rank")):
            target[f"{key}_p"], target[f"{key}_test"] = tests.get(
                (model, target["strongest_target_attack"], metric), (None, None))
        target["significant"] = any(p is not None and p < ALPHA for p in (target["target_hr_p"], target["target_rank_p"]))
        board.append({"model": model, "task": split, "robust_ndcg@10": float(np.mean(attacked)),
                      "clean_ndcg@10": clean[0] if clean else None,
                      "mean_drop": float(np.mean(drops)) if drops else None, "attacks": len(attacked),
                      **target})
    board.sort(key=lambda row: (-row["robust_ndcg@10"], row["model"]))
    for rank, row in enumerate(board, 1):
        row["rank"] = rank
    return board


def _strongest_target_attack(by: dict) -> dict:
    """The target attack variant of one model that gains the attacker most (see the module doc).

    A gain is the summary's paired shift (``shift_target_hr@50``, ``rank_change``: attacked minus
    clean of the same seed, mean over seeds), else the difference of the means."""
    def values(family, metric):
        return dict(by.get((family, metric), []))
    clean_hr = next(iter(values("clean", "target_hr@50").values()), None)
    clean_rank = next(iter(values("clean", "target_rank").values()), None)
    candidates = []
    for family in TARGET_FAMILIES:
        hr, rank = values(family, "target_hr@50"), values(family, "target_rank")
        shift, rank_change = values(family, "shift_target_hr@50"), values(family, "rank_change")
        for label, attacked in hr.items():
            gain = shift.get(label, None if clean_hr is None else attacked - clean_hr)
            moved = rank_change.get(label, None if clean_rank is None or label not in rank
                                    else rank[label] - clean_rank)
            candidates.append({"strongest_target_attack": label, "target_hr@50": attacked,
                               "target_rank": rank.get(label), "target_hr_gain": gain,
                               "target_rank_gain": None if moved is None else -moved})
    if not candidates:
        return {"strongest_target_attack": None, "target_hr@50": None, "target_rank": None,
                "target_hr_gain": None, "target_rank_gain": None,
                "clean_target_hr@50": clean_hr, "clean_target_rank": clean_rank}

    def strength(c):  # bigger is stronger; float noise below 1e-9 is no difference
        def key(x):
            return -math.inf if x is None else round(x, 9)
        return key(c["target_hr_gain"]), key(c["target_rank_gain"])
    best = sorted(sorted(candidates, key=lambda c: c["strongest_target_attack"]), key=strength, reverse=True)[0]
    return {**best, "clean_target_hr@50": clean_hr, "clean_target_rank": clean_rank}


def text_table(board: list[dict]) -> str:
    """The leaderboard as aligned text (what a run prints at its end); the attacker's gain as
    clean -> attacked target HR@50 and mean target rank."""
    def num(x, fmt):
        if x is None:
            return "-"
        text = format(x, fmt)
        return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text

    def change(clean, attacked, fmt):
        return f"{num(clean, fmt)}->{num(attacked, fmt)}"
    lines = [f"{'#':>2} {'model':<22} {'NDCG@10 under attack':>20} {'clean':>7} {'drop':>7}  "
             f"{'strongest target attack':<30} {'tHR@50 clean->att':>17} {'rank clean->att':>15}"]
    for r in board:
        lines.append(f"{r['rank']:>2} {r['model'][:22]:<22} {num(r['robust_ndcg@10'], '.4f'):>20} "
                     f"{num(r['clean_ndcg@10'], '.4f'):>7} {num(r['mean_drop'], '.1%'):>7}  "
                     f"{(r['strongest_target_attack'] or '-')[:30]:<30} "
                     f"{change(r.get('clean_target_hr@50'), r['target_hr@50'], '.4f'):>17} "
                     f"{change(r.get('clean_target_rank'), r['target_rank'], '.0f'):>15}")
    return "\n".join(lines)
