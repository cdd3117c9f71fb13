"""Result records: the JSON schema users and CI rely on, and atomic reading and writing.

``results.json`` = ``{"schema_version": 1, "run": {...}, "records": [record, ...],
"summary": [...]}``. One record per cell (dataset, model, attack+budget, defense, seed).
Floats are floats; a metric that does not apply is absent, never a string.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1

ACCURACY_METRICS = tuple(f"{m}@{k}" for k in (10, 20)
                         for m in ("recall", "ndcg", "hit", "precision", "mrr", "f1"))
TARGET_METRICS = ("target_hr@10", "target_hr@50", "target_ndcg@50", "target_score", "target_rank")

_number_map = {"type": "object", "additionalProperties": {"type": "number"}}
_nullable_map = {"type": ["object", "null"], "additionalProperties": {"type": "number"}}

RECORD_SCHEMA = {
    "type": "object",
    "required": ["cell_id", "suite", "dataset", "model", "attack", "defense", "seed", "status",
                 "metrics", "cost"],
    "properties": {
        "cell_id": {"type": "string"},
        "suite": {"type": "string"},
        "dataset": {"type": "string"},
        "model": {"type": "string"},
        "attack": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["name", "family", "params", "budget"],
            "properties": {"name": {"type": "string"},
                           "family": {"enum": ["noise", "shilling", "learned", "gradient"]},
                           "params": {"type": "object"}, "budget": {"type": "object"}}}]},
        "defense": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["name", "kind", "params"],
            "properties": {"name": {"type": "string"},
                           "kind": {"enum": ["detector", "preprocessor", "trainer"]},
                           "params": {"type": "object"}}}]},
        "seed": {"type": "integer"},
        "status": {"enum": ["ok", "failed", "not_applicable"]},
        "error": {"type": ["string", "null"]},
        "metrics": _number_map,
        "clean": _nullable_map,
        "undefended": _nullable_map,
        "robustness": _nullable_map,
        "defense_effect": _nullable_map,
        "detection": _nullable_map,
        "history": {"type": ["object", "null"],
                    "additionalProperties": {"type": "array", "items": {"type": "number"}}},
        "cost": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
    },
}

RESULTS_SCHEMA = {
    "type": "object",
    "required": ["schema_version", "run", "records"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "run": {"type": "object", "required": ["suite", "dataset", "seeds", "environment"]},
        "records": {"type": "array", "items": RECORD_SCHEMA},
        "summary": {"type": "array"},
    },
}


def validate_results(document: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when a results document breaks the schema."""
    import jsonschema
    jsonschema.validate(document, RESULTS_SCHEMA)


def _finite(value):
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: os.PathLike, document) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_finite(document), fh, indent=1, sort_keys=False, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: os.PathLike, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
