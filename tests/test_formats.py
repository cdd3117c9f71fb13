"""Datasets people have (``benchmark.core.formats``): MovieLens ratings.dat and u.data, and a CSV with
named columns, converted once into the same interactions as the atomic original; malformed
sources refused in one line."""

import numpy as np
import pandas as pd
import pytest

from benchmark.core.data import load_dataset
from benchmark.core.errors import BadInput
from tests.conftest import TINY, run_cli


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_rows():
    frame = pd.read_csv(f"{TINY}/tiny.inter", sep="\t", dtype=str)
    frame.columns = ["user", "item", "rating", "timestamp"]
    return frame


def same(a, b):
    for column in ("users", "items", "ratings"):
        assert np.array_equal(getattr(a.interactions, column), getattr(b.interactions, column))
    assert a.user_tokens.tolist() == b.user_tokens.tolist() and a.item_tokens.tolist() == b.item_tokens.tolist()


def test_ratings_dat_with_movies(tmp_path, tiny_rows):
    folder = tmp_path / "ml-tiny"
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join("::".join(r) + "\n" for r in tiny_rows.itertuples(index=False)))
    items = sorted(set(tiny_rows["item"]))
    (folder / "movies.dat").write_text("".join(f"{i}::Film {i} (1999)::Drama|Sci-Fi\n" for i in items),
                                       encoding="latin-1")
    data = load_dataset(str(folder))
    same(data, load_dataset(TINY))
    assert data.item_genres[0] == ("Drama", "Sci-Fi") and data.item_titles[0].startswith("Film ")
    assert load_dataset(str(folder / "ratings.dat")).interactions.users.size == len(tiny_rows)


def test_u_data_with_u_item_and_converted_once(tmp_path, tiny_rows, cache):
    folder = tmp_path / "ml-small"
    folder.mkdir()
    tiny_rows.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    items = sorted(set(tiny_rows["item"]))
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)   # Comedy
    (folder / "u.item").write_text("".join(f"{i}|Movie {i}|01-Jan-1995||http://x|{flags}\n" for i in items),
                                   encoding="latin-1")
    data = load_dataset(str(folder))
    same(data, load_dataset(TINY))
    assert data.item_genres[0] == ("Comedy",)
    converted = next(cache.glob("datasets/*/*.inter"))
    stamp = converted.stat().st_mtime_ns
    load_dataset(str(folder))
    assert converted.stat().st_mtime_ns == stamp and len(list(cache.glob("datasets/*"))) == 1
    with open(folder / "u.data", "a") as fh:   # a changed source is converted again
        fh.write("999\t1\t5\t1\n")
    assert load_dataset(str(folder)).n_users == data.n_users + 1
    assert len(list(cache.glob("datasets/*"))) == 2


def test_csv_with_named_columns(tmp_path, tiny_rows):
    path = tmp_path / "interactions.csv"
    tiny_rows.rename(columns={"user": "userId", "item": "movieId"}).to_csv(path, index=False)
    same(load_dataset(str(path)), load_dataset(TINY))


@pytest.mark.parametrize("name, text, message", [
    ("ratings.dat", "1::2::5::1\n3::4\n", "row 2 has fewer than 4 fields"),
    ("ratings.dat", "1::2::5::1\n::4::5::1\n", "no user or item id"),
    ("ratings.dat", "1::2::five::1\n", "not a number"),
    ("u.data", "1\t2\t5\t1\n1\t2\t3\t4\t5\n", "malformed"),
    ("data.csv", "person,thing\n1,2\n", "must name a user column"),
    ("data.csv", "user_id,item_id,rating\n1,2,x\n", "not a number"),
])
def test_malformed_sources_are_refused_in_one_line(tmp_path, name, text, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / name).write_text(text)
    with pytest.raises(BadInput, match=message):
        load_dataset(str(folder))
    done = run_cli("benchmark.run", "--suite", "smoke", "--dataset", folder, "--out", tmp_path / "o")
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
