"""Significance with the training run as the unit of replication (docs/protocol.md, "Statistics").

Users scored by one trained model are not independent replicates: they share its training noise
(initialisation, sampling), so a per-user test on one run counts that noise as effect (two clean
retrains of BPR on the same split: p = 6e-19 on target rank with a per-user Wilcoxon test). Here
every test compares *run-level* values (a cell's metric, the mean over its users) and takes its
variance from the model's **noise floor**: the spread of its clean retrains on the same split
(``noise_floor`` retrains per model and seed, ``Job.replicate``).

- ``floor``: per (dataset, model) and metric, the pooled within-seed variance of the clean runs
  (df = runs - seeds), and whether training is deterministic (every clean run of a seed gave the
  same metrics: Pop, ItemKNN).
- ``versus_runs``: a cell against reference runs of the same seeds (clean runs, or the
  undefended cell). Continuous metrics: a t-test of ``sum_s (x_s - mean(ref_s))`` with variance
  ``floor * sum_s (1 + 1/m_s)`` (m_s reference runs of seed s) on the floor's df; under "no
  effect" the cell is one more draw of the same training noise, and the test is exact for
  normal noise. Sparse target hits (mostly zero, and often zero in every clean run): an exact
  permutation test over runs within seeds (under "no effect" the cell's run is exchangeable with
  the reference runs); its smallest p is 1 / prod_s (m_s + 1), so few runs cannot reach
  significance, and the row says how many runs it rests on. Deterministic training: the
  difference is exact (p = 0 when it is not zero, 1 when it is).
- ``paired_runs``: an evasion attack perturbs a trained model, so attacked and clean share their
  run: the effect is measured in every run (the cell and its retrains), and tested over runs
  (one-sample t-test; sign-flip permutation for sparse hits).
- ``stability_floor``: the stability of a cell's top-10 lists against its seed's clean cell
  (RBO, Jaccard: ``benchmark.results.aggregate``) is set beside the same measure between each
  clean retrain and that clean cell, with no p-value (``STABILITY_FLOOR``): a cell trains with
  the clean cell's own training seed, so it is not exchangeable with the retrains on this
  measure (a small change of the table keeps more of the clean lists than a retrain does).
Too few runs (no retrains; one run of an evasion cell): no p-value, and the test says why.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
from scipy import stats

SPARSE_METRICS = ("target_hr@10", "target_hr@50")     # mostly zeros: permutation tests
T_FLOOR = "t-test against the noise floor (clean retrains)"
PERMUTATION_FLOOR = "exact permutation over training runs"
EXACT = "exact (deterministic training: clean retrains identical)"
T_PAIRED = "one-sample t-test over training runs"
SIGN_FLIP_RUNS = "sign-flip permutation over training runs"
NO_RETRAINS = "not tested: no clean retrains (set noise_floor)"
ONE_RUN = "not tested: one training run (set noise_floor)"
STABILITY_FLOOR = "not tested: compare with noise_floor_mean (clean retrains against the clean cell)"
MAX_ENUMERATED = 200_000


def floor(records: list[dict]) -> dict:
    """``{(dataset, model): {"deterministic": bool, "runs": n, "seeds": n, metric: (variance,
    df)}}`` from the ok clean undefended records (every replicate)."""
    runs = defaultdict(lambda: defaultdict(list))      # (dataset, model) -> seed -> [metrics]
    for r in records:
        if r["status"] == "ok" and r["attack"] is None and r["defense"] is None:
            runs[(r["dataset"], r["model"])][r["seed"]].append(r["metrics"])
    out = {}
    for key, by_seed in runs.items():
        entry = {"deterministic": all(len(ms) > 1 and all(m == ms[0] for m in ms) for ms in by_seed.values()),
                 "runs": sum(len(ms) for ms in by_seed.values()), "seeds": len(by_seed)}
        for metric in sorted({m for ms in by_seed.values() for run in ms for m in run}):
            groups = [np.array([run[metric] for run in ms if metric in run]) for ms in by_seed.values()]
            df = sum(max(len(g) - 1, 0) for g in groups)
            ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups if len(g))
            entry[metric] = (ss / df if df else math.nan, df)
        out[key] = entry
    return out


def versus_runs(values: dict, references: dict, metric: str, model_floor: dict | None):
    """(p, test, runs): ``values`` {seed: the cell's value}, ``references`` {seed: [values of
    the reference runs]}, tested against ``model_floor`` (an entry of ``floor``)."""
    seeds = [s for s in values if references.get(s)]
    if not seeds:
        return None, None, None
    x = np.array([values[s] for s in seeds])
    refs = [np.asarray(references[s], float) for s in seeds]
    n_runs = len(seeds) + sum(len(r) for r in refs)
    diff = float(sum(xi - r.mean() for xi, r in zip(x, refs)))
    if not model_floor or model_floor["runs"] <= model_floor["seeds"]:
        return None, NO_RETRAINS, n_runs
    if model_floor["deterministic"]:
        return (0.0 if abs(diff) > 1e-12 else 1.0), EXACT, n_runs
    if metric in SPARSE_METRICS:
        return _permutation(x, refs), PERMUTATION_FLOOR, n_runs
    variance, df = model_floor.get(metric, (math.nan, 0))
    if not df or not variance > 0:
        return None, NO_RETRAINS, n_runs
    scale = math.sqrt(variance * sum(1 + 1 / len(r) for r in refs))
    return float(2 * stats.t.sf(abs(diff) / scale, df)), T_FLOOR, n_runs


def _permutation(x: np.ndarray, refs: list[np.ndarray]) -> float:
    """Two-sided exact (or, past ``MAX_ENUMERATED`` relabellings, Monte-Carlo) p of the summed
    difference when, within each seed, any of its runs could have been the cell's."""
    pools = [np.concatenate([[xi], r]) for xi, r in zip(x, refs)]

    def statistic(choice) -> float:
        return sum((pool[c] - (pool.sum() - pool[c]) / (len(pool) - 1)) for pool, c in zip(pools, choice))

    observed = abs(statistic([0] * len(pools)))
    sizes = [len(pool) for pool in pools]
    if math.prod(sizes) <= MAX_ENUMERATED:
        choices = itertools.product(*(range(n) for n in sizes))
        draws = [abs(statistic(c)) for c in choices]
    else:
        rng = np.random.default_rng(0)
        draws = [observed] + [abs(statistic([rng.integers(n) for n in sizes])) for _ in range(9999)]
    return float(np.mean(np.asarray(draws) >= observed - 1e-12))


