"""Threat cards: one per attack that aims at target items, what it costs the attacker and what it
buys, set beside how detectable it is and what it does besides (issue 28).

Each card reads the undefended cells of the attack at its **reference budget**, the middle one of
the budgets this run holds for it (the default sweep 1/3/5 % gives 3 %), first runs only, means
over models and seeds: the threat model (knowledge level and surrogate, from the records), the
generation seconds (``cost.attack_s``), the success (target HR@50 clean → attacked and its gain,
per model), the stealth (each unsupervised detector's AUC on the poisoned table, 0.5 chance), and
the side effects (top-10 stability against clean, RBO@10, and the shift of the average
recommendation popularity). ``plot_success_vs_stealth`` draws success against the best
detector's AUC, one point per attack.
"""
from __future__ import annotations

import math
import re
from statistics import mean

import matplotlib.pyplot as plt

from benchmark.results.leaderboard import TARGET_FAMILIES
from reports import plots
from reports.formatting import plain


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return mean(values) if values else None


def threat_cards(records: list[dict]) -> list[dict]:
    """One card per target attack (name and parameters), at its reference budget."""
    cells: dict = {}
    for r in records:
        attack = r["attack"]
        if (r["status"] != "ok" or r["defense"] is not None or r.get("replicate", 0) or attack is None
                or attack["family"] not in TARGET_FAMILIES):
            continue
        name = re.sub(r"@[^\[]*", "", r["variant"]["attack"], count=1)   # the variant without its budget
        cells.setdefault(name, []).append(r)
    cards = []
    for name, members in sorted(cells.items()):
        budgets = sorted({m["attack"]["budget_value"] for m in members})
        reference = budgets[(len(budgets) - 1) // 2]
        at = [m for m in members if m["attack"]["budget_value"] == reference]
        first = at[0]["attack"]
        models = sorted({m["model"] for m in at})
        per_model = []
        for model in models:
            runs = [m for m in at if m["model"] == model]
            per_model.append({"model": model,
                              "clean": _mean([(m.get("clean") or {}).get("target_hr@50") for m in runs]),
                              "attacked": _mean([m["metrics"].get("target_hr@50") for m in runs]),
                              "gain": _mean([(m.get("robustness") or {}).get("shift_target_hr@50") for m in runs])})
        stealth = {}
        for m in at:
            for detector, auc in (m.get("stealth") or {}).items():
                stealth.setdefault(detector, []).append(auc)
        cards.append({"attack": name, "family": first["family"], "budget_param": first["budget_param"],
                      "budget": reference, "knowledge": first.get("knowledge"),
                      "surrogate": first.get("surrogate") or "none",
                      "generation_s": _mean([m["cost"].get("attack_s") for m in at]),
                      "success": per_model, "gain": _mean([p["gain"] for p in per_model]),
                      "stealth": {d: _mean(v) for d, v in sorted(stealth.items())},
                      "rbo": _mean([(m.get("robustness") or {}).get("rbo@10") for m in at]),
                      "arp_shift": _mean([(m.get("robustness") or {}).get("shift_arp@10") for m in at])})
    return cards


def plot_success_vs_stealth(cards: list[dict]) -> str | None:
    """Target HR@50 gain against the best unsupervised detector's AUC, one point per card
    (names escaped for matplotlib's mathtext: they are untrusted strings)."""
    points = [(c["attack"], max(c["stealth"].values()), c["gain"]) for c in cards
              if c["stealth"] and c["gain"] is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, auc, gain in points:
        ax.scatter(auc, gain, s=50, color="#2456a6")
        ax.annotate(plain(name), (auc, gain), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axvline(0.5, color="0.6", ls=":", lw=1)
    ax.set(xlabel="best detector AUC on the poisoned table (0.5: undetectable; 1: caught)",
           ylabel="target HR@50 gain over clean")
    ax.set_xlim(*plots.padded_range([p[1] for p in points], 0.2, include=0.5))
    ax.set_ylim(*plots.padded_range([p[2] for p in points], 0.01, include=0.0))
    return plots.figure_uri(fig)
