"""What a running node may use besides its params and inputs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from editgraph.errors import Cancelled
from editgraph.settings import Settings

if TYPE_CHECKING:
    import torch


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


@dataclass
class RunContext:
    node_id: str
    node_type: str
    # the run's torch.device; a node that takes numpy arrays (Node.arrays) gets the name "cpu", so
    # that running it resolves no device and imports no torch
    device: torch.device = field(default_factory=_cpu)
    on_progress: Callable[[int, int, Any], None] | None = None  # (step, total, preview or None)
    cancel: threading.Event | None = None
    settings: Settings | None = None  # the run's options (model-mismatch override ...)
    # Paid engines: the run's spend ledger (engines.spend.Ledger), which authorizes each call
    # against --max-cost and records what it cost.
    ledger: Any = None
    # A hosted call waits on the network inside this: in a batch it lets other rows' local work
    # run meanwhile (batch turnstile); elsewhere it does nothing.
    waiting: Callable[[], AbstractContextManager] = nullcontext
    # memo(key, compute) -> (value, was_cached): caches one piece of work inside a node (one paid
    # call of several) in the run's cache, so a node that fails midway never pays twice.
    memo: Callable[[str, Callable[[], Any]], tuple[Any, bool]] | None = None
    input_fps: dict[str, str] = field(default_factory=dict)  # input name -> fingerprint of its value

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report step k of n (emits a progress event) and honour a pending cancel. `preview`: what
        the node has so far (a denoise's current latents), for listeners that draw a live look."""
        self.check_cancelled()
        if self.on_progress is not None:
            self.on_progress(step, total, preview)

    def check_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"node '{self.node_id}' ({self.node_type}) cancelled")
