"""Result records: the JSON schema users and CI rely on, and atomic reading and writing.

``results.json`` = ``{"schema_version": 1, "run": {...}, "records": [record, ...],
"summary": [...]}``. One record per cell (dataset, model, attack+budget, defense, seed).
Floats are floats; a metric that does not apply is absent, never a string.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.core.errors import BadInput
from benchmark.core.kinds import ALL_FAMILIES, ATTACK_FAMILIES, DEFENSE_KINDS, KNOWLEDGE

SCHEMA_VERSION = 2   # 2: attack.budget_param / budget_value, defense.variant

ACCURACY_METRICS = tuple(f"{m}@{k}" for k in (10, 20)
                         for m in ("recall", "ndcg", "hit", "precision", "mrr", "f1"))
TARGET_METRICS = ("target_hr@10", "target_hr@50", "target_ndcg@50", "target_score", "target_rank")

_number_map = {"type": "object", "additionalProperties": {"type": "number"}}
_nullable_map = {"type": ["object", "null"], "additionalProperties": {"type": "number"}}

RECORD_SCHEMA = {
    "type": "object",
    "required": ["cell_id", "suite", "dataset", "model", "attack", "defense", "variant", "seed",
                 "train_seed", "replicate", "status", "metrics", "cost"],
    "properties": {
        "cell_id": {"type": "string"},
        "suite": {"type": "string"},
        "dataset": {"type": "string"},
        "model": {"type": "string"},
        "attack": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["name", "family", "params", "budget_param", "budget_value", "budget"],
            "properties": {"name": {"type": "string"},
                           # the swept parameter and its value in this cell; budget: what was spent
                           "budget_param": {"type": "string"}, "budget_value": {"type": "number"},
                           "family": {"enum": list(ATTACK_FAMILIES)},
                           "params": {"type": "object"}, "budget": {"type": "object"},
                           # the threat model: benchmark.core.kinds.KNOWLEDGE, and the surrogate ("" none)
                           "knowledge": {"enum": list(KNOWLEDGE)},
                           "surrogate": {"type": "string"}}}]},
        "defense": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["name", "kind", "params", "variant"],
            "properties": {"name": {"type": "string"},
                           # name[params], as the job's defense (players of one defense share it)
                           "variant": {"type": "string"},
                           # what tables call it ("DegreeSAD (unsupervised variant)")
                           "label": {"type": "string"},
                           "kind": {"enum": list(DEFENSE_KINDS)},
                           "params": {"type": "object"},
                           # which player of a multi-player defense this cell evaluates (IRGAN)
                           "player": {"type": "string"}}}]},
        # the cell's attack and defense variants, as in its cell id: "random@0.05[filler_items=10]"
        # or "clean"; "gan-generator" or "none"
        "variant": {"type": "object", "required": ["attack", "defense"],
                    "properties": {"attack": {"type": "string"}, "defense": {"type": "string"}}},
        # the split seed (split and target items), the training seed (initialisation and
        # sampling), and which training run of the cell this is (0; k >= 1: a clean retrain)
        "seed": {"type": "integer"}, "train_seed": {"type": "integer"},
        "replicate": {"type": "integer", "minimum": 0},
        # the kind of split the cell trains and is scored on (benchmark.core.data.SPLITS)
        "split": {"enum": ["random", "leave_one_out"]},
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
        # per-user values (index = real user id; null: no test items or no eligible target)
        "per_user": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": ["number", "null"]}}},
        # each real user's top-10 item ids (index = real user id; null: no test items), the lists
        # derive compares with the clean cell's (robustness rbo@10, jaccard@10)
        "top10": {"type": "array", "items": {"type": ["array", "null"], "items": {"type": "integer"}}},
        # poisoned tables with fake users: each unsupervised detector's ROC AUC at separating the
        # fake users from the real ones (the same in every cell of the table)
        "stealth": _nullable_map,
        # sha1 of the ranking masks: the same in every cell of a seed (one candidate set)
        "candidates": {"type": "string"},
        # real users without a row in the model's train table (a detector removed them, or noise
        # removed all their rows): scored by the popularity of that table, as a deployed system would
        "fallback_users": {"type": "integer", "minimum": 0},
        # gradient cells: the attacked model's mean L2 row norm per embedding table
        "embedding_norms": _nullable_map,
    },
}

_p = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
SUMMARY_ROW_SCHEMA = {
    "type": "object",
    "required": ["dataset", "model", "attack", "variant", "family", "budget_value", "defense", "metric",
                 "source", "n", "mean", "ci_low", "ci_high", "p_value_vs_clean", "p_adjusted_vs_clean",
                 "test_vs_clean", "n_runs_vs_clean", "p_value_vs_undefended", "p_adjusted_vs_undefended",
                 "test_vs_undefended", "n_runs_vs_undefended"],
    "properties": {
        "dataset": {"type": "string"}, "model": {"type": "string"}, "attack": {"type": "string"},
        "split": {"enum": ["random", "leave_one_out"]},   # the task: top-n, or next item
        "variant": {"type": "string"}, "family": {"enum": list(ALL_FAMILIES)},
        "budget_value": {"type": ["number", "null"]}, "defense": {"type": "string"},
        "metric": {"type": "string"}, "source": {"enum": ["metrics", "robustness"]},
        "n": {"type": "integer", "minimum": 1}, "mean": {"type": ["number", "null"]},
        "ci_low": {"type": ["number", "null"]}, "ci_high": {"type": ["number", "null"]},
        # stability rows (rbo@10, jaccard@10): the same measure between each clean retrain and
        # its seed's clean cell, mean over the model's retrains, and how many there are
        "noise_floor_mean": {"type": ["number", "null"]},
        "noise_floor_runs": {"type": "integer", "minimum": 0},
        **{f"{field}_vs_{versus}": schema for versus in ("clean", "undefended")
           for field, schema in (("p_value", _p), ("p_adjusted", _p),
                                 ("test", {"type": ["string", "null"]}),
                                 ("n_runs", {"type": ["integer", "null"], "minimum": 1}))},
    },
}

RESULTS_SCHEMA = {
    "type": "object",
    "required": ["schema_version", "run", "records"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "run": {"type": "object", "required": ["suite", "dataset", "seeds", "environment"]},
        "records": {"type": "array", "items": RECORD_SCHEMA},
        "summary": {"type": "array", "items": SUMMARY_ROW_SCHEMA},
        # per (dataset, model, metric): the spread of one clean run around its seed's mean
        "noise_floor": {"type": "array", "items": {
            "type": "object", "required": ["dataset", "model", "metric", "runs", "seeds", "df", "sd"],
            "properties": {"runs": {"type": "integer"}, "seeds": {"type": "integer"},
                           "df": {"type": "integer"}, "sd": {"type": ["number", "null"]},
                           "deterministic": {"type": "boolean"}}}},
    },
}


def validate_results(document: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when a results document breaks the schema."""
    import jsonschema
    jsonschema.validate(document, RESULTS_SCHEMA)


def read_results(path: str | Path) -> dict:
    """Read and validate a results.json; BadInput with one line when it cannot be used."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file: pass a results.json written by benchmark.run") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                       f"column {exc.colno})") from None
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        found = document.get("schema_version") if isinstance(document, dict) else None
        raise BadInput(f"{path}: schema_version is {found!r}, this version reads {SCHEMA_VERSION}: "
                       f"regenerate the file with this version of benchmark.run")
    import jsonschema
    try:
        validate_results(document)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "top level"
        message = " ".join(exc.message.split())[:200]
        raise BadInput(f"{path}: not a valid results document at {where}: {message}") from None
    return document
