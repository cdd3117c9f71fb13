"""The progress bar weighs jobs by expected cost and learns the real cost as jobs finish."""
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


def record(seconds, status="ok"):
    return {"status": status, "cost": {"train_s": seconds, "eval_s": 0.0, "epochs": 3}}


def test_weights_follow_expected_cost_and_learn_the_real_one(jobs):
    bar = CostProgress(jobs, file=io.StringIO())
    pop_apr = [j for j in jobs if j.model == "Pop" and j.defense is not None]
    assert pop_apr and all(inapplicable(j) for j in pop_apr)
    assert all(bar.weights[id(j)] == NOT_APPLICABLE_S for j in pop_apr)
    bpr = [j for j in jobs if j.model == "BPR" and j.defense is None]
    assert all(bar.weights[id(j)] == PRIOR_S["BPR"] for j in bpr)
    total = bar.bar.total
    bar.done(bpr[0], [record(2.0), record(2.0)])
    # the job's own weight became its real cost, the other plain BPR jobs now weigh 2 s each
    assert all(bar.weights[id(j)] == 2.0 for j in bpr[1:])
    assert bar.bar.total == pytest.approx(total - PRIOR_S["BPR"] * len(bpr) + 2.0 * len(bpr))
    assert bar.bar.n == pytest.approx(2.0) and bar.jobs_done == 1 and bar.cells_done == 2
    bar.skipped(pop_apr)
    assert bar.jobs_done == 1 + len(pop_apr)
    bar.close()
