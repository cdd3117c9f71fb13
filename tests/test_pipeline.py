"""One job of the grid: applicability of defenses to the cells that ride on a trained model."""
from benchmark.harness import plan
from benchmark.pipeline import run_job
from benchmark.spec import parse_suite
from tests.conftest import TINY


def test_detector_cells_under_gradient_attacks_are_not_applicable():
    suite = parse_suite({"name": "t", "dataset": TINY, "models": ["BPR"],
                         "training": {"epochs": 2, "batch_size": 256},
                         "targets": {"count": 3},
                         "attacks": [{"name": "fgsm", "budgets": [0.5]}],
                         "defenses": [{"name": "pca_detector"}]})
    records = [r for job in plan(suite) for r in run_job(job)]
    by_cell = {(r["attack"]["name"] if r["attack"] else "clean", (r["defense"] or {}).get("name")): r
               for r in records}
    assert by_cell[("fgsm", "pca_detector")]["status"] == "not_applicable"
    assert by_cell[("fgsm", None)]["status"] == "ok"
    assert by_cell[("clean", "pca_detector")]["status"] == "ok"
    assert by_cell[("clean", "pca_detector")]["detection"]["fpr"] >= 0
