"""Interaction tables, dataset loading and the fixed per-seed split.

Everything downstream (attacks, defenses, models, metrics) works in one integer index space:
users ``0..n_users-1`` and items ``0..n_items-1``, assigned here from the raw tokens in sorted
token order, so ids are stable whatever the file's row order. Real users come first; fake users
added by an attack get ids ``>= n_real_users`` and exist only in a poisoned train table.
"""
from __future__ import annotations

import csv
import errno
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.errors import BadInput

EMBEDDED = "ml-100k"
SPLIT_RATIOS = (0.8, 0.1, 0.1)
MAX_HEADER_CHARS = 65_536   # a longer first line is not a header (a file without newlines?)
MAX_FIELD_CHARS = 1_024     # ids, ratings and timestamps longer than this are refused


@dataclass(frozen=True)
class Interactions:
    """An immutable table of (user, item, rating) rows in the benchmark's index space.

    ``timestamps`` (float64 per row, or None when the source has none) keeps interaction time for
    sequential models; NaN marks a row without a time (e.g. one an attack added to a timed table).
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    n_users: int
    n_items: int
    timestamps: np.ndarray | None = None

    def __post_init__(self):
        for name in ("users", "items", "ratings", "timestamps"):
            if getattr(self, name) is not None:
                getattr(self, name).setflags(write=False)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def build(cls, users, items, ratings, n_users: int, n_items: int, timestamps=None) -> "Interactions":
        return cls(np.asarray(users, dtype=np.int64).copy(), np.asarray(items, dtype=np.int64).copy(),
                   np.asarray(ratings, dtype=np.float32).copy(), int(n_users), int(n_items),
                   None if timestamps is None else np.asarray(timestamps, dtype=np.float64).copy())

    def take(self, mask_or_index) -> "Interactions":
        return Interactions.build(self.users[mask_or_index], self.items[mask_or_index],
                                  self.ratings[mask_or_index], self.n_users, self.n_items,
                                  None if self.timestamps is None else self.timestamps[mask_or_index])

    def concat(self, other: "Interactions") -> "Interactions":
        """Rows of self followed by rows of other; the user space grows to cover both. Timestamps
        are kept when either side has them (NaN for the rows of a side without)."""
        times = None
        if self.timestamps is not None or other.timestamps is not None:
            times = np.concatenate([t.timestamps if t.timestamps is not None else np.full(len(t), np.nan)
                                    for t in (self, other)])
        return Interactions.build(np.concatenate([self.users, other.users]),
                                  np.concatenate([self.items, other.items]),
                                  np.concatenate([self.ratings, other.ratings]),
                                  max(self.n_users, other.n_users), max(self.n_items, other.n_items), times)

    def digest(self) -> str:
        """A fingerprint of the table's content (rows in order, sizes): equal tables, equal digests.
        Timestamps are not part of it (digests stay those of tables before timestamps were kept)."""
        import hashlib
        h = hashlib.sha1(np.array([self.n_users, self.n_items], np.int64).tobytes())
        for column in (self.users, self.items, self.ratings):
            h.update(np.ascontiguousarray(column).tobytes())
        return h.hexdigest()

    def keys(self) -> np.ndarray:
        """One int64 key per row (user * n_items + item), for fast set operations."""
        return self.users * self.n_items + self.items

    def csr(self):
        """Binary user x item matrix (scipy CSR)."""
        import scipy.sparse as sp
        data = np.ones(len(self), dtype=np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: all real interactions plus token tables and optional item features."""

    name: str
    interactions: Interactions
    user_tokens: np.ndarray
    item_tokens: np.ndarray
    item_genres: tuple | None = None   # per item id: tuple of genre strings (untrusted text)
    item_titles: tuple | None = None   # per item id: title string (untrusted text)
    explicit: bool = True              # whether ratings carry information beyond "interacted"
    source: str = ""                   # the file the user gave (a CSV, u.data...) or the .inter file

    @property
    def n_users(self) -> int:
        return self.interactions.n_users

    @property
    def n_items(self) -> int:
        return self.interactions.n_items

    def stats(self) -> dict:
        n = len(self.interactions)
        return {"users": self.n_users, "items": self.n_items, "interactions": n,
                "density": n / float(self.n_users * self.n_items)}


