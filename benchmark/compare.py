"""Regression gate between two results files, in the spirit of pytest-benchmark's
``--benchmark-compare-fail``::

    python -m benchmark.compare BASELINE.json CURRENT.json [--tolerance METRIC:VALUE ...]

Cells are matched by ``cell_id`` (baseline cells with status ``ok`` only). Each compared metric
declares its direction, as RecBole's metric classes do, so "worse" means a drop of accuracy, a
rise of the relative drop under attack, or a rise of the target hit rate (the recommender got
easier to attack). By default ``ndcg@10``, ``recall@10``, ``drop_ndcg@10`` and, on attack cells,
``target_hr@50`` may each worsen by at most 0.02 (absolute). A tolerance ``ndcg@10:0.01`` is
absolute, ``ndcg@10:5%`` is relative to the baseline value; naming any other known metric adds
it to the check. Exit 0: within tolerance; 1: a regression, or a baseline cell missing or not
``ok`` in current (both listed on stdout); 2: bad input (one line on stderr), among it two runs
that are not comparable: another suite, dataset, training or targets (the ``run`` block of
results.json; ``--allow-different-runs`` compares them anyway). The committed baseline changes
only through ``--update-baseline``, which validates CURRENT and copies it (from any suite).
"""
from __future__ import annotations

import argparse
import math
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from benchmark.core.atomic import write_json_atomic
from benchmark.core.errors import BadInput
from benchmark.results.records import ACCURACY_METRICS, read_results

DEFAULT_TOLERANCE = 0.02
DEFAULT_METRICS = ("ndcg@10", "recall@10", "drop_ndcg@10", "target_hr@50")
_SLACK = 1e-9  # float rounding: a change of exactly the tolerance passes
RUN_KEYS = ("suite", "dataset", "training", "targets")   # what two compared runs must share


@dataclass(frozen=True)
class Metric:
    """A compared metric: where a record holds it and which direction is better."""

    name: str
    higher_is_better: bool
    source: str = "metrics"        # the record field: "metrics" or "robustness"
    attacked_only: bool = False    # compared on attack cells only

    def worsening(self, baseline: float, current: float) -> float:
        """How much worse current is than baseline (negative: it improved)."""
        return baseline - current if self.higher_is_better else current - baseline

    def value(self, record: dict) -> float | None:
        if self.attacked_only and record["attack"] is None:
            return None
        return (record.get(self.source) or {}).get(self.name)


METRICS = {m.name: m for m in (
    *(Metric(name, True) for name in ACCURACY_METRICS),
    *(Metric(f"drop_{name}", False, "robustness") for name in ACCURACY_METRICS),
    *(Metric(name, False, attacked_only=True)
      for name in ("target_hr@10", "target_hr@50", "target_ndcg@50")),
    Metric("shift_target_hr@50", False, "robustness"),
)}


@dataclass(frozen=True)
class Tolerance(ABC):
    """How much one metric may worsen from baseline to current."""

    metric: str
    value: float

    @abstractmethod
    def limit(self, baseline: float) -> float:
        """The largest allowed worsening for this baseline value."""

    def allows(self, baseline: float, current: float) -> bool:
        return METRICS[self.metric].worsening(baseline, current) <= self.limit(baseline) + _SLACK


class AbsoluteTolerance(Tolerance):
    """``ndcg@10:0.01``: the metric may worsen by 0.01."""

    def limit(self, baseline: float) -> float:
        return self.value

    def __str__(self) -> str:
        return f"{self.value:g}"


class RelativeTolerance(Tolerance):
    """``ndcg@10:5%``: the metric may worsen by 5% of its baseline value (``value`` = 0.05)."""

    def limit(self, baseline: float) -> float:
        return abs(baseline) * self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%"


PER_USER_FIELDS = ("per_user", "top10")   # bulky, and not what a comparison reads

def parse_tolerance(text: str) -> Tolerance:
    """``METRIC:NUMBER`` (absolute) or ``METRIC:NUMBER%`` (relative); BadInput otherwise."""
    metric, _, amount = text.rpartition(":")
    relative = amount.endswith("%")
    try:
        value = float(amount[:-1] if relative else amount)
    except ValueError:
        value = math.nan
    if not metric or not math.isfinite(value) or value < 0:
        raise BadInput(f"bad tolerance '{text}': write METRIC:VALUE with VALUE >= 0, "
                       f"e.g. ndcg@10:0.01 (absolute) or ndcg@10:5% (relative)")
    if metric not in METRICS:
        raise BadInput(f"bad tolerance '{text}': unknown metric '{metric}', "
                       f"choose one of {', '.join(METRICS)}")
    if relative:
        return RelativeTolerance(metric, value / 100)
    return AbsoluteTolerance(metric, value)


