"""A model class of the user's own (RecBole's general-recommender API) through the CLI:
attacked and defended where it has embedding tables, ``not_applicable`` (with the reason)
where not, refused in one line when it is not a usable class."""
import json

import pytest

from tests.conftest import TINY, run_cli

DOT_MF = "tests/models/my_models.py:DotMF"        # by file path
ITEM_BIAS = "tests.models.my_models:ItemBias"     # by module


def suite(tmp_path, models):
    path = tmp_path / "mine.yaml"
    path.write_text(f"""name: mine
dataset: {TINY}
models: [{', '.join(models)}]
seeds: 1
training: {{epochs: 3, patience: 2, learning_rate: 0.01, batch_size: 256}}
targets: {{policy: unpopular, count: 3}}
attacks:
  - {{name: random, budgets: [0.1], params: {{filler_items: 10}}}}
  - {{name: fgsm, budgets: [0.5]}}
defenses:
  - {{name: apr}}
""")
    return path


def test_custom_models_are_attacked_and_defended_where_they_can_be(tmp_path):
    out = tmp_path / "out"
    done = run_cli("benchmark.run", "--suite", suite(tmp_path, [DOT_MF, ITEM_BIAS]), "--out", out,
                   "--workers", "2", "--quiet")   # worker processes import the classes too
    assert done.returncode == 0, done.stderr
    records = json.loads((out / "results.json").read_text())["records"]
    by = {(r["model"], r["variant"]["attack"].split("@")[0], r["variant"]["defense"]): r for r in records}
    for attack in ("clean", "random", "fgsm"):
        for defense in ("none", "apr"):
            assert by[(DOT_MF, attack, defense)]["status"] == "ok"
    assert by[(DOT_MF, "clean", "none")]["metrics"]["ndcg@10"] > 0
    for attack in ("clean", "random"):
        assert by[(ITEM_BIAS, attack, "none")]["status"] == "ok"
    for key in ((ITEM_BIAS, "fgsm", "none"), (ITEM_BIAS, "clean", "apr"), (ITEM_BIAS, "random", "apr")):
        assert by[key]["status"] == "not_applicable" and "embedding" in by[key]["error"]


@pytest.mark.parametrize("model, message", [
    ("tests/models/nowhere.py:DotMF", "no such file"),
    ("tests.models.nowhere:DotMF", "cannot import"),
    ("tests/models/my_models.py:Missing", "not a subclass"),
    ("tests/models/my_models.py:F", "not a subclass"),
    ("tests/models/my_models.py:NoPredict", "does not implement predict, full_sort_predict"),
])
def test_unusable_classes_are_refused_in_one_line(tmp_path, model, message):
    out = tmp_path / "out"
    done = run_cli("benchmark.run", "--suite", suite(tmp_path, ["BPR"]), "--models", model, "--out", out)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()