@dataclass(frozen=True)
class Split:
    """The fixed train / valid / test split of one seed. Attacks replace ``train`` only."""

    dataset: Dataset
    seed: int
    train: Interactions
    valid: Interactions
    test: Interactions
    n_real_users: int = field(default=0)

    def with_train(self, train: Interactions) -> "Split":
        """The same split with a (poisoned or cleaned) train table; valid and test untouched."""
        return replace(self, train=train)


def embedded_dir() -> Path:
    import recbole
    return Path(recbole.__file__).parent / "dataset_example" / EMBEDDED


def resolve_dataset_dir(name_or_dir: str) -> Path:
    """The atomic-dataset directory of ``--dataset``: ml-100k's, the directory given, or the
    cached conversion of a MovieLens ``ratings.dat`` / ``u.data`` or a CSV (``benchmark.core.formats``)."""
    if name_or_dir == EMBEDDED:
        return embedded_dir()
    path = Path(name_or_dir)
    if not path.exists() and path.is_symlink():
        raise BadInput(f"dataset '{name_or_dir}' is a symbolic link {_broken_link(path)}: point it at the "
                       f"dataset directory or file (ln -sfn TARGET LINK), or pass that path itself")
    if not path.exists():
        raise BadInput(f"dataset '{name_or_dir}' does not exist: pass --dataset {EMBEDDED}, a directory "
                       f"holding NAME.inter, a MovieLens ratings.dat or u.data, or a CSV file")
    from benchmark.core.formats import converted_dir, source_of
    source = source_of(path)
    if source is not None:
        return converted_dir(source)
    if not path.is_dir():
        raise BadInput(f"dataset '{name_or_dir}' is not a directory: pass the directory that "
                       f"holds NAME.inter, not the file (or a ratings.dat, u.data or .csv file)")
    return path


def _broken_link(path: Path) -> str:
    """Why a symbolic link leads nowhere: a loop, or a target that does not exist."""
    try:
        path.resolve(strict=True)
    except RuntimeError:   # Python 3.11-3.12 report a loop so
        return "in a loop (it leads back to itself)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "in a loop (it leads back to itself)"
    return f"to '{os.readlink(path)}', which does not exist"


def _shown(value, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: messages quote untrusted values, never a whole
    50 MB line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value)):,} characters)"


