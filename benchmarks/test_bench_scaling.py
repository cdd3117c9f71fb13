"""Cost versus data size (ml-100k, synthetic ml-1m, synthetic 10x ml-1m), each in its own process.

Run: ``.venv/bin/pytest benchmarks/test_bench_scaling.py -s -p no:cacheprovider`` (several minutes).
"""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("size", ["ml-100k", "ml-1m", "10x-ml-1m"])
def test_cost_versus_data_size(size):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", size], capture_output=True,
                          text=True, cwd=ROOT, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\n" + json.dumps(row))
    assert row["peak_rss_mb"] > 0
