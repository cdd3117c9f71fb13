"""Interaction tables, dataset loading and the fixed per-seed split.

Everything downstream (attacks, defenses, models, metrics) works in one integer index space:
users ``0..n_users-1`` and items ``0..n_items-1``, assigned here from the raw tokens in sorted
token order, so ids are stable whatever the file's row order. Real users come first; fake users
added by an attack get ids ``>= n_real_users`` and exist only in a poisoned train table.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BadInput

EMBEDDED = "ml-100k"
SPLIT_RATIOS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Interactions:
    """An immutable table of (user, item, rating) rows in the benchmark's index space."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    n_users: int
    n_items: int

    def __post_init__(self):
        for name in ("users", "items", "ratings"):
            getattr(self, name).setflags(write=False)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def build(cls, users, items, ratings, n_users: int, n_items: int) -> "Interactions":
        return cls(np.asarray(users, dtype=np.int64).copy(), np.asarray(items, dtype=np.int64).copy(),
                   np.asarray(ratings, dtype=np.float32).copy(), int(n_users), int(n_items))

    def take(self, mask_or_index) -> "Interactions":
        return Interactions.build(self.users[mask_or_index], self.items[mask_or_index],
                                  self.ratings[mask_or_index], self.n_users, self.n_items)

    def concat(self, other: "Interactions") -> "Interactions":
        """Rows of self followed by rows of other; the user space grows to cover both."""
        return Interactions.build(np.concatenate([self.users, other.users]),
                                  np.concatenate([self.items, other.items]),
                                  np.concatenate([self.ratings, other.ratings]),
                                  max(self.n_users, other.n_users), max(self.n_items, other.n_items))

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
    if name_or_dir == EMBEDDED:
        return embedded_dir()
    path = Path(name_or_dir)
    if not path.exists():
        raise BadInput(f"dataset directory '{name_or_dir}' does not exist: pass "
                       f"--dataset {EMBEDDED} or a directory holding NAME.inter")
    if not path.is_dir():
        raise BadInput(f"dataset '{name_or_dir}' is not a directory: pass the directory that "
                       f"holds NAME.inter, not the file")
    return path


def _atomic_file(directory: Path, suffix: str) -> Path | None:
    name = directory.name
    candidate = directory / f"{name}.{suffix}"
    if candidate.is_file():
        return candidate
    found = sorted(p for p in directory.glob(f"*.{suffix}") if p.is_file())
    return found[0] if found else None


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file (tab-separated, header ``name:type``) as strings."""
    try:
        with open(path, "r", encoding="utf-8", newline="") as fh:
            header = fh.readline().rstrip("\r\n")
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
    columns = [c.split(":")[0] for c in header.split("\t")]
    if frame.shape[1] == 0:
        frame = pd.DataFrame({i: pd.Series(dtype=str) for i in range(len(columns))})
    if frame.shape[1] != len(columns):
        raise BadInput(f"{path}: the header has {len(columns)} tab-separated fields but rows have "
                       f"{frame.shape[1]}: check the separator (atomic files use tabs)")
    frame.columns = columns
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BadInput(f"{path}: column '{column}' has a non-numeric or non-finite value "
                       f"{frame[column].iloc[row]!r} on data row {row + 1}: fix or drop that row")
    return values.to_numpy(dtype=np.float32)


def load_dataset(name_or_dir: str = EMBEDDED, rating_threshold: float | None = None) -> Dataset:
    """Load ``ml-100k`` (bundled with RecBole, offline) or a RecBole atomic dataset directory.

    Duplicate (user, item) rows keep their last rating. With ``rating_threshold`` only rows
    with ``rating >= threshold`` are kept (implicit feedback from explicit ratings).
    """
    directory = resolve_dataset_dir(name_or_dir)
    inter_path = _atomic_file(directory, "inter")
    if inter_path is None:
        raise BadInput(f"no .inter file in '{directory}': a RecBole atomic dataset needs NAME.inter")
    frame = _read_atomic(inter_path)
    for column in ("user_id", "item_id"):
        if column not in frame.columns:
            raise BadInput(f"{inter_path}: missing column '{column}' in the header: the header must "
                           f"name user_id:token and item_id:token")
    if len(frame) == 0:
        raise BadInput(f"{inter_path} has a header but no interactions")
    for column in ("user_id", "item_id"):
        tokens = frame[column]
        bad = (tokens.str.len() == 0) | tokens.str.contains(r"\s", regex=True)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInput(f"{inter_path}: invalid {column} token {tokens.iloc[row]!r} on data row "
                           f"{row + 1}: tokens must be non-empty and contain no whitespace")
    explicit = "rating" in frame.columns
    ratings = _numeric(frame, "rating", inter_path) if explicit else np.ones(len(frame), np.float32)
    if rating_threshold is not None:
        if not explicit:
            raise BadInput(f"--rating-threshold needs a rating column, and {inter_path} has none")
        keep = ratings >= rating_threshold
        frame, ratings = frame[keep], ratings[keep]
        if len(frame) == 0:
            raise BadInput(f"no interaction has rating >= {rating_threshold}: lower the threshold")
    user_tokens, users = np.unique(frame["user_id"].to_numpy(dtype=str), return_inverse=True)
    item_tokens, items = np.unique(frame["item_id"].to_numpy(dtype=str), return_inverse=True)
    table = pd.DataFrame({"u": users, "i": items, "r": ratings})
    table = table.drop_duplicates(["u", "i"], keep="last").sort_values(["u", "i"], kind="stable")
    interactions = Interactions.build(table["u"], table["i"], table["r"], len(user_tokens), len(item_tokens))
    genres, titles = _item_features(directory, item_tokens)
    return Dataset(name=directory.name if name_or_dir != EMBEDDED else EMBEDDED,
                   interactions=interactions, user_tokens=user_tokens, item_tokens=item_tokens,
                   item_genres=genres, item_titles=titles, explicit=explicit)


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
                       f"drop them from the .inter file or lower --rating-threshold")
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


def write_atomic_inter(path: os.PathLike, inter: Interactions) -> None:
    """Write an interaction table as a RecBole atomic file with integer tokens."""
    frame = pd.DataFrame({"user_id:token": inter.users, "item_id:token": inter.items,
                          "rating:float": inter.ratings})
    frame.to_csv(path, sep="\t", index=False)
