"""Where models train and score: ``--device auto|cpu|cuda[:N]`` (``auto``: CUDA when present).

On a device, a job's model is built there (RecBole's ``config["device"]``), its training batches,
its scoring and the trainer defenses' and gradient attacks' tensors follow the model's
parameters; everything random (negative sampling, shuffling, a defense's draws) stays on the
CPU's generators, so a run draws the same numbers on any device. Data, poisoned tables, the
learned attacks' surrogates and the metrics stay on the CPU. Several workers may share one GPU
(each is its own process with its own CUDA context). Checked on the CPU only: this path has not
yet run on a GPU (docs/performance.md).
"""
from __future__ import annotations

import re

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    """Refuse a malformed ``--device`` before anything heavy loads (no torch import)."""
    from benchmark.core.errors import BadInput
    if not DEVICE_PATTERN.match(name):
        raise BadInput(f"--device {name!r} is not a device: write auto, cpu, cuda or cuda:N "
                       f"(N: the GPU's index)")


def resolve_device(name: str) -> str:
    """The torch device ``name`` stands for on this machine (``auto``: ``cuda`` when CUDA is
    available, else ``cpu``); BadInput when a CUDA device is asked for and absent."""
    import torch

    from benchmark.core.errors import BadInput
    check_device_name(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if not torch.cuda.is_available():
        raise BadInput(f"--device {name}: this machine has no CUDA device (torch "
                       f"{torch.__version__} sees none): use --device cpu or auto")
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise BadInput(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                       f"numbered from 0")
    return name
