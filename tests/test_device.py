"""``--device``: ``auto`` is CUDA when present, else the CPU; records do not depend on it. On
this CPU machine ``--device cpu`` and ``--device auto`` take the same path (the model built on
the resolved device, batches and scores moved to and from it) and must give identical records;
a CUDA device asked for where there is none is refused in one line before any work."""
import json

import pytest
import torch

from benchmark.core.device import resolve_device
from benchmark.core.errors import BadInput
from tests.conftest import TINY, run_cli, without_timings

SUITE = {"name": "device", "dataset": TINY, "models": ["BPR", "Pop"], "noise_floor": 1,
         "training": {"epochs": 2, "batch_size": 256}, "targets": {"policy": "unpopular", "count": 3},
         "attacks": [{"name": "random", "budgets": [0.1], "params": {"filler_items": 5}},
                     {"name": "fgsm", "budgets": [0.5]}],
         "defenses": [{"name": "apr"}, {"name": "gan"}, {"name": "pca_detector"}]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine auto is the GPU")
def test_cpu_and_auto_give_identical_records_on_a_machine_without_cuda(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps(SUITE))
    documents = {}
    for device in ("cpu", "auto"):
        out = tmp_path / device
        proc = run_cli("benchmark.run", "--suite", suite, "--out", out, "--workers", "1", "--quiet",
                       "--device", device)
        assert proc.returncode == 0, proc.stderr
        documents[device] = json.loads((out / "results.json").read_text())
        assert "1, local, cpu</dd>" in (out / "report.html").read_text()   # provenance: workers, backend, device
    cpu, auto = ({r["cell_id"]: without_timings(r) for r in documents[d]["records"]} for d in ("cpu", "auto"))
    assert cpu == auto and len(cpu) > 5
    assert "failed" not in {r["status"] for r in cpu.values()}
    assert {r["defense"]["name"] for r in cpu.values() if r["model"] == "BPR" and r["status"] == "ok" and r["defense"]} \
        == {"apr", "gan", "pca_detector"}
    assert documents["cpu"]["run"]["device"] == documents["auto"]["run"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none_is_refused_in_one_line(tmp_path):
    with pytest.raises(BadInput, match="no CUDA device"):
        resolve_device("cuda:0")
    proc = run_cli("benchmark.run", "--suite", "smoke", "--device", "cuda", "--out", tmp_path / "o")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:-1", "CUDA", "cpu "])
def test_malformed_devices_are_refused(name):
    with pytest.raises(BadInput, match="is not a device"):
        resolve_device(name)
