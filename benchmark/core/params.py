"""Parameter checks for attacks and defenses: one module, called when a class is built.

As in the Adversarial Robustness Toolbox, a bad parameter fails at construction with a
``ValueError`` that names it, its allowed range and the value given (the CLI shows it as one
line, exit 2). A number is a real ``int``/``float`` or numpy scalar, finite, never a bool; an
integer is an ``int`` or numpy integer, never a bool or a float such as 2.0.
"""
from __future__ import annotations

import math

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
