"""How the report prints numbers and names: one place, used by the HTML (as Jinja filters) and by
the figures, so a value reads the same everywhere.

- a missing value (None, NaN) is an em dash;
- a value that rounds to zero never carries a sign (no ``-0.0%``, no ``-0.000``);
- floats of the run's provenance get 4 significant digits, never 17 (``0.06305``);
- a run's seeds say how many there are (``1 seed (0)``, ``3 seeds (0, 1, 2)``);
- a clean -> attacked pair is ``clean → attacked``, a rank's move ``898 places up``;
- ``plain`` makes an untrusted string safe for matplotlib, whose mathtext reads ``$...$`` as math.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

MISSING = "—"
ARROW = "→"


def missing(value) -> bool:
    return value is None or (isinstance(value, Real) and math.isnan(value))


def _unsigned_zero(text: str) -> str:
    """``-0.00`` and ``-0`` as ``0.00`` and ``0``: a sign on a value printed as zero says nothing."""
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def num(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals."""
    return MISSING if missing(value) else _unsigned_zero(f"{float(value):.{digits}f}")


def pct(value, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals (0.0812 -> ``8.1%``)."""
    return MISSING if missing(value) else _unsigned_zero(f"{100 * float(value):.{digits}f}") + "%"


def signed(value, digits: int = 3, percent: bool = False) -> str:
    """A change, with its sign (``+0.004``, ``-898``); zero as printed has none (``0.000``)."""
    if missing(value):
        return MISSING
    text = pct(value, digits) if percent else num(value, digits)
    return text if text.startswith("-") or float(text.rstrip("%")) == 0 else "+" + text


def change(clean, attacked, digits: int = 3) -> str:
    """``clean → attacked``, both with ``digits`` decimals."""
    return f"{num(clean, digits)} {ARROW} {num(attacked, digits)}"


def places(gain) -> str:
    """How far the targets' mean rank moved: ``898 places up``, ``84 places down``, ``unmoved``."""
    if missing(gain):
        return MISSING
    moved = num(abs(gain), 0)
    if moved == "0":
        return "unmoved"
    return f"{moved} place{'s' if moved != '1' else ''} {'up' if gain > 0 else 'down'}"


def value(x) -> str:
    """Any value of the run's description: integers with thousands separators, floats with 4
    significant digits, everything else as text."""
    if missing(x):
        return MISSING
    if isinstance(x, bool) or not isinstance(x, Real):
        return str(x)
    if isinstance(x, Integral):
        return f"{x:,}"
    return _unsigned_zero(f"{x:.4g}")


def seeds(given) -> str:
    """The seeds of a run: ``1 seed (0)``, ``3 seeds (0, 1, 2)``; a bare count as ``3 seeds``."""
    if isinstance(given, Integral) and not isinstance(given, bool):
        return f"{given} seed{'s' if given != 1 else ''}"
    given = list(given or [])
    listed = ", ".join(str(s) for s in given)
    return f"{len(given)} seed{'s' if len(given) != 1 else ''}" + (f" ({listed})" if given else "")


def plain(text) -> str:
    """``text`` as matplotlib shows it literally: every ``$`` escaped (``\\$``), so mathtext never
    starts, and with it none of its other specials (``_ ^ \\ { }``) means anything."""
    return str(text).replace("$", r"\$")


FILTERS = {"num": num, "pct": pct, "signed": signed, "change": change, "places": places, "value": value,
           "seeds": seeds}
