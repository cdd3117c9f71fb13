"""The Python API: run a suite, or a single cell, from Python or a notebook.

``run`` does what ``python -m benchmark.run`` does (the same checks, cells, results files and
report) and returns the records as a pandas DataFrame, one row per cell::

    from benchmark.api import cell, run

    frame = run("smoke", models=["BPR"], seeds=1)                       # a suite by name or file
    frame = run(cell("BPR", attack="pga", budget=0.05), seeds=2)        # one cell (and its clean cell)
    frame = run(cell(MyModel, attack="fgsm", budget=0.5), dataset=ratings)   # your class, your data
    frame[["model", "attack", "budget", "defense", "seed", "metrics.ndcg@10", "metrics.target_hr@50"]]

Models are RecBole names, ``module:Class`` / ``file.py:Class`` strings, or RecBole
``GeneralRecommender`` classes (a class defined in a notebook runs with ``workers=1``, in this
process). ``dataset`` is ``"ml-100k"``, a directory of RecBole atomic files, or a DataFrame with
``user_id``, ``item_id`` and optionally ``rating`` columns (``user``, ``item`` also accepted),
written once as atomic files next to the run, named by its content. Bad input raises
``ValueError`` with the CLI's one-line message; ``frame.attrs["results"]`` is the path of
``results.json``.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pandas as pd

from benchmark.core.errors import BadInput

DROPPED = ("per_user", "top10", "history", "clean", "undefended")   # per-user lists and copies of other cells


def cell(model, attack: str | None = None, budget: float | None = None, defense: str | None = None, *,
         attack_params: dict | None = None, defense_params: dict | None = None,
         training: dict | None = None, targets: dict | None = None) -> dict:
    """A suite of one model, at most one attack at one budget and at most one defense: the cell
    asked for, plus the clean (and undefended) cells it is compared with."""
    document = {"name": "cell", "models": [model]}
    if attack is not None:
        entry = {"name": attack, "params": dict(attack_params or {})}
        if budget is not None:
            entry["budgets"] = [budget]
        document["attacks"] = [entry]
    if defense is not None:
        document["defenses"] = [{"name": defense, "params": dict(defense_params or {})}]
    if training:
        document["training"] = dict(training)
    if targets:
        document["targets"] = dict(targets)
    return document


def run(suite: str | dict = "smoke", *, models=None, dataset=None, seeds: int | None = None,
        epochs: int | None = None, workers: int = 1, out: str | Path | None = None,
        resume: bool = False, progress: bool = False, device: str = "auto") -> pd.DataFrame:
    """Run ``suite`` (a name, a YAML file, or a suite document such as ``cell(...)`` returns) and
    return its records as a DataFrame (nested fields flattened as ``metrics.ndcg@10``); ``device``
    as ``--device`` (``auto``: CUDA when present)."""
    from benchmark.run import parse_args, plan_run, run_planned
    out = Path(out) if out is not None else Path("runs") / f"api-{datetime.now():%Y%m%d-%H%M%S-%f}"
    try:
        document = dict(suite) if isinstance(suite, dict) else None
        if document is not None and "models" in document:
            document["models"] = [_model_name(m, workers) for m in document["models"]]
        argv = ["--suite", document["name"] if document else str(suite), "--out", str(out),
                "--workers", str(workers), "--device", device]
        if models is not None:
            argv += ["--models", ",".join(_model_name(m, workers) for m in models)]
        if dataset is not None:
            argv += ["--dataset", str(_materialise(dataset, out.parent)) if isinstance(dataset, pd.DataFrame)
                     else str(dataset)]
        argv += [flag for flag, on in (("--resume", resume), ("--quiet", not progress)) if on]
        argv += [x for flag, value in (("--seeds", seeds), ("--epochs", epochs)) if value is not None
                 for x in (flag, str(value))]
        args = parse_args(argv)
        args.argv = argv
        planned = plan_run(args, document)
    except BadInput as exc:
        raise ValueError(str(exc)) from None
    code = run_planned(args, planned)
    if code == 130:
        raise KeyboardInterrupt(f"interrupted: finished cells are saved in {out}; run again with resume=True")
    if code == 2:
        raise OSError(f"the run could not write its results in {out}; finished cells are saved there")
    return records_frame(out / "results.json")


def records_frame(results: str | Path) -> pd.DataFrame:
    """The records of a ``results.json`` as a DataFrame, one row per cell, with ``attack``,
    ``budget`` and ``defense`` columns (the cell's variant labels and budget value)."""
    from benchmark.results.records import read_results
    document = read_results(Path(results))
    rows = [{k: v for k, v in r.items() if k not in DROPPED} for r in document["records"]]
    frame = pd.json_normalize(rows)
    records = document["records"]
    frame.insert(2, "attack_label", [r["variant"]["attack"] for r in records])
    frame.insert(3, "budget", [r["attack"]["budget_value"] if r["attack"] else None for r in records])
    frame.insert(4, "defense_label", [r["variant"]["defense"] for r in records])
    frame = frame.drop(columns=[c for c in frame.columns if c in ("attack", "defense")])
    frame = frame.rename(columns={"attack_label": "attack", "defense_label": "defense"})
    frame.attrs["results"] = str(results)
    return frame


def _model_name(model, workers: int) -> str:
    """A model as the CLI names it; a class is registered in this process (``workers=1``) or
    named by the module or file it can be imported from."""
    if isinstance(model, str):
        return model
    from benchmark.core.models import register_model_class
    if not isinstance(model, type):
        raise BadInput(f"models: {model!r} is neither a model name nor a model class")
    importable = model.__module__ != "__main__" and "<locals>" not in model.__qualname__
    if not importable and workers > 1:
        raise BadInput(f"model class {model.__qualname__} is defined in __main__ or a function, so worker "
                       f"processes cannot import it: pass workers=1, or define it in a module or file")
    return register_model_class(model)


def _materialise(frame: pd.DataFrame, parent: Path) -> Path:
    """A DataFrame of interactions written once as RecBole atomic files, named by its content."""
    columns = {c.lower(): c for c in frame.columns}
    user = columns.get("user_id") or columns.get("user")
    item = columns.get("item_id") or columns.get("item")
    if user is None or item is None:
        raise BadInput(f"dataset DataFrame needs user_id and item_id columns (or user, item); it has "
                       f"{', '.join(map(str, frame.columns))}")
    for column in (user, item):
        missing = frame[column].isna().to_numpy()
        if missing.any():
            row = int(missing.argmax())
            raise BadInput(f"dataset DataFrame: column {column} has no value (NaN or None) on row {row + 1} "
                           f"(index {frame.index[row]!r}) and {int(missing.sum())} row(s) in all: every row "
                           f"needs a user and an item id; drop those rows (frame.dropna(subset=[{column!r}]))")
    rating = columns.get("rating")
    table = pd.DataFrame({"user_id:token": frame[user].astype(str), "item_id:token": frame[item].astype(str)})
    if rating is not None:
        values = pd.to_numeric(frame[rating], errors="coerce")
        if values.isna().any():
            raise BadInput(f"dataset DataFrame: column {rating} holds values that are not numbers")
        table["rating:float"] = values.astype(float)
    text = table.to_csv(sep="\t", index=False)
    name = "frame-" + hashlib.sha1(text.encode()).hexdigest()[:12]
    folder = parent / ".robrec-data" / name
    if not (folder / f"{name}.inter").is_file():
        from benchmark.core.atomic import write_text_atomic
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"{name}.inter", text)
    return folder
