"""Suites: a YAML file names the grid; this module reads it strictly and expands it into cells.

A suite file has exactly these keys (unknown keys and keys given twice are errors,
never silently ignored)::

    name: smoke                 # required
    description: text
    dataset: ml-100k            # or a directory of RecBole atomic files; --dataset overrides
    rating_threshold: null      # keep rows with rating >= threshold (implicit feedback)
    models: [BPR, Pop]          # RecBole general models; --models overrides
    seeds: 1                    # number of seeds 0..N-1; --seeds overrides
    training: {epochs: 300, patience: 10, eval_every: 1, batch_size: 2048, learning_rate: 0.001}
    model_params: {NeuMF: {dropout_prob: 0.1}}   # extra RecBole config per model
    targets: {policy: unpopular, count: 5}
    attacks:                    # each expanded over its budgets (default: the attack's sweep)
      - {name: random, budgets: [0.01, 0.05], params: {filler_items: 50}}
    defenses:
      - {name: apr, params: {eps: 0.5}}
      - {name: gan, against: [clean, gradient]}   # default: every family it applies to

Values are checked as strictly: ``name`` is a plain word (it names the default output folder),
training values are positive, attack and defense parameters must be ones the class takes, and
target settings must name a policy and a positive count. What needs the data (model names,
budgets larger than the item count, too many targets) is checked by ``benchmark.run`` before
any work, and cells that would share an id are refused by ``benchmark.harness.plan``.

Layered configuration, lowest to highest: RecBole's defaults, our ``BASE_CONFIG``, the suite's
``training`` and ``model_params``, then command-line flags.
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmark.errors import BadInput

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_KEYS = {"name", "description", "dataset", "rating_threshold", "models", "seeds", "training",
              "model_params", "targets", "attacks", "defenses"}
TRAINING_KEYS = {"epochs", "patience", "eval_every", "batch_size", "learning_rate"}
ATTACK_KEYS = {"name", "budgets", "params"}
DEFENSE_KEYS = {"name", "params", "against"}
TARGET_KEYS = {"policy", "count"}


@dataclass(frozen=True)
class AttackSpec:
    name: str
    family: str
    budget_param: str
    budget: float
    params: dict

    def build(self):
        from attacks.base import get_attack
        return get_attack(self.name, **{**self.params, self.budget_param: self.budget})

    @property
    def label(self) -> str:
        return f"{self.name}@{self.budget:g}"


@dataclass(frozen=True)
class DefenseSpec:
    name: str
    kind: str
    params: dict
    against: tuple = ()   # the families (and "clean") this suite defends; () = all it applies to

    def covers(self, family: str) -> bool:
        return not self.against or family in self.against

    def build(self):
        from defenses.base import get_defense
        return get_defense(self.name, **self.params)


@dataclass
class Suite:
    name: str
    description: str = ""
    dataset: str = "ml-100k"
    rating_threshold: float | None = None
    models: list = field(default_factory=lambda: ["BPR"])
    seeds: int = 1
    training: dict = field(default_factory=dict)
    model_params: dict = field(default_factory=dict)
    targets: dict = field(default_factory=lambda: {"policy": "unpopular", "count": 5})
    attacks: list = field(default_factory=list)     # of AttackSpec
    defenses: list = field(default_factory=list)    # of DefenseSpec


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def _check_keys(where: str, mapping, allowed: set) -> dict:
    if not isinstance(mapping, dict):
        raise BadInput(f"{where} must be a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise BadInput(f"{where}: unknown key '{unknown[0]}': allowed keys are {', '.join(sorted(allowed))}")
    return mapping


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain ``safe_load``
    keeps the last value silently, so a repeated ``training:`` would hide the first)."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue   # the base class refuses it below
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _strict_safe_load(text: str):
    """``yaml.safe_load`` with ``_StrictLoader`` (same constructors: no Python objects)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_suite(name_or_file: str) -> Suite:
    """Read a suite by name (``benchmark/suites/NAME.yaml``) or from a YAML file path."""
    path = Path(name_or_file)
    if not (name_or_file.endswith((".yaml", ".yml")) or path.is_file()):
        path = SUITES_DIR / f"{name_or_file}.yaml"
        if not path.is_file():
            raise BadInput(f"unknown suite '{name_or_file}': choose one of "
                           f"{', '.join(available_suites())} or pass a suite .yaml file")
    if path.is_dir():
        raise BadInput(f"suite file '{name_or_file}' is a directory: pass a suite .yaml file")
    if not path.is_file():
        raise BadInput(f"suite file '{name_or_file}' does not exist")
    try:
        document = _strict_safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"suite file '{path}' is not valid YAML ({first}): fix the syntax") from None
    return parse_suite(document, str(path))


