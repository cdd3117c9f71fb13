"""The budget study (``benchmark.studies.budget``): a suite's cost from a real run's job costs."""
import json

import numpy as np
import pytest

from benchmark.plan import plan
from benchmark.spec import load_suite
from benchmark.studies.budget import main, measured_costs, projection
from tests.conftest import ROOT

SAMPLE = ROOT / "tests" / "data" / "sample_suite.yaml"


def test_projecting_the_run_itself(product_results):
    document = json.loads(product_results.read_text())
    job_s, generation_s, refused = measured_costs([document])
    suite = load_suite(str(SAMPLE))
    rows, generation = projection(suite, job_s, generation_s, refused)
    assert sum(r["jobs"] for r in rows) == len(plan(suite))
    by_kind = {(r["model"], r["defense"]): r for r in rows}
    # every kind that ran is measured; GAN on Pop never applies
    assert all(r["source"] == "measured" for r in rows if r["jobs"] > r["not_applicable"])
    assert by_kind[("Pop", "apr")]["not_applicable"] == by_kind[("Pop", "apr")]["jobs"]
    # the undefended BPR jobs cost at least their own training, once per (seed, table)
    trained = {(r["seed"], r["replicate"],
                r["variant"]["attack"] if r["attack"] and r["attack"]["family"] != "gradient" else "clean"):
               r["cost"]["train_s"] for r in document["records"]
               if r["model"] == "BPR" and r["defense"] is None and r["status"] == "ok"}
    assert by_kind[("BPR", "none")]["jobs"] == len(trained)
    assert by_kind[("BPR", "none")]["worker_s"] >= sum(trained.values()) > 0
    tables = {(r["variant"]["attack"], r["seed"]): r["cost"]["attack_s"] for r in document["records"]
              if r["status"] == "ok" and r["attack"] and r["attack"]["family"] not in ("gradient",)}
    assert generation == pytest.approx(sum(tables.values()))


def test_prints_the_table_and_the_total(product_results, capsys):
    main([str(SAMPLE), "--seeds", "3", "--workers", "2", "--runs", str(product_results.parent)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| model | defense | jobs |")
    total = json.loads(out[-1])
    assert abs(total["wall_lower_bound_s"] - total["worker_s"] / 2) <= 1   # each rounded to 1 s


def test_refused_defenses_cost_nothing_and_variants_are_kinds_of_their_own(tmp_path):
    """APT cannot train LightGCN (users are added to a graph built at construction): its jobs are
    ``not_applicable`` at run time, and the projection counts them so, at no cost. ``apr`` and
    its control ``apr[lam=0]`` are measured and projected apart (their costs differ)."""
    from benchmark.results.records import read_results
    from benchmark.run import main as run
    from tests.conftest import TINY
    suite = tmp_path / "refused.yaml"
    suite.write_text("name: refused\nmodels: [LightGCN]\nseeds: 1\n"
                     "training: {epochs: 2, patience: 2, batch_size: 256}\n"
                     "attacks:\n  - {name: random, budgets: [0.05], params: {filler_items: 5}}\n"
                     "defenses:\n  - {name: apt}\n  - {name: apr}\n  - {name: apr, params: {lam: 0}}\n")
    out = tmp_path / "out"
    assert run(["--suite", str(suite), "--dataset", str(TINY), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    job_s, generation_s, refused = measured_costs([read_results(out / "results.json")])
    assert refused == {("LightGCN", "apt")}
    assert {("LightGCN", "none"), ("LightGCN", "apr"), ("LightGCN", "apr[lam=0]")} <= set(job_s)
    rows, _ = projection(load_suite(str(suite)), job_s, generation_s, refused)
    by_defense = {r["defense"]: r for r in rows}
    apt = by_defense["apt"]
    assert apt["jobs"] == apt["not_applicable"] > 0 and apt["worker_s"] == 0
    for name in ("apr", "apr[lam=0]"):
        assert by_defense[name]["s_per_job"] == pytest.approx(np.mean(job_s[("LightGCN", name)]))
