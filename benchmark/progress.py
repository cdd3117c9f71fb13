"""An honest progress bar: it advances by expected job cost, not by cells, and its time left
comes from the cost model, never from a rate measured over a few jobs.

Cells cost from nothing (``not_applicable``, decided before any work) to minutes (a NeuMF model
with a trainer defense), so a bar over cells says little about the time left. Each job is
weighed by the expected seconds of its kind, ``(model, defense kind)``: a prior from this
project's measurements on ml-100k at the ``all`` suite's budgets (``PRIOR_S``,
``DEFENSE_FACTOR``), plus its share of making the poisoned table it trains on
(``GENERATION_PRIOR_S``, spread over the jobs that share the table). The bar's share done is
the finished jobs' weight over the plan's (it only grows). The time left is the unfinished
jobs' weight, each job's own part scaled by how long the finished jobs of its kind really took
against their prior (or, for a kind not seen yet, all finished jobs together; a table's
generation, recorded by the job that made it, is not part of what a kind learns), plus its
table share at the prior, divided by the workers, and counted down by the clock between two
finished jobs; it is never negative. ``plan_line`` states the plan and its expected time
before the first job.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict

from benchmark.core.kinds import EVASION_FAMILIES

# Seconds of a job at the plateau, one worker of two on this 2-core machine (docs/performance.md).
PRIOR_S = {"Pop": 0.5, "ItemKNN": 1.5, "EASE": 2.0, "BPR": 5.0, "LightGCN": 17.0, "NeuMF": 72.0,
           # the sequential suite's fixed epochs (8 and 6, about 11 s each); BERT4Rec trains on RecBole's
           # per-prefix instances, minutes an epoch on one thread (SASRec's: 5 min): a rough prior
           "SASRec": 90.0, "GRU4Rec": 70.0, "BERT4Rec": 1800.0}
DEFAULT_PRIOR_S = 20.0          # any other model
DEFENSE_FACTOR = {"trainer": 2.0, "detector": 1.0, "preprocessor": 1.0, "inference": 1.1, None: 1.0}
# Seconds to make one poisoned table at 3-5 % (the heuristic attacks take milliseconds).
GENERATION_PRIOR_S = {"revadv": 150.0, "gta": 200.0, "aush": 60.0, "legup": 50.0, "dlattack": 50.0,
                      "pga": 12.0, "evasive": 5.0, "rapu_r": 1.0, "sequence_generator": 110.0}
NOT_APPLICABLE_S = 0.01


def job_kind(job) -> tuple:
    return (job.model, job.defense.name if job.defense else None)


def expected_s(job) -> float:
    """The prior seconds of one job on one worker."""
    from benchmark.cells import inapplicable
    if inapplicable(job):
        return NOT_APPLICABLE_S
    kind = job.defense.kind if job.defense else None
    return PRIOR_S.get(job.model, DEFAULT_PRIOR_S) * DEFENSE_FACTOR[str(kind) if kind else None]


def _generation_shares(jobs) -> list[float]:
    """Each job's share of making its poisoned table (``GENERATION_PRIOR_S``; made once, shared)."""
    from benchmark.cells import attack_variant, inapplicable
    keys = [(attack_variant(job.poisoning), job.seed) if job.poisoning is not None and not inapplicable(job) else None
            for job in jobs]
    sharing = defaultdict(int)
    for key in filter(None, keys):
        sharing[key] += 1
    return [GENERATION_PRIOR_S.get(job.poisoning.name, 0.0) / sharing[key] if key else 0.0
            for job, key in zip(jobs, keys)]


def _poisoned(record: dict) -> bool:
    """Whether a record's ``attack_s`` is its poisoned table's generation (made once, shared)."""
    return bool(record.get("attack")) and record["attack"].get("family") not in EVASION_FAMILIES


