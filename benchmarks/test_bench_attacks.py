"""Generation time of each poisoning attack at its largest default budget on ml-100k (split seed
0): heuristic attacks over several rounds; learned attacks once each, on one thread as in the
grid's workers, within the 5-minute ceiling a learned attack is allowed at 5 % fake users.

    .venv/bin/pytest benchmarks/test_bench_attacks.py --benchmark-only -p no:cacheprovider
"""
import pytest

import attacks  # noqa: F401  (fills the registry)
from attacks.base import ATTACKS, AttackContext
from benchmark.core.data import load_dataset, split_dataset
from benchmark.core.targets import choose_targets

HEURISTIC = sorted(n for n, c in ATTACKS.classes.items() if c.family in {"noise", "shilling"})
LEARNED = sorted(n for n, c in ATTACKS.classes.items() if c.family == "learned")
LEARNED_CEILING_S = 300.0


@pytest.fixture(scope="module")
def context():
    split = split_dataset(load_dataset("ml-100k"), seed=0)
    return AttackContext(split, choose_targets(split.train, "unpopular", count=5, seed=0))


@pytest.mark.parametrize("name", HEURISTIC)
def test_generation(benchmark, name, context):
    cls = ATTACKS.classes[name]
    attack = cls(**{cls.budget_param: max(cls.default_sweep)})
    result = benchmark(attack.poison, context, 0)
    benchmark.extra_info.update(result.budget, injected_interactions=result.injected_interactions)
    assert result.injected_interactions > 0


@pytest.mark.parametrize("name", LEARNED)
def test_learned_generation(benchmark, name, context):
    cls = ATTACKS.classes[name]
    attack = cls(**{cls.budget_param: max(cls.default_sweep)})
    result = benchmark.pedantic(attack.poison, args=(context, 0), rounds=1, iterations=1)
    benchmark.extra_info.update(result.budget, injected_interactions=result.injected_interactions,
                                ceiling_s=LEARNED_CEILING_S)
    assert result.n_fake_users == result.budget["fake_users"]
    assert benchmark.stats.stats.max <= LEARNED_CEILING_S
