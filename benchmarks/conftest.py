"""Shared set-up of the performance benchmarks (run on request: ``make bench``).

Every benchmark measures its reference (a bare PyTorch loop, bare ``U @ I.T`` + top-k, or stock
RecBole) in the same test, and records ``ratio = ours / reference`` (minimum over rounds) in
``extra_info``, printed at the end and saved with ``--benchmark-json``.
"""
import time

import numpy as np
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
    from benchmark.data import load_dataset, split_dataset
    return split_dataset(load_dataset("ml-100k"), seed=0)


def synthetic_split(n_users: int, n_items: int, n_inter: int, seed: int = 0):
    """A power-law interaction table of the given size, generated here (no download)."""
    from benchmark.data import Dataset, Interactions, split_dataset
    rng = np.random.default_rng(seed)
    per_user = np.maximum(3, rng.zipf(1.6, n_users).clip(max=n_items // 2))
    per_user = np.maximum(3, (per_user / per_user.sum() * n_inter).astype(np.int64))
    users = np.repeat(np.arange(n_users), 4 * per_user)   # drawn 4x over: duplicates collapse
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=users.size, p=popularity / popularity.sum())
    keys = np.unique(users * n_items + items)
    if keys.size > n_inter:   # exactly the requested number of distinct interactions
        keys = np.sort(rng.choice(keys, size=n_inter, replace=False))
    users, items = keys // n_items, keys % n_items
    keep = np.bincount(users, minlength=n_users)[users] >= 3
    kept_users, users = np.unique(users[keep], return_inverse=True)
    items = items[keep]
    inter = Interactions.build(users, items, np.ones(users.size), kept_users.size, n_items)
    ds = Dataset(name=f"synthetic-{n_users}x{n_items}", interactions=inter,
                 user_tokens=kept_users.astype(str), item_tokens=np.arange(n_items).astype(str))
    return split_dataset(ds, seed)
