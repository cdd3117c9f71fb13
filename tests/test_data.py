"""The data layer: loading, stable ids, the fixed per-seed split, and bad datasets."""
import numpy as np
import pytest

from benchmark.core.data import load_dataset, split_dataset
from benchmark.core.errors import BadInput
from tests.conftest import TINY


def test_embedded_ml100k_loads_offline():
    ds = load_dataset("ml-100k")
    assert ds.stats()["interactions"] == 100_000
    assert ds.n_users == 943 and ds.n_items == 1682
    assert ds.item_genres is not None and any("Comedy" in g for g in ds.item_genres)


def test_split_is_8_1_1_disjoint_and_per_user(tiny, tiny_split):
    s = tiny_split
    total = len(s.train) + len(s.valid) + len(s.test)
    assert total == len(tiny.interactions)
    assert 0.75 < len(s.train) / total < 0.85
    keys = [set(p.keys().tolist()) for p in (s.train, s.valid, s.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    for part in (s.train, s.valid, s.test):   # every user is in every part
        assert set(np.unique(part.users)) == set(range(tiny.n_users))


def test_split_is_fixed_per_seed_and_differs_across_seeds(tiny):
    a, b, c = split_dataset(tiny, 3), split_dataset(tiny, 3), split_dataset(tiny, 4)
    assert np.array_equal(a.test.keys(), b.test.keys())
    assert not np.array_equal(a.test.keys(), c.test.keys())


def test_ids_do_not_depend_on_row_order(tmp_path):
    lines = open(f"{TINY}/tiny.inter").read().splitlines()
    (tmp_path / "x.inter").write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")
    a, b = load_dataset(TINY), load_dataset(str(tmp_path))
    assert np.array_equal(a.user_tokens, b.user_tokens)
    assert np.array_equal(split_dataset(a, 0).test.keys(), split_dataset(b, 0).test.keys())


def test_rating_threshold_keeps_only_high_ratings():
    ds = load_dataset(TINY, rating_threshold=4)
    assert ds.interactions.ratings.min() >= 4


def test_interactions_are_read_only(tiny_split):
    with pytest.raises(ValueError):
        tiny_split.train.users[0] = 5


def _write(tmp_path, text, name="bad", mode="w"):
    folder = tmp_path / name
    folder.mkdir()
    with open(folder / f"{name}.inter", mode) as fh:
        fh.write(text)
    return str(folder)


BAD = {
    "missing item column": ("user_id:token\trating:float\n1\t3\n", "missing column 'item_id'"),
    "non-numeric rating": ("user_id:token\titem_id:token\trating:float\n1\t2\tfive\n", "non-numeric"),
    "nan rating": ("user_id:token\titem_id:token\trating:float\n1\t2\tnan\n", "non-numeric"),
    "empty file": ("", "empty"),
    "header only": ("user_id:token\titem_id:token\n", "no interactions"),
    "comma separated": ("user_id:token,item_id:token\n1,2\n", "missing column"),
    "ragged rows": ("user_id:token\titem_id:token\n1\t2\t3\t4\n", "fields"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inter_files_are_refused_with_a_clear_message(tmp_path, case):
    text, expected = BAD[case]
    with pytest.raises(BadInput, match=expected):
        load_dataset(_write(tmp_path, text))


def test_non_utf8_file_is_refused(tmp_path):
    folder = _write(tmp_path, b"user_id:token\titem_id:token\n\xff\xfe\t1\n", mode="wb")
    with pytest.raises(BadInput, match="UTF-8"):
        load_dataset(folder)


def test_missing_directory_and_file_instead_of_directory(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))
    (tmp_path / "f.inter").write_text("x")
    with pytest.raises(BadInput, match="not a directory"):
        load_dataset(str(tmp_path / "f.inter"))


def test_too_few_interactions_per_user_to_split(tmp_path):
    folder = _write(tmp_path, "user_id:token\titem_id:token\n1\t1\n1\t2\n2\t1\n2\t2\n2\t3\n")
    with pytest.raises(BadInput, match="fewer than 3"):
        split_dataset(load_dataset(folder), 0)