@dataclass(frozen=True)
class Regression:
    cell_id: str
    metric: str
    baseline: float
    current: float
    tolerance: Tolerance


@dataclass
class Comparison:
    checked: int = 0                                   # (cell, metric) pairs compared
    regressions: list[Regression] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)   # (cell_id, why)

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.missing)


def compare(baseline: dict, current: dict, tolerances: dict[str, Tolerance] | None = None) -> Comparison:
    """Compare two results documents; ``tolerances`` (by metric) override and extend the defaults."""
    checks = {name: AbsoluteTolerance(name, DEFAULT_TOLERANCE) for name in DEFAULT_METRICS}
    checks.update(tolerances or {})
    now = {record["cell_id"]: record for record in current["records"]}
    result = Comparison()
    for old in baseline["records"]:
        if old["status"] != "ok":
            continue
        new = now.get(old["cell_id"])
        if new is None or new["status"] != "ok":
            why = "absent" if new is None else f"{new['status']}: {new.get('error') or 'no error given'}"
            result.missing.append((old["cell_id"], why))
            continue
        for name, tolerance in checks.items():
            before, after = METRICS[name].value(old), METRICS[name].value(new)
            if before is None:
                continue
            if after is None:
                result.missing.append((old["cell_id"], f"{name} absent"))
                continue
            result.checked += 1
            if not tolerance.allows(before, after):
                result.regressions.append(Regression(old["cell_id"], name, before, after, tolerance))
    return result


def check_comparable(baseline: dict, current: dict, names=("baseline", "current")) -> None:
    """BadInput when the two runs differ in ``RUN_KEYS``: their cells share ids but not meaning."""
    differ = [key for key in RUN_KEYS if baseline["run"].get(key) != current["run"].get(key)]
    if differ:
        shown = "; ".join(f"{key}: {_brief(baseline['run'].get(key))} in {names[0]}, "
                          f"{_brief(current['run'].get(key))} in {names[1]}" for key in differ)
        raise BadInput(f"the two runs are not comparable ({shown})"[:450] +
                       ": compare runs of the same suite, dataset, training and targets, or pass "
                       "--allow-different-runs")


def _brief(value, limit: int = 60) -> str:
    import json
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def format_comparison(result: Comparison) -> str:
    lines = []
    if result.regressions:
        header = ("cell", "metric", "baseline", "current", "delta", "tolerance")
        rows = [(r.cell_id, r.metric, f"{r.baseline:.4f}", f"{r.current:.4f}",
                 f"{r.current - r.baseline:+.4f}", str(r.tolerance)) for r in result.regressions]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    if result.missing:
        lines.append("missing or not ok in current (counted as regressions):")
        lines += [f"  {cell_id}: {why}" for cell_id, why in result.missing]
    verdict = "FAIL" if result.failed else "ok"
    lines.append(f"compare {verdict}: {result.checked} checks, {len(result.regressions)} regressions, "
                 f"{len(result.missing)} missing")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2 instead of usage + message
        raise BadInput(f"{message} (see python -m benchmark.compare --help)")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m benchmark.compare", description=__doc__.replace("``", ""),
                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("baseline", help="results.json of the reference run")
    parser.add_argument("current", help="results.json of the run under test")
    parser.add_argument("--tolerance", nargs="+", action="extend", default=[], metavar="METRIC:VALUE",
                        help=f"allowed worsening, absolute (ndcg@10:0.01) or relative (ndcg@10:5%%); "
                             f"default {DEFAULT_TOLERANCE} for each of {', '.join(DEFAULT_METRICS)}")
    parser.add_argument("--update-baseline", action="store_true",
                        help="replace BASELINE with CURRENT (after validating it; per-user values left "
                             "out) instead of comparing")
    parser.add_argument("--allow-different-runs", action="store_true",
                        help="compare runs of another suite, dataset, training or targets too")
    try:
        args = parser.parse_args(argv)
        tolerances = {t.metric: t for t in map(parse_tolerance, args.tolerance)}
        current = read_results(args.current)
        if args.update_baseline:   # a baseline keeps what compare reads: no per-user values or lists
            write_json_atomic(args.baseline, {**current, "records": [
                {k: v for k, v in r.items() if k not in PER_USER_FIELDS} for r in current["records"]]})
            print(f"baseline updated: {args.baseline} ({len(current['records'])} cells)")
            return 0
        baseline = read_results(args.baseline)
        if not args.allow_different_runs:
            check_comparable(baseline, current, (args.baseline, args.current))
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = compare(baseline, current, tolerances)
    print(format_comparison(result))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
