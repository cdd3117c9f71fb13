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
    from benchmark.core.data import load_dataset
    return load_dataset(TINY)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    results of many small ops that must not depend on the thread count."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_split(tiny):
    from benchmark.core.data import split_dataset
    return split_dataset(tiny, seed=0)


@pytest.fixture(scope="session")
def tiny_loo_split(tiny):
    """The tiny dataset's leave-one-out split by time (what sequential models train and are scored on)."""
    from benchmark.core.data import split_leave_one_out
    return split_leave_one_out(tiny, seed=0)


def without_timings(record: dict) -> dict:
    """A record without what the clock decides (its costs and history, a defense's training-time
    ratio): two runs of the same cell must agree on the rest."""
    out = {k: v for k, v in record.items() if k not in ("cost", "history")}
    if out.get("defense_effect"):
        out["defense_effect"] = {k: v for k, v in out["defense_effect"].items() if k != "train_time_ratio"}
    return out


def run_cli(module: str, *args, cwd=None, timeout=600):
    """Run ``python -m module args`` in a subprocess; returns CompletedProcess (text)."""
    import subprocess
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout)


HOSTILE_TITLES = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')


@pytest.fixture(scope="session")
def product_results(tmp_path_factory):
    """``results.json`` of a real run of the product (``tests/data/sample_suite.yaml``), once per
    test session, on a copy of the tiny dataset whose item titles are XSS payloads: what the
    compare and report tests read."""
    from benchmark.run import main
    folder = tmp_path_factory.mktemp("sample")
    data = folder / "hostile"
    data.mkdir()
    (data / "hostile.inter").write_text((Path(TINY) / "tiny.inter").read_text())
    rows = (Path(TINY) / "tiny.item").read_text().splitlines()
    header, items = rows[0], [row.split("\t") for row in rows[1:]]
    (data / "hostile.item").write_text("\n".join(
        [header] + [f"{item}\t{HOSTILE_TITLES[i % 2]} {item}\t{genre}"
                    for i, (item, _, genre) in enumerate(items)]) + "\n")
    out = folder / "run"
    assert main(["--suite", str(ROOT / "tests" / "data" / "sample_suite.yaml"), "--dataset", str(data),
                 "--out", str(out), "--workers", "1", "--quiet"]) == 0
    return out / "results.json"


def first_defended_batch(split, defense, model="BPR", **settings):
    """A model built on ``split``, its lean trainer with ``defense`` started, and the trainer's
    first batch (fixed seed): what the per-user-eps defense tests inspect."""
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    built = build_model(model, split, seed=0)
    defaults = dict(epochs=2, patience=10, learning_rate=0.01, batch_size=256)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings(**{**defaults, **settings}), 0, defense=defense)
    defense.start(built.model, trainer)
    trainer.generator.manual_seed(123)
    return built, trainer, next(iter(trainer.batches()))


@pytest.fixture(scope="session", autouse=True)
def _no_anomaly_detection():
    """Collecting tests/test_model_zoo.py imports RecBole's SINE module, which switches torch's
    anomaly detection on for the whole process (benchmark.core.models._model_modules): off again
    for the session, as the product keeps it."""
    import torch
    torch.autograd.set_detect_anomaly(False)
    yield