def parse_suite(document, where: str = "suite") -> Suite:
    if document is None:
        raise BadInput(f"{where} is empty: a suite needs at least 'name: NAME'")
    doc = _check_keys(where, document, SUITE_KEYS)
    if "name" not in doc:
        raise BadInput(f"{where}: missing key 'name'")
    if not isinstance(doc["name"], str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", doc["name"]):
        raise BadInput(f"{where}: name {doc['name']!r} must be a short word of letters, digits, '.', '_' "
                       f"or '-' (it names the default output folder)")
    suite = Suite(name=doc["name"], description=str(doc.get("description", "")))
    suite.dataset = str(doc.get("dataset", suite.dataset))
    suite.rating_threshold = doc.get("rating_threshold")
    suite.models = name_list(doc.get("models", suite.models), f"{where}: models")
    suite.seeds = _positive_int(doc.get("seeds", 1), f"{where}: seeds")
    suite.training = _training(doc.get("training", {}) or {}, f"{where}: training")
    suite.model_params = {str(model): _mapping(params, f"{where}: model_params: {model}")
                          for model, params in _mapping(doc.get("model_params"), f"{where}: model_params").items()}
    suite.targets = _targets({**suite.targets, **_check_keys(f"{where}: targets", doc.get("targets", {}) or {},
                                                             TARGET_KEYS)}, f"{where}: targets")
    suite.attacks = [spec for i, entry in enumerate(_list(doc.get("attacks"), f"{where}: attacks"))
                     for spec in _attack_specs(entry, f"{where}: attacks[{i}]")]
    suite.defenses = [_defense_spec(entry, f"{where}: defenses[{i}]")
                      for i, entry in enumerate(_list(doc.get("defenses"), f"{where}: defenses"))]
    return suite


def _mapping(value, where: str) -> dict:
    """An optional mapping with any keys (null is empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput(f"{where} must be a list of mappings, got {type(value).__name__}")
    return value


def _training(mapping, where: str) -> dict:
    training = dict(_check_keys(where, mapping, TRAINING_KEYS))
    for key, value in training.items():
        if key == "learning_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise BadInput(f"{where}: learning_rate must be a positive number, got {value!r}")
            training[key] = float(value)
        else:
            _positive_int(value, f"{where}: {key}")
    return training


def _targets(targets: dict, where: str) -> dict:
    from attacks.targets import POLICIES
    if targets["policy"] not in POLICIES:
        raise BadInput(f"{where}: unknown policy {targets['policy']!r}: choose one of {', '.join(POLICIES)}")
    _positive_int(targets["count"], f"{where}: count")
    return targets


def _known_params(cls, params: dict, where: str) -> None:
    """A misspelled parameter is named with the ones the class takes (a clearer TypeError)."""
    signature = inspect.signature(cls)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        raise BadInput(f"{where}: unknown parameter '{unknown[0]}': it takes "
                       f"{', '.join(signature.parameters) or 'none'}")


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{where} must be a positive integer, got {value!r}")
    return value


def name_list(value, where: str) -> list:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where} must be a non-empty list of names")
    return value


def _attack_specs(entry, where: str) -> list[AttackSpec]:
    from attacks.base import ATTACKS
    entry = _check_keys(where, entry, ATTACK_KEYS)
    name = entry.get("name")
    try:
        cls = ATTACKS.get_class(str(name))
        cls()  # the defaults must be valid
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}") from None
    params = _mapping(entry.get("params"), f"{where}: params")
    _known_params(cls, params, f"{where}: {name}")
    budgets = entry.get("budgets", list(cls.default_sweep))
    if not isinstance(budgets, list) or not budgets:
        raise BadInput(f"{where}: budgets must be a non-empty list of numbers")
    specs = []
    for budget in budgets:
        spec = AttackSpec(name=name, family=cls.family, budget_param=cls.budget_param,
                          budget=budget, params=params)
        try:
            spec.build()
        except (ValueError, TypeError) as exc:
            raise BadInput(f"{where}: invalid {name} attack ({exc})") from None
        specs.append(AttackSpec(name=name, family=cls.family, budget_param=cls.budget_param,
                                budget=float(budget), params=params))
    return specs


def _defense_spec(entry, where: str) -> DefenseSpec:
    from benchmark.kinds import Family
    from defenses.base import DEFENSES, get_defense
    entry = _check_keys(where, entry, DEFENSE_KEYS)
    name, params = entry.get("name"), _mapping(entry.get("params"), f"{where}: params")
    try:
        cls = DEFENSES.get_class(str(name))
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}") from None
    _known_params(cls, params, f"{where}: {name}")
    try:
        defense = get_defense(str(name), **params)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{where}: invalid defense ({exc})") from None
    against = entry.get("against") or []
    if not isinstance(against, list) or not all(f in defense.applies_to for f in against):
        raise BadInput(f"{where}: against must be a list of what {name} applies to "
                       f"({', '.join(defense.applies_to)}), got {against!r}")
    if Family.GRADIENT in against and Family.CLEAN not in against:
        raise BadInput(f"{where}: against lists gradient but not clean: gradient attacks run on the "
                       f"clean-trained model, so add clean")
    return DefenseSpec(name=name, kind=defense.kind, params=params, against=tuple(against))
