"""One job of the grid: applicability of defenses to the cells that ride on a trained model."""
import pytest

from benchmark.core.errors import BadInput
from benchmark.pipeline import run_job
from benchmark.plan import plan
from benchmark.spec import parse_suite
from tests.conftest import TINY, without_timings


def test_detector_cells_under_gradient_attacks_are_not_applicable():
    suite = parse_suite({"name": "t", "dataset": TINY, "models": ["BPR"],
                         "training": {"epochs": 2, "batch_size": 256},
                         "targets": {"count": 3},
                         "attacks": [{"name": "fgsm", "budgets": [0.5]}],
                         "defenses": [{"name": "pca_detector"}]})
    records = [r for job in plan(suite) for r in run_job(job).records]
    by_cell = {(r["attack"]["name"] if r["attack"] else "clean", (r["defense"] or {}).get("name")): r
               for r in records}
    assert by_cell[("fgsm", "pca_detector")]["status"] == "not_applicable"
    assert by_cell[("fgsm", None)]["status"] == "ok"
    assert by_cell[("clean", "pca_detector")]["status"] == "ok"
    assert by_cell[("clean", "pca_detector")]["detection"]["fpr"] >= 0


def test_shared_train_tables_are_made_once_and_change_no_record(tmp_path, monkeypatch):
    """Each distinct poisoned (and cleaned) train table is made by one task and shared by every
    model and defense that trains on it; the records equal those of jobs run on their own."""
    import benchmark.harness as harness
    import benchmark.schedule as schedule
    suite = parse_suite({"name": "t", "dataset": TINY, "models": ["Pop", "BPR"],
                         "training": {"epochs": 2, "batch_size": 256}, "targets": {"count": 3},
                         "attacks": [{"name": "random", "budgets": [0.1]},
                                     {"name": "noise_insert", "budgets": [0.05]}],
                         "defenses": [{"name": "pca_detector"}, {"name": "apr"}]})
    made = []
    real_prepare = schedule.prepare
    monkeypatch.setattr(schedule, "prepare", lambda job, poisoned=None: made.append(
        (job.poisoning.name if job.poisoning else "clean", job.defense.name if job.defense else "none",
         poisoned is not None)) or real_prepare(job, poisoned))
    (tmp_path / "cells").mkdir()
    jobs = plan(suite)
    shared = {r["cell_id"]: r for r in harness.execute(jobs, tmp_path, workers=1)}
    # random: poisoned once, cleaned once by PCA from that table; noise: poisoned once (the
    # detector does not apply to noise); clean: cleaned once by PCA.
    assert sorted(made) == [("clean", "pca_detector", False), ("noise_insert", "none", False),
                            ("random", "none", False), ("random", "pca_detector", True)]
    alone = {r["cell_id"]: r for job in jobs for r in run_job(job).records}
    assert shared.keys() == alone.keys()
    assert {c: without_timings(r) for c, r in shared.items()} == {c: without_timings(r) for c, r in alone.items()}
    assert shared[f"{TINY}/Pop/clean/apr/seed0"]["status"] == "not_applicable"


def test_a_defense_can_be_limited_to_some_families():
    suite = parse_suite({"name": "t", "dataset": TINY, "models": ["BPR"],
                         "attacks": [{"name": "fgsm", "budgets": [0.5]}, {"name": "random", "budgets": [0.1]}],
                         "defenses": [{"name": "gan", "against": ["clean", "gradient"]}, {"name": "apr"}]})
    cells = {cid for job in plan(suite) for cid, *_ in job.cells()}
    assert f"{TINY}/BPR/random@0.1/apr/seed0" in cells
    assert f"{TINY}/BPR/random@0.1/gan/seed0" not in cells
    assert {f"{TINY}/BPR/clean/gan/seed0", f"{TINY}/BPR/fgsm@0.5/gan/seed0"} <= cells


def test_a_defense_can_face_named_attacks_at_their_reference_budgets():
    """``against`` names attacks of the suite besides families; with ``at: reference`` each attack
    variant faces the defense at its own reference budget (PGA with an APR surrogate, given only at
    5 %, at 5 %; plain PGA at the budget nearest its default 3 %)."""
    suite = parse_suite({"name": "t", "dataset": TINY, "models": ["BPR"],
                         "attacks": [{"name": "random", "budgets": [0.03]}, {"name": "bandwagon", "budgets": [0.01, 0.03]},
                                     {"name": "pga", "budgets": [0.01, 0.03, 0.05]},
                                     {"name": "pga", "budgets": [0.05], "params": {"surrogate_apr_eps": 0.5}}],
                         "defenses": [{"name": "apr", "at": "reference", "against": ["clean", "bandwagon", "pga"]}]})
    defended = {cid for job in plan(suite) if job.defense for cid, *_ in job.cells()}
    assert defended == {f"{TINY}/BPR/{v}/apr/seed0" for v in
                        ("clean", "bandwagon@0.03", "pga@0.03", "pga@0.05[surrogate_apr_eps=0.5]")}


@pytest.mark.parametrize("against", [["shilling", "telepathy"], "clean", ["gradient"], ["fgsm"]])
def test_bad_against_lists_are_refused(against):
    with pytest.raises(BadInput, match="against"):
        parse_suite({"name": "t", "models": ["BPR"], "defenses": [{"name": "pca_detector" if against == ["shilling", "telepathy"] else "gan", "against": against}]})