def _atomic_file(directory: Path, suffix: str) -> Path | None:
    """``DIR/DIR.suffix``, else the first ``DIR/*.suffix``; BadInput when that is not a file."""
    candidate = directory / f"{directory.name}.{suffix}"
    found = [candidate] if candidate.exists() else sorted(directory.glob(f"*.{suffix}"))
    if not found:
        return None
    if not found[0].is_file():
        what = "a directory" if found[0].is_dir() else "not a regular file"
        raise BadInput(f"{found[0]} is {what}: NAME.{suffix} must be a plain tab-separated text file")
    return found[0]


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file (tab-separated, header ``name:type``) as strings.

    A UTF-8 byte order mark is skipped. Column names must be distinct and non-empty.
    """
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as fh:
            header = fh.readline(MAX_HEADER_CHARS + 1)
            if len(header) > MAX_HEADER_CHARS:
                raise BadInput(f"{path}: the first line is longer than {MAX_HEADER_CHARS:,} characters, "
                               f"so it is no header: start the file with a line such as "
                               f"'user_id:token<TAB>item_id:token'")
            header = header.rstrip("\r\n")
            if not header:
                raise BadInput(f"{path} is empty: an atomic file needs a header line such as "
                               f"'user_id:token<TAB>item_id:token'")
            try:
                frame = pd.read_csv(fh, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE,
                                    keep_default_na=False, engine="c")
            except pd.errors.EmptyDataError:
                frame = pd.DataFrame()
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not valid UTF-8 (byte {exc.start}): re-encode it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise BadInput(f"{path} is malformed ({str(exc).splitlines()[0]}): use one tab-separated "
                       f"row per record with as many fields as the header") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory, not an atomic file") from None
    columns = [c.split(":")[0].strip() for c in header.split("\t")]
    if "" in columns:
        raise BadInput(f"{path}: the header {_shown(header)} has an empty field (a stray tab?): "
                       f"name every tab-separated column, e.g. 'user_id:token'")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise BadInput(f"{path}: the header names column '{repeated[0]}' twice: keep one")
    if frame.shape[1] == 0:
        frame = pd.DataFrame({i: pd.Series(dtype=str) for i in range(len(columns))})
    if frame.shape[1] != len(columns):
        raise BadInput(f"{path}: the header has {len(columns)} tab-separated fields but rows have "
                       f"{frame.shape[1]}: check the separator (atomic files use tabs)")
    frame.columns = columns
    frame.attrs["header"] = header
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: Path, dtype=np.float32) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BadInput(f"{path}: column '{column}' has a non-numeric or non-finite value "
                       f"{_shown(frame[column].iloc[row])} on data row {row + 1}: fix or drop that row")
    return values.to_numpy(dtype=dtype)


def _missing_column(path: Path, frame: pd.DataFrame, column: str) -> BadInput:
    found = ", ".join(_shown(c, 20) for c in frame.columns[:6])
    hint, header = "", frame.attrs["header"]
    if len(frame.columns) == 1:
        separator = next((s for s in (",", ";", "|", " ") if s in header), None)
        if separator:
            hint = f"; it looks separated by {separator!r}: atomic files are tab-separated"
    return BadInput(f"{path}: missing column '{column}' in the header (found {found}{hint}): the "
                    f"header must name user_id:token and item_id:token, separated by a tab")


def _check_lengths(frame: pd.DataFrame, columns, path: Path) -> None:
    """Refuse absurdly long fields before they are copied into fixed-width arrays."""
    for column in columns:
        lengths = frame[column].str.len()
        too_long = (lengths > MAX_FIELD_CHARS).to_numpy()
        if too_long.any():
            row = int(np.argmax(too_long))
            raise BadInput(f"{path}: column '{column}' holds a value of {int(lengths.iloc[row]):,} characters "
                           f"on data row {row + 1} (at most {MAX_FIELD_CHARS:,}): is a newline or a tab "
                           f"missing? Fix that row")


def load_dataset(name_or_dir: str = EMBEDDED, rating_threshold: float | None = None) -> Dataset:
    """Load ``ml-100k`` (bundled with RecBole, offline) or a RecBole atomic dataset directory.

    Duplicate (user, item) rows keep their last rating. With ``rating_threshold`` only rows
    with ``rating >= threshold`` are kept (implicit feedback from explicit ratings). Ratings and
    timestamps, when present, must be finite numbers; ids must be non-empty tokens without
    whitespace. Anything else is refused with ``BadInput``.
    """
    if rating_threshold is not None and (isinstance(rating_threshold, bool)
                                         or not isinstance(rating_threshold, (int, float))
                                         or not np.isfinite(rating_threshold)):
        raise BadInput(f"rating_threshold must be a finite number or null, got {_shown(rating_threshold)}")
    directory = resolve_dataset_dir(name_or_dir)
    inter_path = _atomic_file(directory, "inter")
    if inter_path is None:
        raise BadInput(f"no .inter file in '{directory}': a RecBole atomic dataset needs NAME.inter")
    frame = _read_atomic(inter_path)
    for column in ("user_id", "item_id"):
        if column not in frame.columns:
            raise _missing_column(inter_path, frame, column)
    if len(frame) == 0:
        raise BadInput(f"{inter_path} has a header but no interactions")
    numeric = [c for c in ("rating", "timestamp") if c in frame.columns]
    _check_lengths(frame, ["user_id", "item_id", *numeric], inter_path)
    for column in ("user_id", "item_id"):
        tokens = frame[column]
        bad = (tokens.str.len() == 0) | tokens.str.contains(r"\s", regex=True)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInput(f"{inter_path}: invalid {column} token {_shown(tokens.iloc[row])} on data "
                           f"row {row + 1}: tokens must be non-empty and contain no whitespace")
    explicit = "rating" in frame.columns
    ratings = _numeric(frame, "rating", inter_path) if explicit else np.ones(len(frame), np.float32)
    times = _numeric(frame, "timestamp", inter_path, np.float64) if "timestamp" in frame.columns else None
    if rating_threshold is not None:
        if not explicit:
            raise BadInput(f"--rating-threshold needs a rating column, and {inter_path} has none")
        keep = ratings >= rating_threshold
        frame, ratings = frame[keep], ratings[keep]
        times = None if times is None else times[keep]
        if len(frame) == 0:
            raise BadInput(f"no interaction has rating >= {rating_threshold}: lower the threshold")
    user_tokens, users = np.unique(frame["user_id"].to_numpy(dtype=str), return_inverse=True)
    item_tokens, items = np.unique(frame["item_id"].to_numpy(dtype=str), return_inverse=True)
    table = pd.DataFrame({"u": users, "i": items, "r": ratings, "t": np.nan if times is None else times})
    table = table.drop_duplicates(["u", "i"], keep="last").sort_values(["u", "i"], kind="stable")
    interactions = Interactions.build(table["u"], table["i"], table["r"], len(user_tokens), len(item_tokens),
                                      None if times is None else table["t"])
    genres, titles = _item_features(directory, item_tokens)
    return Dataset(name=directory.name if name_or_dir != EMBEDDED else EMBEDDED,
                   interactions=interactions, user_tokens=user_tokens, item_tokens=item_tokens,
                   item_genres=genres, item_titles=titles, explicit=explicit,
                   source=str(inter_path if directory.resolve() == Path(name_or_dir).resolve()
                              or name_or_dir == EMBEDDED else name_or_dir))


def _item_features(directory: Path, item_tokens: np.ndarray):
    path = _atomic_file(directory, "item")
    if path is None:
        return None, None
    frame = _read_atomic(path)
    if "item_id" not in frame.columns:
        return None, None
    index = {token: i for i, token in enumerate(item_tokens)}
    position = frame["item_id"].map(index)
    known = position.notna().to_numpy()
    frame, position = frame[known], position[known].astype(int).to_numpy()
    genres = titles = None
    if "class" in frame.columns:
        per_item = [()] * len(item_tokens)
        for pos, text in zip(position, frame["class"]):
            per_item[pos] = tuple(text.split())
        genres = tuple(per_item)
    title_column = next((c for c in ("movie_title", "title", "name") if c in frame.columns), None)
    if title_column is not None:
        per_item = [""] * len(item_tokens)
        for pos, text in zip(position, frame[title_column]):
            per_item[pos] = text
        titles = tuple(per_item)
    return genres, titles


def _split_counts(total: np.ndarray, ratios=SPLIT_RATIOS) -> tuple[np.ndarray, np.ndarray]:
    """Valid and test sizes per user, as RecBole's ``_calcu_split_ids`` computes them."""
    n_valid = np.floor(ratios[1] * total).astype(np.int64)
    n_test = np.floor(ratios[2] * total).astype(np.int64)
    n_train = total - n_valid - n_test
    for ratio, counts in ((ratios[2], n_test), (ratios[1], n_valid)):
        bump = (n_train > 1) & (counts == 0) & (ratio * total > 0)
        counts += bump
        n_train -= bump
    return n_valid, n_test


