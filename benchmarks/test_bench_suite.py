"""Whole-grid cost: one cell of each kind of the all suite, and the whole smoke suite.

    .venv/bin/pytest benchmarks/test_bench_suite.py --benchmark-only -p no:cacheprovider -s

Each job runs once (rounds=1: a job trains a model to early stopping); ``extra_info`` has the
cost breakdown the record itself holds (train, attack, defense, eval seconds, epochs).
"""
import subprocess
import sys

import pytest

from benchmark.pipeline import prepare, run_job
from benchmark.plan import plan
from benchmark.shared import prepare_key
from benchmark.spec import load_suite

ALL = load_suite("all")
KINDS = {  # a label -> (model, poisoning cell label or "clean", defense name or "none")
    "BPR clean + FGSM/PGD": ("BPR", "clean", "none"),
    "NeuMF clean + FGSM/PGD": ("NeuMF", "clean", "none"),
    "LightGCN clean + FGSM/PGD": ("LightGCN", "clean", "none"),
    "ItemKNN clean": ("ItemKNN", "clean", "none"),
    "BPR noise_insert 20%": ("BPR", "noise_insert@0.2", "none"),
    "BPR bandwagon 5%": ("BPR", "bandwagon@0.05", "none"),
    "BPR PGA 5% (attack included)": ("BPR", "pga@0.05", "none"),
    "BPR bandwagon 5% + feature detector": ("BPR", "bandwagon@0.05", "feature_detector"),
    "BPR APR": ("BPR", "clean", "apr"),
    "BPR GAN": ("BPR", "clean", "gan"),
}


def find_job(model, cell, defense):
    for job in plan(ALL):
        label = job.poisoning.label if job.poisoning else "clean"
        name = job.defense.name if job.defense else "none"
        if (job.model, label, name) == (model, cell, defense):
            return job
    raise LookupError((model, cell, defense))


@pytest.mark.parametrize("kind", list(KINDS))
def test_all_suite_cell(benchmark, kind):
    job = find_job(*KINDS[kind])
    records = benchmark.pedantic(lambda: run_job(job, prepare(job) if prepare_key(job) else None).records,
                                 rounds=1, iterations=1)
    assert records[0]["status"] == "ok" and all(r["status"] != "failed" for r in records), \
        [r["error"] for r in records]
    benchmark.extra_info.update({k: v for k, v in records[0]["cost"].items()})


def test_smoke_suite(benchmark, tmp_path):
    def run():
        subprocess.run([sys.executable, "-m", "benchmark.run", "--suite", "smoke", "--workers", "2",
                        "--quiet", "--out", str(tmp_path / "smoke")], check=True)
    benchmark.pedantic(run, rounds=1, iterations=1)
