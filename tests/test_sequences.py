"""Interaction order for sequential models: timestamps kept by the data layer, the per-user
sequence in time order, and the leave-one-out split by time; today's random split unchanged."""
import numpy as np
import pandas as pd
import pytest

from benchmark.core.data import (
    Interactions,
    embedded_dir,
    load_dataset,
    split_dataset,
    split_leave_one_out,
    user_sequences,
)
from benchmark.core.errors import BadInput

# split_dataset(ml-100k, seed 0) as computed before timestamps were kept (train, valid, test)
ML100K_SEED0 = ("323ff635648e10dac961101cbe7215c524534e03", "5388179814551768d48b0790af1ffc69147447b4",
                "6fa6bed83094a8e5ceb6916550a5c2e4e9827cad")


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")


@pytest.fixture(scope="module")
def raw(ml100k):
    """ml-100k.inter read independently with pandas, in the dataset's id space."""
    frame = pd.read_csv(embedded_dir() / "ml-100k.inter", sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return pd.DataFrame({"u": np.searchsorted(ml100k.user_tokens, frame["user_id"].to_numpy(str)),
                         "i": np.searchsorted(ml100k.item_tokens, frame["item_id"].to_numpy(str)),
                         "t": frame["timestamp"].astype(np.int64)})


def test_random_split_and_digests_unchanged(ml100k):
    s = split_dataset(ml100k, 0)
    assert (s.train.digest(), s.valid.digest(), s.test.digest()) == ML100K_SEED0
    assert all(p.timestamps is not None for p in (s.train, s.valid, s.test))


def test_timestamps_are_kept_exactly(ml100k, raw):
    inter = ml100k.interactions
    assert inter.timestamps.dtype == np.float64
    expected = raw.sort_values(["u", "i"])["t"].to_numpy()   # ml-100k has no duplicate pairs
    assert np.array_equal(inter.timestamps, expected)
    with pytest.raises(ValueError):
        inter.timestamps[0] = 0.0


def test_take_and_concat_carry_timestamps():
    a = Interactions.build([0, 1], [0, 1], [1, 1], 2, 2, timestamps=[10.0, 20.0])
    b = Interactions.build([2], [0], [1], 3, 2)
    assert np.array_equal(a.take([1]).timestamps, [20.0])
    assert np.array_equal(a.concat(b).timestamps, [10.0, 20.0, np.nan], equal_nan=True)
    assert b.concat(b).timestamps is None and b.take([0]).timestamps is None
    assert a.digest() == Interactions.build([0, 1], [0, 1], [1, 1], 2, 2).digest()


def test_user_sequences_match_pandas(ml100k, raw):
    offsets, items = user_sequences(ml100k.interactions)
    ordered = raw.sort_values(["u", "t", "i"])
    sizes = ordered.groupby("u").size().reindex(range(ml100k.n_users), fill_value=0).to_numpy()
    assert np.array_equal(np.diff(offsets), sizes)
    assert np.array_equal(items, ordered["i"].to_numpy())


def test_leave_one_out_is_by_time_and_complete(ml100k, raw):
    s = split_leave_one_out(ml100k, 0)
    n = ml100k.n_users
    assert len(s.valid) == len(s.test) == n and s.n_real_users == n
    assert len(s.train) + len(s.valid) + len(s.test) == len(ml100k.interactions)
    keys = [set(p.keys().tolist()) for p in (s.train, s.valid, s.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert set().union(*keys) == set(ml100k.interactions.keys().tolist())
    # test: each user's latest (time, item id); valid: the latest of the rest
    last = raw.sort_values(["u", "t", "i"]).groupby("u").tail(2)
    latest = last.groupby("u").nth(-1)
    before = last.groupby("u").nth(0)
    for part, expected in ((s.test, latest), (s.valid, before)):
        assert np.array_equal(part.users, np.arange(n))
        assert np.array_equal(part.items, expected.sort_values("u")["i"].to_numpy())
    for part, other in ((s.test, s.valid), (s.valid, s.train)):   # never earlier than what precedes it
        latest_before = pd.Series(other.timestamps).groupby(other.users).max().to_numpy()
        assert (part.timestamps >= latest_before).all()
    # train sequences in time order, followed by valid and test, are the full sequences
    offsets, items = user_sequences(ml100k.interactions)
    t_off, t_items = user_sequences(s.train)
    assert np.array_equal(np.diff(offsets) - 2, np.diff(t_off))
    rebuilt = np.insert(t_items, np.repeat(t_off[1:], 2), np.column_stack([s.valid.items, s.test.items]).ravel())
    assert np.array_equal(rebuilt, items)


def test_leave_one_out_is_deterministic_and_seed_independent(ml100k):
    a, b, c = split_leave_one_out(ml100k, 0), split_leave_one_out(ml100k, 0), split_leave_one_out(ml100k, 7)
    for x, y in ((a, b), (a, c)):
        assert (x.train.digest(), x.valid.digest(), x.test.digest()) == \
               (y.train.digest(), y.valid.digest(), y.test.digest())
    assert c.seed == 7


def _folder(tmp_path, text):
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "seq.inter").write_text(text)
    return str(folder)


def test_ties_short_users_and_missing_timestamps(tmp_path):
    rows = ["1\t5\t100", "1\t3\t100", "1\t9\t50", "1\t7\t100",   # ties at t=100: items 3 < 5 < 7
            "2\t1\t10", "2\t2\t20"]                               # 2 interactions: all train
    ds = load_dataset(_folder(tmp_path, "user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n"))
    s = split_leave_one_out(ds, 0)
    item = {tok: i for i, tok in enumerate(ds.item_tokens)}
    assert s.test.items.tolist() == [item["7"]] and s.valid.items.tolist() == [item["5"]]
    assert s.test.users.tolist() == s.valid.users.tolist() == [0]
    assert sorted(s.train.items[s.train.users == 0].tolist()) == sorted([item["9"], item["3"]])
    assert s.train.users.tolist().count(1) == 2   # the short user keeps both rows in train
    offsets, items = user_sequences(ds.interactions)
    assert items[offsets[0]:offsets[1]].tolist() == [item[t] for t in ("9", "3", "5", "7")]
    (tmp_path / "x").mkdir()
    no_time = load_dataset(_folder(tmp_path / "x", "user_id:token\titem_id:token\n1\t1\n1\t2\n1\t3\n"))
    assert no_time.interactions.timestamps is None
    with pytest.raises(BadInput, match="timestamp"):
        split_leave_one_out(no_time, 0)


def test_converted_sources_keep_timestamps(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBREC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r.csv").write_text("userId,movieId,rating,timestamp\n1,10,4,1700000002\n1,11,3,1700000001\n")
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "ratings.dat").write_text("1::10::4::978300760\n1::11::3::978300761\n")
    for source, expected in (("r.csv", [1700000002, 1700000001]), ("ml/ratings.dat", [978300760, 978300761])):
        assert np.array_equal(load_dataset(str(tmp_path / source)).interactions.timestamps, expected)