def split_dataset(dataset: Dataset, seed: int, ratios=SPLIT_RATIOS) -> Split:
    """Per-user random split (default 8:1:1), seeded, made once per seed before any attack.

    Every user needs at least 3 interactions so that train, valid and test are all non-empty.
    """
    inter = dataset.interactions
    counts = inter.user_counts()
    too_few = np.flatnonzero(counts < 3)
    if too_few.size:
        token = dataset.user_tokens[too_few[0]]
        raise BadInput(f"{too_few.size} users have fewer than 3 interactions (e.g. user "
                       f"'{token}' has {counts[too_few[0]]}), too few to split train/valid/test: "
                       f"drop them from {dataset.source or 'the dataset'} (or give them more "
                       f"interactions), or lower --rating-threshold")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(inter)), inter.users))  # users grouped, rows shuffled
    users = inter.users[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(inter)) - starts[users]
    n_valid, n_test = _split_counts(counts, ratios)
    n_train = counts - n_valid - n_test
    part = np.where(position < n_train[users], 0, np.where(position < (n_train + n_valid)[users], 1, 2))
    pieces = [inter.take(np.sort(order[part == k])) for k in range(3)]
    return Split(dataset=dataset, seed=seed, train=pieces[0], valid=pieces[1], test=pieces[2],
                 n_real_users=inter.n_users)