def _clock_text(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class CostProgress:
    """Share done, time left and counts; ``done(job, records)`` after each finished job,
    ``skipped(jobs)`` for jobs found on disk. ``clock`` is injectable (tests use a fake one);
    ``show=False`` keeps the numbers without drawing a bar; shown, the bar's first line is
    ``title`` followed by ``plan_line()``."""

    def __init__(self, jobs, workers: int = 1, file=None, clock=time.monotonic, show: bool = True,
                 title: str = ""):
        self.own = {id(job): expected_s(job) for job in jobs}                    # the job's own work
        self.shares = dict(zip((id(job) for job in jobs), _generation_shares(jobs)))  # its table's share
        self.weights = {key: self.own[key] + self.shares[key] for key in self.own}
        self.jobs = {id(job): job for job in jobs}
        self.total = sum(self.weights.values())
        self.workers, self.clock = max(1, workers), clock
        self.n_jobs, self.n_cells = len(jobs), sum(len(job.cells()) for job in jobs)
        self.jobs_done = self.cells_done = 0
        self.done_weight = 0.0
        self.spent = defaultdict(lambda: [0.0, 0.0])   # kind -> [measured seconds, weight] of finished jobs
        self.started = self.last_event = clock()
        self.left_at_event = self._estimate_left()
        self.bar = None
        if show:
            from tqdm import tqdm
            print(f"{title}{self.plan_line()}", file=file or sys.stderr, flush=True)
            self.bar = tqdm(total=1.0, file=file or sys.stderr, dynamic_ncols=True, mininterval=1.0,
                            bar_format="{l_bar}{bar}| {postfix}")
            self._draw()

    def plan_line(self) -> str:
        """The plan and its expected time, from the cost model (before any job ran)."""
        return (f"{self.n_jobs} jobs, {self.n_cells} cells on {self.workers} worker(s): expected about "
                f"{_clock_text(self.total / self.workers)} (cost model of benchmark/progress.py; "
                f"refined as jobs finish)")

    @property
    def fraction(self) -> float:
        return self.done_weight / self.total if self.total else 1.0

    def _factor(self, kind) -> float:
        measured, weight = self.spent.get(kind, (0.0, 0.0))
        if weight > 0:
            return measured / weight
        measured = sum(m for m, _ in self.spent.values())
        weight = sum(w for _, w in self.spent.values())
        return measured / weight if weight > 0 else 1.0

    def _estimate_left(self) -> float:
        left = sum(self.own[key] * self._factor(job_kind(self.jobs[key])) + self.shares[key] for key in self.weights)
        return left / self.workers

    def left_s(self) -> float:
        """Seconds left: the estimate at the last finished job, counted down by the clock."""
        return max(0.0, self.left_at_event - (self.clock() - self.last_event))

    def _event(self) -> None:
        self.last_event = self.clock()
        self.left_at_event = self._estimate_left()
        self._draw()

    def _draw(self) -> None:
        if self.bar is None:
            return
        self.bar.n = min(self.fraction, 1.0)
        self.bar.set_postfix_str(f"{_clock_text(self.clock() - self.started)} elapsed, about "
                                 f"{_clock_text(self.left_s())} left; jobs {self.jobs_done}/{self.n_jobs}, "
                                 f"cells {self.cells_done}/{self.n_cells}", refresh=False)
        self.bar.refresh()

    def skipped(self, jobs) -> None:
        """Jobs whose cells were already on disk (``--resume``): done, at no cost."""
        for job in jobs:
            self.jobs_done += 1
            self.cells_done += len(job.cells())
            self.done_weight += self.weights.pop(id(job), 0.0)
        self._event()

    def done(self, job, records) -> None:
        """One finished job: its weight is done, and what it cost teaches the factor of its kind."""
        weight = self.weights.pop(id(job), 0.0)
        self.jobs_done += 1
        self.cells_done += len(records)
        self.done_weight += weight
        if any(r["status"] == "ok" for r in records) and weight > NOT_APPLICABLE_S:
            spent = max((sum(v for k, v in r["cost"].items() if k.endswith("_s") and isinstance(v, (int, float))
                             and not (k == "attack_s" and _poisoned(r)))
                         for r in records), default=0.0)
            totals = self.spent[job_kind(job)]
            totals[0] += spent
            totals[1] += self.own[id(job)]
        self._event()

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
