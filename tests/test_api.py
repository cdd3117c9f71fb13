"""The Python API (``benchmark.api``): the README's example, and what it returns and refuses."""
import re

import pandas as pd
import pytest

from benchmark.api import cell, records_frame, run
from tests.conftest import ROOT, TINY


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The ```python block of the README's "Python API" section, run as a user would."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    frame = scope["frame"]
    assert list(frame["model"].unique()) == ["tests.models.my_models:DotMF"]
    assert (tmp_path / "runs").is_dir()


def test_a_class_a_dataframe_and_the_records(tmp_path):
    """A class from a module and a DataFrame dataset give the same records as the CLI's names."""
    from tests.models.my_models import DotMF
    ratings = pd.read_csv(f"{TINY}/tiny.inter", sep="\t")
    ratings.columns = ["user", "item", "rating", "timestamp"]
    frame = run(cell(DotMF, attack="random", budget=0.1, attack_params={"filler_items": 5},
                     training={"epochs": 2, "batch_size": 256}), dataset=ratings, out=tmp_path / "a")
    assert sorted(frame["attack"]) == ["clean", "random@0.1[filler_items=5]"]
    assert frame.loc[frame["attack"] != "clean", "budget"].tolist() == [0.1]
    assert {"metrics.ndcg@10", "metrics.target_hr@50", "cost.train_s"} <= set(frame.columns)
    again = records_frame(frame.attrs["results"])
    pd.testing.assert_frame_equal(frame, again)
    # the same data as a directory: same numbers (the DataFrame was written as atomic files)
    by_dir = run(cell("tests.models.my_models:DotMF", attack="random", budget=0.1,
                      attack_params={"filler_items": 5}, training={"epochs": 2, "batch_size": 256}),
                 dataset=TINY, out=tmp_path / "b")
    assert frame["metrics.ndcg@10"].tolist() == pytest.approx(by_dir["metrics.ndcg@10"].tolist())


@pytest.mark.parametrize("kwargs, message", [
    ({"suite": "nope"}, "unknown suite"),
    ({"suite": cell("BPR", attack="nope")}, "unknown attack"),
    ({"suite": "smoke", "models": [int]}, "not a subclass"),
    ({"suite": "smoke", "dataset": pd.DataFrame({"a": [1]})}, "user_id and item_id"),
])
def test_bad_input_is_a_value_error_with_the_cli_message(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
