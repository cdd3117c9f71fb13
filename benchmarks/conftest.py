"""Shared set-up of the performance benchmarks (run on request: ``make bench``).

Every benchmark measures its reference (a bare PyTorch loop, bare ``U @ I.T`` + top-k, or stock
RecBole) in the same test, and records ``ratio = ours / reference`` (minimum over rounds) in
``extra_info``, printed at the end and saved with ``--benchmark-json``.
"""
import time

import pytest
import torch

RATIOS: list[tuple[str, float, float, float]] = []


def best_of(fn, rounds: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(benchmark, ours, reference, rounds: int = 9) -> float:
    """Time ``ours`` with pytest-benchmark and ``reference`` right before each of its rounds, so
    that both see the same machine state (this shared 2-core machine drifts by 2x between
    minutes); returns the reference's best time."""
    reference_times = []

    def run_reference():
        t = time.perf_counter()
        reference()
        reference_times.append(time.perf_counter() - t)

    benchmark.pedantic(ours, setup=run_reference, rounds=rounds, warmup_rounds=1)
    return min(reference_times)


def record_ratio(benchmark, name: str, reference_s: float) -> float:
    ours = benchmark.stats.stats.min
    ratio = ours / reference_s
    benchmark.extra_info.update({"reference_s": reference_s, "ours_s": ours, "ratio": ratio})
    RATIOS.append((name, ours, reference_s, ratio))
    return ratio


def pytest_terminal_summary(terminalreporter):
    if RATIOS:
        terminalreporter.write_sep("-", "ours / reference (min over rounds, same run)")
        for name, ours, ref, ratio in RATIOS:
            terminalreporter.write_line(f"{name:<48} ours {ours * 1e3:9.1f} ms   ref {ref * 1e3:9.1f} ms   ratio {ratio:6.2f}")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ml100k_split():
    from benchmark.core.data import load_dataset, split_dataset
    return split_dataset(load_dataset("ml-100k"), seed=0)
