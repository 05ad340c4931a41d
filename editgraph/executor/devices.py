"""Which torch device a run uses: named (`cpu`, `cuda`, `cuda:1`, `mps`) or the best available."""

from __future__ import annotations

import re
from typing import Any

from editgraph.errors import EditgraphError

_NAME = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def pick_device(name: str | None = None) -> Any:
    """A torch.device. None or "auto": CUDA if present, else Apple's MPS, else the CPU."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not _NAME.match(name):
        raise EditgraphError(f"--device must be cpu, cuda, cuda:N, mps or auto, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EditgraphError(f"--device {name}: this machine has no CUDA device torch can use (torch {torch.__version__})")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise EditgraphError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0..)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EditgraphError("--device mps: Apple's Metal backend is not available here")
    return torch.device(name)
