"""Suites: a YAML file names the grid; this module reads it strictly and expands it into cells.

A suite file has exactly these keys (unknown keys and keys given twice are errors,
never silently ignored)::

    name: smoke                 # required
    description: text
    dataset: ml-100k            # or a directory of RecBole atomic files; --dataset overrides
    rating_threshold: null      # keep rows with rating >= threshold (implicit feedback)
    models: [BPR, Pop]          # RecBole general models; --models overrides
    seeds: 1                    # number of seeds 0..N-1; --seeds overrides
    split: random               # general models' split: random (8:1:1) or leave_one_out (by time);
                                # sequential models always train and are scored leave-one-out
    noise_floor: 2              # clean retrains per model and seed (other training seeds, same
                                # split): the training noise that effects are tested against
    training: {epochs: 300, patience: 10, eval_every: 1, batch_size: 2048, learning_rate: 0.001}
    model_params: {NeuMF: {dropout_prob: 0.1}}   # extra RecBole config per model
    targets: {policy: unpopular, count: 5}
    attacks:                    # each expanded over its budgets (default: the attack's sweep)
      - {name: random, budgets: [0.01, 0.05], params: {filler_items: 50}}
    defenses:
      - {name: apr, params: {eps: 0.5}}
      - {name: gan, against: [clean, gradient]}   # default: every family it applies to
      - {name: apr, against: [clean, bandwagon]}  # families, or attacks of the suite by name
      - {name: vat, at: reference}   # only against each attack's reference budget (default: every)

The structure (keys, types, ranges of the plain values) is checked against ``SUITE_SCHEMA`` (a
JSON Schema, jsonschema) and the first problem is one line; then attack and defense names and
parameters against their classes (parameters must be ones the class takes) and the target
policy. What needs the data (model names,
budgets larger than the item count, too many targets) is checked by ``benchmark.run`` before
any work, and cells that would share an id are refused by ``benchmark.plan.plan``.

Layered configuration, lowest to highest: RecBole's defaults, our ``BASE_CONFIG``, the suite's
``training`` and ``model_params``, then command-line flags.
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from benchmark.core import params as check
from benchmark.core.errors import BadInput
from benchmark.core.kinds import OPTIMIZERS

SUITES_DIR = Path(__file__).parent / "suites"
TRAINING_KEYS = {"epochs", "patience", "eval_every", "batch_size", "learning_rate", "optimizer"}


def _resolved(spec, registry_name: str) -> None:
    """Fill a spec's ``cls`` from the registry once, when it was made without one."""
    if spec.cls is None:
        from benchmark.core import registry
        object.__setattr__(spec, "cls", getattr(registry, registry_name).get_class(spec.name))


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one budget, as a suite names it; ``cls`` is the attack's class, resolved once,
    so facts about it are read without building an object (objects are built where work is done)."""
    name: str
    family: str
    budget_param: str
    budget: float
    params: dict
    cls: type | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        _resolved(self, "ATTACKS")

    def build(self):
        return self.cls(**self._given)

    @property
    def _given(self) -> dict:
        """The parameters to build with; a whole-number budget of a parameter counted in integers
        (``profile_pollution``'s items per user) is passed as an int."""
        budget = self.budget
        if isinstance(self.cls.parameters[self.budget_param].default, int) and float(budget).is_integer():
            budget = int(budget)
        return {**self.params, self.budget_param: budget}

    @property
    def label(self) -> str:
        return f"{self.name}@{self.budget:g}"

    @cached_property
    def recorded_params(self) -> dict:
        """The parameters the built attack records (defaults filled, values normalised)."""
        return self.cls.checked_params(**self._given)

    @cached_property
    def threat_model(self) -> dict:
        """What the attacker is assumed to know, and the model it optimises against."""
        probe = self.cls.configured(**self._given)
        return {"knowledge": probe.knowledge, "surrogate": probe.surrogate}


@dataclass(frozen=True)
class DefenseSpec:
    name: str
    kind: str
    params: dict
    against: tuple = ()   # the families (and "clean") or attack names it defends; () = all it applies to
    cls: type | None = field(default=None, compare=False, repr=False)
    at: str = "every"     # "reference": only against each attack's reference budget (plan.reference_budgets)

    def __post_init__(self):
        _resolved(self, "DEFENSES")

    def covers(self, attack: AttackSpec | None) -> bool:
        """Whether the suite puts this defense against ``attack`` (None: the clean cell)."""
        if attack is None:
            return not self.against or "clean" in self.against
        return not self.against or attack.family in self.against or attack.name in self.against

    def build(self):
        return self.cls(**self.params)

    @cached_property
    def starts_from_plain(self) -> bool:
        """Whether this trainer defense starts from the converged undefended model."""
        return self.cls.configured(**self.params).starts_from_plain


@dataclass
class Suite:
    name: str
    description: str = ""
    dataset: str = "ml-100k"
    rating_threshold: float | None = None
    models: list = field(default_factory=lambda: ["BPR"])
    seeds: int = 1
    noise_floor: int = 0        # clean retrains per (model, seed); 0: no significance tests
    split: str = "random"       # general models' split (benchmark.core.data.SPLITS)
    training: dict = field(default_factory=dict)
    model_params: dict = field(default_factory=dict)
    targets: dict = field(default_factory=lambda: {"policy": "unpopular", "count": 5})
    attacks: list = field(default_factory=list)     # of AttackSpec
    defenses: list = field(default_factory=list)    # of DefenseSpec


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


_POSITIVE_INT = {"type": "integer", "minimum": 1, "message": "must be a positive integer"}
_MAPPING = {"type": ["object", "null"], "message": "must be a mapping"}


def _closed(properties: dict, **extra) -> dict:
    """A mapping with exactly these optional keys."""
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "message": "must be a mapping", **extra}