def time_order(inter: Interactions) -> np.ndarray:
    """Row indices of ``inter`` by user, then timestamp, then item id (ties in time broken by item
    id; rows without a time, NaN, come after a user's timed rows). BadInput without timestamps."""
    if inter.timestamps is None:
        raise BadInput("this dataset has no timestamp column: time order and the leave-one-out split "
                       "need one (timestamp:float in NAME.inter)")
    return np.lexsort((inter.items, inter.timestamps, inter.users))


def user_sequences(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Each user's items in time order (``time_order``): ``(offsets, items)``, user ``u``'s sequence
    being ``items[offsets[u]:offsets[u + 1]]`` (``offsets`` has ``n_users + 1`` entries)."""
    offsets = np.concatenate([[0], np.cumsum(inter.user_counts())]).astype(np.int64)
    return offsets, inter.items[time_order(inter)]


def split_leave_one_out(dataset: Dataset, seed: int) -> Split:
    """Leave-one-out by time: per user the latest interaction is test, the one before it valid, the
    rest train (``time_order``: ties in time broken by item id, so the split is the same for every
    seed; ``seed`` only labels it). Users with fewer than 3 interactions keep them all in train and
    are not scored. Tables keep the loaded row order and their timestamps."""
    inter = dataset.interactions
    order = time_order(inter)
    counts = inter.user_counts()
    users = inter.users[order]
    from_end = np.cumsum(counts)[users] - 1 - np.arange(len(inter))   # 0: the user's latest row
    scored = counts[users] >= 3
    part = np.where(scored & (from_end == 0), 2, np.where(scored & (from_end == 1), 1, 0))
    pieces = [inter.take(np.sort(order[part == k])) for k in range(3)]
    return Split(dataset=dataset, seed=seed, train=pieces[0], valid=pieces[1], test=pieces[2],
                 n_real_users=inter.n_users)


SPLITS = {"random": split_dataset, "leave_one_out": split_leave_one_out}


def make_split(dataset: Dataset, seed: int, split: str = "random") -> Split:
    """The seed's split of kind ``split`` (``SPLITS``): ``random`` (8:1:1 per user, the top-n task of
    general recommenders) or ``leave_one_out`` (by time, the next-item task of sequential ones)."""
    return SPLITS[split](dataset, seed)


def write_atomic_inter(path: os.PathLike, inter: Interactions) -> None:
    """Write the (user, item) pairs of a table as a RecBole atomic file with integer tokens."""
    body = "".join(f"{u}\t{i}\n" for u, i in zip(inter.users.tolist(), inter.items.tolist()))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("user_id:token\titem_id:token\n" + body)
