"""Parameter checks for attacks and defenses: one module, called when a class is built.

As in the Adversarial Robustness Toolbox, a bad parameter fails at construction with a
``ValueError`` that names it, its allowed range and the value given (the CLI shows it as one
line, exit 2). A number is a real ``int``/``float`` or numpy scalar, finite, never a bool; an
integer is an ``int`` or numpy integer, never a bool or a float such as 2.0.

Each class declares its parameters once, as ART's ``attack_params``: ``parameters = {name:
Param(default, check, **bounds)}``; ``Parameterised``, the base of ``Attack`` and ``Defense``,
refuses unknown names, fills the defaults, runs the checks and records the values.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np


def _is_number(value) -> bool:
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(float(value)))


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within the bounds (``low_open``: ``> low``; else ``>= low``)."""
    ok = _is_number(value)
    if ok:
        x = float(value)
        ok = ((low is None or (x > low if low_open else x >= low))
              and (high is None or (x < high if high_open else x <= high)))
    if not ok:
        left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be a number in {left}, {right}, got {value!r}")
    return float(value)


def positive(name: str, value) -> float:
    """A finite number > 0."""
    return number(name, value, low=0.0, low_open=True)


def fraction(name: str, value, *, allow_zero: bool = False, high: float = 1.0) -> float:
    """A number in (0, high] (or [0, high] with ``allow_zero``)."""
    return number(name, value, low=0.0, low_open=not allow_zero, high=high)


def integer(name: str, value, *, low: int = 1) -> int:
    """An integer >= ``low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def optional(check, name: str, value, **bounds):
    """``None`` passes; anything else must pass ``check``."""
    return None if value is None else check(name, value, **bounds)


def choice(name: str, value, options) -> str:
    """One of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return value


def non_empty_list(name: str, value, what: str) -> list:
    """A non-empty list or tuple (of ``what``, named in the message), as a list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of {what}, got {value!r}")
    return list(value)


def mapping(name: str, value) -> dict:
    """A mapping of parameters (None: empty), as a dict."""
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping of parameters, got {value!r}")
    return dict(value or {})


def each(name: str, value, *, of, what: str, **bounds) -> list:
    """A non-empty list or tuple (of ``what``) whose every element passes the check ``of``."""
    return [of(name, element, **bounds) for element in non_empty_list(name, value, what)]


def refuse_unknown(declared, given, who: str = "it") -> None:
    """ValueError for the first name of ``given`` (sorted) not in ``declared``, naming those
    that are: ``unknown parameter 'x': it takes a, b, c``."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter '{unknown[0]}': {who} takes {', '.join(declared) or 'none'}")


@dataclass(frozen=True, init=False)
class Param:
    """One parameter of an attack or a defense, declared once: its default and its check.

    ``check(name, value, **bounds)`` is one of this module's checks (or any function of that
    shape) and returns the normalised value; with ``optional=True`` None passes unchecked. A
    parameter not given takes ``default``, which passes the same check::

        Param(0.05, fraction, high=0.5)         # a number in (0, 0.5], default 0.05
        Param(None, integer, optional=True)     # None or an integer >= 1, default None
        Param("ce", choice, options=("ce", "cw"))
    """

    default: Any
    check: Callable
    optional: bool
    bounds: tuple

    def __init__(self, default, check: Callable, *, optional: bool = False, **bounds):
        for key, value in (("default", default), ("check", check), ("optional", optional),
                           ("bounds", tuple(bounds.items()))):
            object.__setattr__(self, key, value)

    def __call__(self, name: str, value):
        """The checked, normalised value (ValueError naming ``name`` when it is refused)."""
        if value is None and self.optional:
            return None
        return self.check(name, value, **dict(self.bounds))


class Parameterised:
    """Base of ``Attack`` and ``Defense``: parameters declared once, checked and filled here.

    A class declares what it takes as ``parameters = {name: Param(default, check, ...)}``; a
    subclass's declarations extend those of its bases (bases' first; a name declared again
    replaces the base's ``Param`` in its place). ``Cls(**given)`` then:

    1. refuses a name it does not declare (``ValueError`` naming those it takes);
    2. fills each missing one with its default and passes every value through its check;
    3. sets each checked value as an attribute and all of them, in declaration order, as
       ``self.params`` (what ``describe()`` records);
    4. calls ``self._derive()``, the one hook: checks across parameters and attributes derived
       from them (evasive's base attack and detector); it may replace the value of
       ``self.params`` it derives (APR's ``step_size`` defaulting from ``steps``).

    ``Cls.checked_params(**given)`` returns that ``self.params`` without the rest of the
    construction (no ``__init__`` of a subclass runs): the facts of a configuration, cheaply.
    """

    parameters: ClassVar[Mapping[str, Param]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        merged: dict = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("parameters", {}))
        cls.parameters = MappingProxyType(merged)

    def __init__(self, **given):
        declared = type(self).parameters
        refuse_unknown(declared, given, getattr(self, "name", "") or type(self).__name__)
        self.params = {name: param(name, given.get(name, param.default)) for name, param in declared.items()}
        for name, value in self.params.items():
            setattr(self, name, value)
        self._derive()

    def _derive(self) -> None:
        """Checks across parameters and attributes derived from them; default: none."""

    @classmethod
    def configured(cls, **given) -> "Parameterised":
        """A bare instance holding what building with ``given`` sets from the declaration
        (parameters, ``_derive``'s attributes), without the rest of the construction (no
        subclass ``__init__`` runs): the facts of a configuration, cheaply. ``ValueError`` as
        building would raise it."""
        probe = cls.__new__(cls)
        Parameterised.__init__(probe, **given)
        return probe

    @classmethod
    def checked_params(cls, **given) -> dict:
        """The ``params`` an instance built with ``given`` records (defaults filled, values
        checked and normalised, ``_derive`` applied)."""
        return dict(cls.configured(**given).params)
