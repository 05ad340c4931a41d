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


# --- torch, only when a node needs it -------------------------------------------------------
# A run of nodes that take numpy arrays (Node.arrays) never imports torch: 1.3 s of the README's
# 3.4 s object removal (issue 13). So the CLI's --threads waits here until torch is imported, and
# a run's default device ("the best available", which asks torch) is resolved at its first torch
# node; a device named other than "cpu" is checked at once (a typo or a missing GPU fails before
# anything runs, as it did).

_pending_threads: list[int] = []  # the thread count asked for before torch was imported


def set_threads(n: int) -> None:
    """torch.set_num_threads(n), now if torch is imported, else at torch_ready()."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        _pending_threads.clear()
    else:
        _pending_threads[:] = [n]


def torch_ready() -> Any:
    """Import torch (first call: applies a pending set_threads) and return it."""
    import torch

    if _pending_threads:
        torch.set_num_threads(_pending_threads.pop())
    return torch


def torch_threads(uses_torch: bool = True) -> int | None:
    """torch's CPU thread count (importing torch), as reports and provenance record it; None for a
    run with no node that uses torch (Node.arrays), whose pixels the count cannot change. Decided
    by the workflow, not by whether this process imported torch: a re-run served from the cache
    records what the run that made the pixels recorded."""
    return torch_ready().get_num_threads() if uses_torch else None


class RunDevice:
    """A run's device, resolved (importing torch) only when a node that uses torch runs."""

    def __init__(self, spec: Any = None):
        self._resolved: Any = None
        if spec in (None, "", "auto", "cpu"):
            self._spec = spec
        else:  # a named GPU or a torch.device: check it now
            self._resolved = pick_device(spec)

    def get(self) -> Any:
        torch_ready()  # every time: a named device imported torch before a pending --threads applied
        if self._resolved is None:
            self._resolved = pick_device(self._spec)
        return self._resolved

    @property
    def resolved(self) -> bool:
        return self._resolved is not None