SUITE_SCHEMA = _closed({
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
             "message": "must be a short word of letters, digits, '.', '_' or '-' (it names the "
                        "default output folder)"},
    "description": {"type": ["string", "null"], "message": "must be text"},
    "dataset": {"type": "string", "message": "must be ml-100k or a directory"},
    "rating_threshold": {},          # checked with the data (benchmark.core.data)
    "models": {"type": ["array", "string"], "message": "must be a non-empty list of names"},
    "seeds": _POSITIVE_INT,
    "noise_floor": {"type": "integer", "minimum": 0, "message": "must be an integer >= 0"},
    "split": {"enum": ["random", "leave_one_out"], "message": "must be random or leave_one_out"},
    "training": {**_closed({key: _POSITIVE_INT for key in TRAINING_KEYS - {"learning_rate", "optimizer"}}),
                 "type": ["object", "null"]},
    "model_params": {**_MAPPING, "additionalProperties": _MAPPING},
    "targets": {**_closed({"policy": {"type": "string", "message": "must be a policy name"},
                           "count": _POSITIVE_INT}), "type": ["object", "null"]},
    "attacks": {"type": ["array", "null"], "message": "must be a list of mappings",
                "items": _closed({"name": {"type": "string", "message": "must be an attack name"},
                                  "budgets": {"type": "array", "minItems": 1,
                                              "message": "must be a non-empty list of numbers"},
                                  "params": _MAPPING}, required=["name"])},
    "defenses": {"type": ["array", "null"], "message": "must be a list of mappings",
                 "items": _closed({"name": {"type": "string", "message": "must be a defense name"},
                                   "params": _MAPPING,
                                   "against": {"type": ["array", "null"], "message": "must be a list"},
                                   "at": {"enum": ["every", "reference"],
                                          "message": "must be every or reference (the budgets it faces)"}},
                                  required=["name"])},
}, required=["name"])
SUITE_SCHEMA["properties"]["training"]["properties"]["learning_rate"] = {
    "type": "number", "exclusiveMinimum": 0, "message": "must be a positive number"}
SUITE_SCHEMA["properties"]["training"]["properties"]["optimizer"] = {
    "enum": list(OPTIMIZERS), "message": f"must be {' or '.join(OPTIMIZERS)}"}


def check_suite_document(document, where: str, flags: dict | None = None) -> None:
    """Validate a suite document against ``SUITE_SCHEMA``: BadInput with one line naming the
    first problem (where, which key, what it must be, what was given). ``flags`` maps the keys
    that command-line flags set (``"training: epochs"``) to the flag, which the message names."""
    import jsonschema
    validator = jsonschema.Draft7Validator(SUITE_SCHEMA)
    errors = sorted(validator.iter_errors(document), key=lambda e: (list(e.absolute_path), e.validator))
    if not errors:
        return
    error = errors[0]
    path = ": ".join(str(p) if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
    path = path.replace(": [", "[")
    at = (flags or {}).get(path) or (f"{where}: {path}" if path else where)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))[0]
        raise BadInput(f"{at}: unknown key '{unknown}': allowed keys are {', '.join(allowed)}")
    if error.validator == "required":
        raise BadInput(f"{at}: missing key '{error.validator_value[0]}'")
    got = (type(error.instance).__name__ if error.validator == "type" and isinstance(error.instance, (dict, list))
           else repr(error.instance))
    raise BadInput(f"{at} {error.schema.get('message', error.message)}, got {got}"[:300])


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


