"""Which stage module speaks for a flow-matching edit model, from its diffusers pipeline class."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from editgraph.errors import NodeError

# pipeline class name prefix -> stage module (under editgraph.diffusion)
_STAGES = (
    ("Flux2", "flux2"),  # Flux2Pipeline, Flux2KleinPipeline, Flux2KleinInpaintPipeline
    ("FluxKontext", "kontext"),
    ("QwenImageEdit", "qwen"),  # QwenImageEditPipeline, QwenImageEditPlusPipeline, QwenImageEditInpaintPipeline
)


def stages(model: Any, what: str) -> ModuleType:
    """The stage module for `model` (a FlowModel from model.load); a clear error for anything else."""
    import importlib

    pipeline = getattr(model, "pipeline", None)
    if not isinstance(pipeline, str) or not hasattr(model, "component"):
        raise NodeError(
            f"{what} needs a flow-matching edit model (Flux 2 Klein, Flux Kontext, Qwen-Image-Edit (Plus)) from "
            f"model.load, got {type(model).__name__}; Stable Diffusion models use prompt.encode / denoise"
        )
    for prefix, module in _STAGES:
        if pipeline.startswith(prefix):
            return importlib.import_module(f"editgraph.diffusion.{module}")
    supported = ", ".join(p for p, _ in _STAGES)
    raise NodeError(f"{what}: model {model.name!r} is a {pipeline}; editgraph runs these families in stages: {supported}")
