"""Threat cards (reports.threats) on a real run's results: one card per target attack at its
reference budget, with numbers recomputed here from the records."""
import json

import pytest

from reports.build import render
from reports.threats import plot_success_vs_stealth, threat_cards


@pytest.fixture(scope="module")
def document(product_results):
    return json.loads(product_results.read_text())


def test_one_card_per_target_attack_at_its_middle_budget(document):
    cards = {c["attack"]: c for c in threat_cards(document["records"])}
    assert set(cards) == {"random[filler_items=10]", "bandwagon[filler_items=10]"}   # no noise, no gradient
    bandwagon = cards["bandwagon[filler_items=10]"]
    assert bandwagon["budget"] == 0.05 and bandwagon["budget_param"] == "fake_user_fraction"   # of 0.05 and 0.1
    cells = [r for r in document["records"] if r["status"] == "ok" and r["defense"] is None
             and r["replicate"] == 0 and r["variant"]["attack"] == "bandwagon@0.05[filler_items=10]"]
    assert bandwagon["knowledge"] == cells[0]["attack"]["knowledge"]
    assert bandwagon["generation_s"] == pytest.approx(sum(r["cost"]["attack_s"] for r in cells) / len(cells))
    for row in bandwagon["success"]:
        mine = [r for r in cells if r["model"] == row["model"]]
        assert row["attacked"] == pytest.approx(sum(r["metrics"]["target_hr@50"] for r in mine) / len(mine))
        assert row["clean"] == pytest.approx(sum(r["clean"]["target_hr@50"] for r in mine) / len(mine))
    for detector, auc in bandwagon["stealth"].items():
        assert auc == pytest.approx(sum(r["stealth"][detector] for r in cells) / len(cells))
    assert bandwagon["rbo"] == pytest.approx(sum(r["robustness"]["rbo@10"] for r in cells) / len(cells))


def test_the_report_shows_the_cards_and_the_success_against_stealth_plot(document):
    cards = threat_cards(document["records"])
    assert plot_success_vs_stealth(cards).startswith("data:image/png;base64,")
    section = render(document).split('<section id="threats">', 1)[1].split("</section>", 1)[0]
    assert section.count("<tr>") == len(cards) + 1 and "data:image/png;base64," in section
    for card in cards:
        dangerous = {**card, "attack": "a$b$^_\\ attack"}   # untrusted names reach mathtext escaped
        assert plot_success_vs_stealth([dangerous]).startswith("data:image/png")