def read_suite(name_or_file: str) -> tuple[object, str]:
    """The document of a suite named (``benchmark/suites/NAME.yaml``) or given as a YAML file
    path, not yet validated, and where it came from."""
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
    return document, str(path)


def load_suite(name_or_file: str) -> Suite:
    """Read and validate a suite by name or file."""
    return parse_suite(*read_suite(name_or_file))


def parse_suite(document, where: str = "suite", flags: dict | None = None) -> Suite:
    """The suite of a document, validated once (``flags``: see ``check_suite_document``)."""
    if document is None:
        raise BadInput(f"{where} is empty: a suite needs at least 'name: NAME'")
    check_suite_document(document, where, flags)
    doc = document
    suite = Suite(name=doc["name"], description=str(doc.get("description") or ""))
    suite.dataset = str(doc.get("dataset", suite.dataset))
    suite.rating_threshold = doc.get("rating_threshold")
    suite.models = name_list(doc.get("models", suite.models), (flags or {}).get("models") or f"{where}: models")
    suite.seeds = doc.get("seeds", 1)
    suite.noise_floor = doc.get("noise_floor", 0)
    suite.split = doc.get("split", "random")
    suite.training = {k: float(v) if k == "learning_rate" else v for k, v in (doc.get("training") or {}).items()}
    suite.model_params = {str(model): dict(params or {}) for model, params in (doc.get("model_params") or {}).items()}
    suite.targets = _targets({**suite.targets, **(doc.get("targets") or {})}, f"{where}: targets")
    suite.attacks = [spec for i, entry in enumerate(doc.get("attacks") or [])
                     for spec in _attack_specs(entry, f"{where}: attacks[{i}]")]
    suite.defenses = [_defense_spec(entry, f"{where}: defenses[{i}]", suite.attacks)
                      for i, entry in enumerate(doc.get("defenses") or [])]
    return suite


def _targets(targets: dict, where: str) -> dict:
    from benchmark.core.targets import POLICIES
    if targets["policy"] not in POLICIES:
        raise BadInput(f"{where}: unknown policy {targets['policy']!r}: choose one of {', '.join(POLICIES)}")
    return targets


def _known_params(cls, params: dict, where: str) -> None:
    """A misspelled parameter is named with the ones the class declares (``cls.parameters``)."""
    try:
        check.refuse_unknown(cls.parameters, params)
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}") from None


def name_list(value, where: str) -> list:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where} must be a non-empty list of names")
    return value


def _attack_specs(entry, where: str) -> list[AttackSpec]:
    from benchmark.core.registry import ATTACKS
    name = entry["name"]
    try:
        cls = ATTACKS.get_class(str(name))
        cls.checked_params()  # the defaults must be valid
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}") from None
    params = dict(entry.get("params") or {})
    _known_params(cls, params, f"{where}: {name}")
    budgets = entry.get("budgets", list(cls.default_sweep))
    specs = []
    for budget in budgets:
        try:
            cls.checked_params(**{**params, cls.budget_param: budget})
        except (ValueError, TypeError) as exc:
            raise BadInput(f"{where}: invalid {name} attack ({exc})") from None
        specs.append(AttackSpec(name=name, family=cls.family, budget_param=cls.budget_param,
                                budget=float(budget), params=params, cls=cls))
    return specs


def _defense_spec(entry, where: str, attacks: list) -> DefenseSpec:
    from benchmark.core.kinds import EVASION_FAMILIES, Family
    from benchmark.core.registry import DEFENSES
    name, params = entry["name"], dict(entry.get("params") or {})
    try:
        cls = DEFENSES.get_class(str(name))
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}") from None
    _known_params(cls, params, f"{where}: {name}")
    try:
        cls.checked_params(**params)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{where}: invalid defense ({exc})") from None
    against = entry.get("against") or []
    named = {a.name: a.family for a in attacks}   # an attack of the suite, by name
    if not isinstance(against, list) or not all(f in cls.applies_to or named.get(f) in cls.applies_to
                                                for f in against):
        raise BadInput(f"{where}: against must be a list of what {name} applies to "
                       f"({', '.join(cls.applies_to)}) or of the suite's attacks of those families, "
                       f"got {against!r}")
    evasion = next((f for f in against if f in EVASION_FAMILIES or named.get(f) in EVASION_FAMILIES), None)
    if evasion is not None and Family.CLEAN not in against:
        raise BadInput(f"{where}: against lists {evasion} but not clean: {evasion} attacks run on the "
                       f"clean-trained model, so add clean")
    return DefenseSpec(name=name, kind=cls.kind, params=params, against=tuple(against), cls=cls,
                       at=entry.get("at", "every"))
