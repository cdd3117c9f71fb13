"""Datasets people have, converted once into RecBole atomic files.

``--dataset`` takes, besides ``ml-100k`` and a directory of atomic files (``NAME.inter``):

- a MovieLens ``ratings.dat`` (ML-1M / ML-10M: ``user::item::rating::timestamp``, no header),
  with ``movies.dat`` (``item::title::genre|genre``) beside it for titles and genres;
- a MovieLens ``u.data`` (ML-100K: ``user<TAB>item<TAB>rating<TAB>timestamp``, no header), with
  ``u.item`` (``item|title|date|video date|url|19 genre flags``, Latin-1) beside it;
- a ``.csv`` or ``.tsv`` file with a header naming its columns: user (``user_id``, ``userId``,
  ``user``), item (``item_id``, ``itemId``, ``movieId``, ``item``), optionally ``rating`` and
  ``timestamp``, separated by commas, tabs, semicolons or ``::`` (detected from the header);

given as the file or as the directory that holds it. The conversion is written once, atomically,
to ``~/.cache/robrec/datasets/<name>-<key>/`` (``ROBREC_CACHE`` overrides the folder), keyed by
the source files' paths, sizes and modification times, and read from there as any atomic
dataset; records keep the path the user gave. A malformed source is refused in one line
(``BadInput``) naming the file and the row.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from benchmark.core.errors import BadInput

USER_COLUMNS = ("user_id", "userid", "user")
ITEM_COLUMNS = ("item_id", "itemid", "movieid", "movie_id", "item")
TABLE_SUFFIXES = (".csv", ".tsv")
DELIMITERS = ("::", "\t", ";", ",")   # a table's separator, detected from its header line
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


def source_of(path: Path) -> Path | None:
    """The convertible file ``path`` is or holds (None: an atomic directory, or nothing known)."""
    if path.is_file():
        return path if path.name in ("ratings.dat", "u.data") or path.suffix.lower() in TABLE_SUFFIXES else None
    if any(path.glob("*.inter")):
        return None
    for name in ("ratings.dat", "u.data"):
        if (path / name).is_file():
            return path / name
    tables = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
    return tables[0] if len(tables) == 1 else None


def converted_dir(source: Path) -> Path:
    """The atomic-dataset folder of ``source``, converting it first if the cache lacks it."""
    extras = [p for p in (source.parent / "movies.dat", source.parent / "u.item")
              if p.is_file() and source.name in ("ratings.dat", "u.data")]
    key = hashlib.sha1("|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                for p in [source, *extras]).encode()).hexdigest()[:12]
    name = source.parent.name if source.name in ("ratings.dat", "u.data") else source.stem
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "data"
    folder = Path(os.environ.get("ROBREC_CACHE", Path.home() / ".cache" / "robrec")) / "datasets" / f"{name}-{key}"
    if not (folder / f"{folder.name}.inter").is_file():
        inter, item = _convert(source)
        from benchmark.core.atomic import write_text_atomic
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if item is not None:
                write_text_atomic(folder / f"{folder.name}.item", item.to_csv(sep="\t", index=False))
            write_text_atomic(folder / f"{folder.name}.inter", inter.to_csv(sep="\t", index=False))
        except OSError as exc:
            raise BadInput(f"cannot write the converted dataset to {folder} ({exc.strerror}): set "
                           f"ROBREC_CACHE to a writable folder") from None
    return folder


def _convert(source: Path):
    if source.name == "ratings.dat":
        frame = _read(source, sep="::", names=("user", "item", "rating", "timestamp"))
        movies = source.parent / "movies.dat"
        item = None
        if movies.is_file():
            m = _read(movies, sep="::", names=("item", "title", "genres"), encoding="latin-1")
            item = pd.DataFrame({"item_id:token": m["item"], "movie_title:token_seq": m["title"],
                                 "class:token_seq": m["genres"].str.replace("|", " ", regex=False)})
        return _inter(frame, source), item
    if source.name == "u.data":
        frame = _read(source, sep="\t", names=("user", "item", "rating", "timestamp"))
        items = source.parent / "u.item"
        item = None
        if items.is_file():
            m = _read(items, sep="|", names=("item", "title", "date", "video", "url", *ML100K_GENRES),
                      encoding="latin-1")
            flags = m[list(ML100K_GENRES)] == "1"
            genres = flags.apply(lambda row: " ".join(g.replace(" ", "_") for g in row.index[row]), axis=1)
            item = pd.DataFrame({"item_id:token": m["item"], "movie_title:token_seq": m["title"],
                                 "class:token_seq": genres})
        return _inter(frame, source), item
    frame = _read(source, sep=_delimiter(source), names=None)
    lower = {str(c).strip().lower(): c for c in frame.columns}
    user = next((lower[c] for c in USER_COLUMNS if c in lower), None)
    item = next((lower[c] for c in ITEM_COLUMNS if c in lower), None)
    if user is None or item is None:
        raise BadInput(f"{source}: the header must name a user column ({', '.join(USER_COLUMNS)}) and "
                       f"an item column ({', '.join(ITEM_COLUMNS)}); it has "
                       f"{', '.join(map(str, frame.columns[:8]))}")
    renamed = {user: "user", item: "item"}
    for column in ("rating", "timestamp"):
        if column in lower:
            renamed[lower[column]] = column
    return _inter(frame.rename(columns=renamed)[list(renamed.values())], source), None


def _delimiter(path: Path) -> str:
    """The separator of a table with a header: of ``DELIMITERS``, the one its header line holds
    most often (``::`` first: it also holds two colons); a comma when it holds none."""
    try:
        with open(path, "rb") as fh:
            header = fh.readline(65_536).decode("utf-8", errors="replace")
    except OSError:
        return ","
    if "::" in header:
        return "::"
    counts = {sep: header.count(sep) for sep in DELIMITERS[1:]}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _not_encoded(path: Path, encoding: str) -> BadInput:
    """The refusal of a file that is not valid ``encoding``, with the first bad byte's offset in
    the file and its line (pandas reports an offset within the chunk it was decoding)."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
        where = ""
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        where = f" (byte {exc.start:,}, line {line})"
    return BadInput(f"{path} is not valid {encoding.upper() if encoding == 'utf-8' else encoding}{where}: "
                    f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > NEW")


def _check_fields(path: Path, sep: str, names, encoding: str) -> None:
    """A headerless interaction file (u.data, ratings.dat) whose first row lacks user, item or rating."""
    with open(path, "rb") as fh:
        first = fh.readline(65_536).decode(encoding, errors="replace").rstrip("\r\n")
    found = len(first.split(sep)) if first else 0
    if 0 < found < 3:   # user, item and rating at least
        raise BadInput(f"{path}: row 1 has {found} field(s) separated by {sep!r}, a {path.name} row has "
                       f"{len(names)} ({', '.join(names)}): if it is a table of your own, give it a header "
                       f"naming its columns (user_id, item_id, rating) and name it .csv or .tsv")


def _read(path: Path, sep: str, names, encoding: str = "utf-8") -> pd.DataFrame:
    if names and "user" in names:
        _check_fields(path, sep, names, encoding)
    try:
        frame = pd.read_csv(path, sep=sep, header=None if names else "infer", names=names, dtype=str,
                            keep_default_na=False, engine="python" if len(sep) > 1 else "c",
                            encoding=encoding, on_bad_lines="error")
    except UnicodeDecodeError:
        raise _not_encoded(path, encoding) from None
    except pd.errors.EmptyDataError:   # a ValueError too: caught first
        what = ("a header line naming its columns (e.g. user_id,item_id,rating), then one row per "
                "interaction" if not names else f"one row per interaction: {sep.join(names)}")
        raise BadInput(f"{path} is empty: it needs {what}") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise BadInput(f"{path} is malformed ({str(exc).splitlines()[0]}): every row needs the same "
                       f"fields, separated by {sep!r}") from None
    if len(frame) == 0:
        raise BadInput(f"{path} has no rows")
    short = frame.isna().any(axis=1).to_numpy() if names else None
    if short is not None and short.any():
        raise BadInput(f"{path}: row {int(short.argmax()) + 1} has fewer than {len(names)} fields "
                       f"separated by {sep!r}")
    ids = [c for c in ("user", "item") if names and c in names]
    missing = frame[ids].eq("").any(axis=1).to_numpy() if ids else None
    if missing is not None and missing.any():
        raise BadInput(f"{path}: row {int(missing.argmax()) + 1} has no {' or '.join(ids)} id: every row "
                       f"needs {len(names)} fields separated by {sep!r}")
    return frame


def _inter(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    out = pd.DataFrame({"user_id:token": frame["user"].str.strip(), "item_id:token": frame["item"].str.strip()})
    for column in ("rating", "timestamp"):
        if column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():
                row = int(values.isna().to_numpy().argmax())
                raise BadInput(f"{source}: column {column} holds {frame[column].iloc[row]!r} on row "
                               f"{row + 1}, not a number")
            out[f"{column}:float"] = values
    return out
