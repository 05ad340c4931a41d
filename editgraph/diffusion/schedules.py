"""Schedulers by name and the generator every seeded draw comes from (diffusers' pipelines' choices)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

from editgraph.errors import NodeError

SchedulerName = Literal["euler", "euler_a", "ddim", "dpm++ 2m", "unipc", "pndm"]

# Scheduler name -> diffusers class name. "dpm++ 2m" is DPMSolverMultistepScheduler's default
# (algorithm_type="dpmsolver++", solver_order=2).
SCHEDULER_CLASSES: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++ 2m": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "pndm": "PNDMScheduler",
}


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    """A fresh scheduler (they are stateful) of the named kind, from the model's scheduler config."""
    import diffusers

    if name not in SCHEDULER_CLASSES:
        raise NodeError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULER_CLASSES)}")
    return getattr(diffusers, SCHEDULER_CLASSES[name]).from_config(config)


def generator_for(seed: int, device: Any = "cpu") -> torch.Generator:
    """A seeded generator on the device the model runs on, where diffusers' pipelines draw when
    handed a generator of that device: results are bit-identical per device, not across devices."""
    import torch

    return torch.Generator(device).manual_seed(int(seed))
