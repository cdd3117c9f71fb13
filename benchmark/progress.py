"""An honest progress bar: it advances by expected job cost, not by cells.

Cells cost from nothing (``not_applicable``, decided before any work) to minutes (a NeuMF model
with a trainer defense), so a bar over cells says little about the time left. Each job is
weighed by the expected seconds of its kind, ``(model, defense kind)``: a prior from this
project's measurements on ml-100k at the ``all`` suite's budgets (``PRIOR_S``, ``DEFENSE_FACTOR``),
replaced, as the run goes, by the mean seconds the finished jobs of that kind really took. The
bar's total is the sum of the weights; tqdm's rate and ETA then speak in expected seconds of
work. The bar shows jobs and cells done beside it.
"""
from __future__ import annotations

import sys
from collections import defaultdict

PRIOR_S = {"Pop": 0.3, "ItemKNN": 1.0, "BPR": 10.0, "LightGCN": 27.0, "NeuMF": 72.0}   # at the plateau
DEFAULT_PRIOR_S = 20.0          # any other model
DEFENSE_FACTOR = {"trainer": 1.5, "detector": 1.0, "preprocessor": 1.0, "inference": 1.1, None: 1.0}
NOT_APPLICABLE_S = 0.01


def job_kind(job) -> tuple:
    return (job.model, job.defense.name if job.defense else None)


class CostProgress:
    """A tqdm bar over expected job cost; ``done(job, records)`` after each finished job."""

    def __init__(self, jobs, file=None):
        from tqdm import tqdm

        from benchmark.cells import inapplicable
        self.weights = {}
        for job in jobs:
            if inapplicable(job):
                self.weights[id(job)] = NOT_APPLICABLE_S
            else:
                kind = job.defense.kind if job.defense else None
                self.weights[id(job)] = PRIOR_S.get(job.model, DEFAULT_PRIOR_S) * DEFENSE_FACTOR[str(kind) if kind else None]
        self.jobs = {id(job): job for job in jobs}
        self.n_jobs, self.n_cells = len(jobs), sum(len(job.cells()) for job in jobs)
        self.jobs_done = self.cells_done = 0
        self.seconds = defaultdict(list)    # kind -> measured seconds of finished jobs
        self.bar = tqdm(total=round(sum(self.weights.values()), 2), unit="s", unit_scale=False,
                        file=file or sys.stderr, dynamic_ncols=True, smoothing=0.05,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        self._postfix()

    def _postfix(self):
        self.bar.set_postfix_str(f"jobs {self.jobs_done}/{self.n_jobs}, cells {self.cells_done}/{self.n_cells}")

    def skipped(self, jobs) -> None:
        """Jobs whose cells were already on disk (``--resume``)."""
        for job in jobs:
            self.jobs_done += 1
            self.cells_done += len(job.cells())
            self.bar.update(self.weights.pop(id(job)))
        self._postfix()

    def done(self, job, records) -> None:
        """One finished job: advance by its weight, learn the real cost of its kind, and reweigh
        the jobs of that kind still to come (the total moves with them)."""
        weight = self.weights.pop(id(job), 0.0)
        self.jobs_done += 1
        self.cells_done += len(records)
        if any(r["status"] == "ok" for r in records):
            spent = max((sum(v for k, v in r["cost"].items() if k.endswith("_s") and isinstance(v, (int, float)))
                         for r in records), default=0.0)
            kind = job_kind(job)
            self.seconds[kind].append(spent)
            mean = sum(self.seconds[kind]) / len(self.seconds[kind])
            for key, other in self.jobs.items():
                if key in self.weights and job_kind(other) == kind and self.weights[key] > NOT_APPLICABLE_S:
                    self.bar.total += mean - self.weights[key]
                    self.weights[key] = mean
            self.bar.total += spent - weight
            weight = spent
        self.bar.update(weight)
        self._postfix()

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()

