"""The progress bar weighs jobs by expected cost, learns the real cost as jobs finish, and its
share done and time left behave under a fake clock: the share never goes back, the time left
is never negative and does not grow while jobs cost what was expected."""
import io

import pytest

from benchmark.cells import inapplicable
from benchmark.plan import plan
from benchmark.progress import NOT_APPLICABLE_S, PRIOR_S, CostProgress
from benchmark.spec import parse_suite
from tests.conftest import TINY


@pytest.fixture()
def jobs():
    return plan(parse_suite({"name": "p", "dataset": TINY, "models": ["BPR", "Pop"], "seeds": 2,
                             "attacks": [{"name": "fgsm", "budgets": [0.5]},
                                         {"name": "random", "budgets": [0.1]}],
                             "defenses": [{"name": "apr"}]}))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def record(seconds, status="ok"):
    return {"status": status, "cost": {"train_s": seconds, "eval_s": 0.0, "epochs": 3}}


def test_weights_follow_expected_cost_and_learn_the_real_one(jobs):
    clock = FakeClock()
    bar = CostProgress(jobs, workers=1, clock=clock, show=False)
    pop_apr = [j for j in jobs if j.model == "Pop" and j.defense is not None]
    assert pop_apr and all(inapplicable(j) for j in pop_apr)
    assert all(bar.weights[id(j)] == NOT_APPLICABLE_S for j in pop_apr)
    bpr = [j for j in jobs if j.model == "BPR" and j.defense is None]
    assert all(bar.weights[id(j)] == PRIOR_S["BPR"] for j in bpr)
    before = bar.left_s()
    clock.now += 2.0
    bar.done(bpr[0], [record(2.0), record(2.0)])   # plain BPR cost 2 s where PRIOR_S["BPR"] were expected
    others = sum(bar.weights[id(j)] for j in bpr[1:])
    assert bar._factor(("BPR", None)) == pytest.approx(2.0 / PRIOR_S["BPR"])
    assert bar.left_s() < before - others * (1 - 2.0 / PRIOR_S["BPR"]) + 1e-9   # the others now count 2 s each
    assert bar.fraction == pytest.approx(PRIOR_S["BPR"] / bar.total)
    assert bar.jobs_done == 1 and bar.cells_done == 2
    bar.skipped(pop_apr)
    assert bar.jobs_done == 1 + len(pop_apr)


def test_share_never_goes_back_and_time_left_counts_down_without_going_negative(jobs):
    """Jobs finishing at exactly their expected cost, in plan order, with the clock moving:
    the share grows, the time left never grows and never goes below zero, and it reaches 0."""
    clock = FakeClock()
    bar = CostProgress(jobs, workers=1, clock=clock, show=False)
    shares, lefts = [bar.fraction], [bar.left_s()]
    for job in jobs:
        cost = bar.weights[id(job)]
        for _ in range(2):                    # the clock runs while the job does
            clock.now += cost / 2
            lefts.append(bar.left_s())
        bar.done(job, [record(cost) for _ in job.cells()])
        shares.append(bar.fraction)
        lefts.append(bar.left_s())
    assert all(b >= a for a, b in zip(shares, shares[1:])) and shares[-1] == pytest.approx(1.0)
    assert all(x >= 0 for x in lefts) and lefts[-1] == 0.0
    assert all(b <= a + 1e-9 for a, b in zip(lefts, lefts[1:]))


def test_a_job_running_past_every_estimate_leaves_the_time_left_at_zero_not_negative(jobs):
    clock = FakeClock()
    bar = CostProgress(jobs, workers=2, clock=clock, show=False)
    clock.now += 10 * bar.total
    assert bar.left_s() == 0.0 and bar.fraction == 0.0


def test_the_first_line_states_the_expected_time(jobs):
    out = io.StringIO()
    bar = CostProgress(jobs, workers=2, file=out, title="suite p: ")
    bar.close()
    line = out.getvalue().splitlines()[0]
    assert line == "suite p: " + bar.plan_line()      # before the bar is first drawn
    expected = bar.total / 2
    assert f"{len(jobs)} jobs" in line and "2 worker(s)" in line
    assert f"{int(expected // 60):02d}:{int(round(expected)) % 60:02d}" in line


def test_the_drawn_bar_shows_time_left_and_counts(jobs):
    out = io.StringIO()
    bar = CostProgress(jobs, workers=1, file=out, clock=FakeClock())
    bar.done(jobs[0], [record(1.0) for _ in jobs[0].cells()])
    bar.close()
    text = out.getvalue()
    assert "left; jobs 1/" in text and "elapsed" in text and "<-" not in text


def test_a_table_made_by_a_job_does_not_teach_its_kind(jobs):
    """A job that made its poisoned table records the generation seconds (``attack_s``); they are
    the table's, shared by every job on it, so its kind learns from its own seconds only."""
    bar = CostProgress(jobs, workers=1, clock=FakeClock(), show=False)
    poisoned = next(j for j in jobs if j.model == "BPR" and j.defense is None and j.poisoning is not None)
    made = {"status": "ok", "attack": {"family": "shilling"}, "cost": {"attack_s": 100.0, "train_s": 2.0}}
    bar.done(poisoned, [made])
    assert bar._factor(("BPR", None)) == pytest.approx(2.0 / PRIOR_S["BPR"])