def paired_runs(effects: list[float], metric: str):
    """(p, test, runs) of per-run effects (attacked minus clean of the same trained model)."""
    e = np.asarray(effects, float)
    if len(e) < 2:
        return None, ONE_RUN, len(e)
    if metric in SPARSE_METRICS:
        nonzero = e[e != 0]
        if len(nonzero) == 0:
            return 1.0, SIGN_FLIP_RUNS, len(e)
        if len(nonzero) <= 16:
            signs = np.array(list(itertools.product((1, -1), repeat=len(nonzero))))
        else:   # Monte Carlo past 2^16 sign patterns, the observed one included
            signs = np.vstack([np.ones(len(nonzero)), np.random.default_rng(0).choice((1, -1), (9999, len(nonzero)))])
        sums = np.abs(signs @ nonzero)
        return float(np.mean(sums >= abs(nonzero.sum()) - 1e-12)), SIGN_FLIP_RUNS, len(e)
    if np.all(e == e[0]):
        return (0.0 if e[0] != 0 else 1.0), EXACT, len(e)
    return float(stats.ttest_1samp(e, 0.0).pvalue), T_PAIRED, len(e)


def stability_floor(records: list[dict], metrics) -> dict:
    """``{(dataset, model): {metric: {seed: [values]}}}``: the stability ``metrics`` (in each
    record's ``robustness``) of every ok clean undefended retrain against its seed's clean cell."""
    out = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        if (r["status"] == "ok" and r["attack"] is None and r["defense"] is None and r["replicate"] > 0
                and r.get("robustness")):
            for metric in metrics:
                if metric in r["robustness"]:
                    out[(r["dataset"], r["model"])][metric][r["seed"]].append(r["robustness"][metric])
    return out


def floor_rows(model_floors: dict) -> list[dict]:
    """The noise floor as rows for the results document: per (dataset, model, metric), the
    standard deviation of one clean run around its seed's mean, and what it rests on."""
    rows = []
    for (dataset, model), entry in sorted(model_floors.items()):
        for metric, value in sorted(entry.items()):
            if not isinstance(value, tuple):
                continue
            variance, df = value
            rows.append({"dataset": dataset, "model": model, "metric": metric, "runs": entry["runs"],
                         "seeds": entry["seeds"], "df": df, "deterministic": entry["deterministic"],
                         "sd": math.sqrt(variance) if df and variance == variance else None})
    return rows
