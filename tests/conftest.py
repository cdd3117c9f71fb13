"""Shared fixtures: the tiny checked-in dataset and its split."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "data" / "tiny")

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny():
    from benchmark.data import load_dataset
    return load_dataset(TINY)


@pytest.fixture(scope="session")
def tiny_split(tiny):
    from benchmark.data import split_dataset
    return split_dataset(tiny, seed=0)


def run_cli(module: str, *args, cwd=None, timeout=600):
    """Run ``python -m module args`` in a subprocess; returns CompletedProcess (text)."""
    import subprocess
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout)
