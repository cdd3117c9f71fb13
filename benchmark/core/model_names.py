"""Model names known without importing torch or RecBole: a misspelled ``--models`` is refused in
a moment, before the heavy imports (``benchmark.core.models`` resolves the classes)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from benchmark.core.errors import BadInput

BASELINES = ("Pop", "ItemKNN", "BPR", "NeuMF", "LightGCN")
SEQUENTIAL_BASELINES = ("SASRec", "GRU4Rec", "BERT4Rec")

# Models of this project, in RecBole's general-recommender API (looked up before RecBole's).
HOUSE_MODELS = {"BiasedMF": "benchmark.core.biased_mf"}


def recbole_model_names() -> tuple[str, ...] | None:
    """RecBole's general and sequential recommenders by name, read from its packages' ``__init__``
    without importing them; None when that cannot be read (then only the import decides)."""
    try:
        spec = importlib.util.find_spec("recbole")
        root = Path(spec.submodule_search_locations[0]) / "model"
        names = [name for package in ("general_recommender", "sequential_recommender")
                 for name in re.findall(r"^from \S+ import (\w+)\s*$",
                                        (root / package / "__init__.py").read_text(encoding="utf-8"), re.MULTILINE)]
    except (AttributeError, ImportError, OSError, TypeError, IndexError, UnicodeDecodeError):
        return None
    return tuple(sorted(names)) or None


def unknown_model(name: str, known) -> BadInput:
    """The one-line refusal of a model name that is neither RecBole's, ours nor ``module:Class``."""
    import difflib
    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return BadInput(f"unknown model '{name}'{hint}: use a RecBole general recommender such as "
                    f"{', '.join(BASELINES)}, a sequential one such as {', '.join(SEQUENTIAL_BASELINES)} "
                    f"(any of the {len(known)} in recbole.model's general_recommender and "
                    f"sequential_recommender), {', '.join(HOUSE_MODELS)}, "
                    f"or a class of your own as package.module:Class or path/to/file.py:Class")


def check_model_name(name: str) -> None:
    """BadInput for a plain name that names no model (``module:Class`` is checked on import)."""
    if not isinstance(name, str) or ":" in name or name in HOUSE_MODELS:
        return
    known = recbole_model_names()
    if known is not None and name not in known:
        raise unknown_model(name, known)
