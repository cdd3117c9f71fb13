"""Work keyed by content: a data defense that leaves its table unchanged does not train again;
its cells take the undefended model of the same table, and equal the undefended cells."""
from benchmark.harness import execute
from benchmark.plan import plan
from benchmark.spec import parse_suite
from tests.conftest import TINY


def test_an_unchanged_table_is_not_trained_twice(tmp_path):
    suite = parse_suite({"name": "keys", "dataset": TINY, "models": ["BPR"], "seeds": 1,
                         "training": {"epochs": 3, "batch_size": 256, "learning_rate": 0.01},
                         "targets": {"policy": "unpopular", "count": 3},
                         "attacks": [{"name": "random", "budgets": [0.1], "params": {"filler_items": 10}}],
                         "defenses": [{"name": "feature_detector", "params": {"threshold": 0.999}},
                                      {"name": "pca_detector"}]})
    records = {(r["variant"]["attack"].split("@")[0], r["defense"]["name"] if r["defense"] else None): r
               for r in execute(plan(suite), cells_ready(tmp_path), workers=1)}
    for attack in ("clean", "random"):
        quiet, plain = records[(attack, "feature_detector")], records[(attack, None)]
        assert quiet["detection"]["flagged"] == 0
        assert quiet["cost"]["train_s"] == 0 and quiet["cost"]["shared_train_s"] == plain["cost"]["train_s"] > 0
        assert quiet["metrics"] == plain["metrics"] and quiet["per_user"] == plain["per_user"]
    flagging = records[("random", "pca_detector")]   # it removes users: a new table, trained
    assert flagging["detection"]["flagged"] > 0 and flagging["cost"]["train_s"] > 0


def cells_ready(out):
    (out / "cells").mkdir(exist_ok=True)
    return out
