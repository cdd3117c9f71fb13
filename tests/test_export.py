"""``--export-poisoned DIR``: every poisoned table a run makes, as RecBole atomic files that
read back to the very table the run trained on, with the attack's settings beside it."""
import json

import numpy as np
import pytest

from benchmark.export import read_export
from benchmark.pipeline import prepare
from benchmark.plan import plan
from benchmark.shared import fixed_split, seed_targets
from benchmark.spec import load_suite
from tests.conftest import TINY, run_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    suite = root / "suite.yaml"
    suite.write_text(f"""name: exported
dataset: {TINY}
models: [Pop]
seeds: 2
training: {{epochs: 2}}
targets: {{policy: unpopular, count: 3}}
attacks:
  - {{name: random, budgets: [0.1], params: {{filler_items: 10}}}}
  - {{name: noise_insert, budgets: [0.1]}}
  - {{name: fgsm, budgets: [0.5]}}
defenses:
  - {{name: pca_detector}}
""")
    done = run_cli("benchmark.run", "--suite", suite, "--out", root / "out", "--export-poisoned",
                   root / "poisoned", "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    return suite, root / "poisoned"


def test_each_poisoned_table_reads_back_identical(exported):
    suite_path, folder = exported
    jobs = [j for j in plan(load_suite(str(suite_path))) if j.poisoning is not None and j.defense is None
            and j.poisoning.family != "gradient"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/seed*")) == sorted(
        f"{d}/seed{s}" for d in ("noise_insert@0.1", "random@0.1__filler_items__10__") for s in (0, 1))
    for job in jobs:
        made = prepare(job).train
        sub = folder / ("random@0.1__filler_items__10__" if job.poisoning.name == "random" else "noise_insert@0.1")
        back = read_export(sub / f"seed{job.seed}", fixed_split(job.dataset, job.rating_threshold, job.seed))
        assert back.n_users == made.n_users and back.n_items == made.n_items
        order_a, order_b = np.lexsort((made.items, made.users)), np.lexsort((back.items, back.users))
        for column in ("users", "items", "ratings"):
            assert np.array_equal(getattr(made, column)[order_a], getattr(back, column)[order_b])


def test_attack_json_names_targets_fake_users_and_settings(exported):
    suite_path, folder = exported
    info = json.loads((folder / "random@0.1__filler_items__10__" / "seed1" / "attack.json").read_text())
    split = fixed_split(TINY, None, 1)
    targets = seed_targets(TINY, None, 1, "unpopular", 3)
    assert [t["token"] for t in info["targets"]] == split.dataset.item_tokens[targets].tolist()
    assert info["attack"]["params"] == {"filler_items": 10, "fake_user_fraction": 0.1}
    assert info["attack"]["knowledge"] == "black-box" and info["seed"] == 1
    assert len(info["fake_users"]) == info["budget"]["fake_users"] > 0
    valid = (folder / "random@0.1__filler_items__10__" / "seed1" / "poisoned.valid.inter").read_text().splitlines()
    assert len(valid) == 1 + len(split.valid) and valid[0] == "user_id:token\titem_id:token\trating:float"


def test_a_used_export_folder_is_refused(exported, tmp_path):
    suite_path, folder = exported
    done = run_cli("benchmark.run", "--suite", suite_path, "--out", tmp_path / "o", "--export-poisoned", folder)
    assert done.returncode == 2 and "already holds files" in done.stderr and not (tmp_path / "o").exists()
