"""model.load: bring a diffusion model into the graph.

The model is a name (`tiny-sd`, `tiny-sd-inpaint`, `tiny-ip2p`, `medium-sd`, `tiny-sdxl`: built into the cache
on first use) or a path, relative to the workflow file, to a diffusers folder or a single
.safetensors checkpoint. Its key is the hash of its files, not its path, so editing a weight file
reruns everything made with it and the same files elsewhere share cache entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from editgraph.models.handle import DiffusionModel
from editgraph.models.tiny import TINY_NAMES
from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import InputPath, Node, NodeParams, node


@node("model.load", version="1.0.1", deterministic=True)
class LoadModel(Node):
    """Load a Stable Diffusion model (UNet, VAE, text encoder, tokenizer) that later nodes use to
    encode prompts, encode and decode pictures, and denoise. Loads once per process."""

    cost_class = "expensive"  # seconds to load; its handle stays in memory, its ref goes to disk

    class Params(NodeParams):
        model: InputPath = Field(
            ...,
            min_length=1,
            description=(
                f"a built-in tiny model ({', '.join(TINY_NAMES)}) or a path, "
                "relative to the workflow file, to a diffusers folder or a .safetensors checkpoint"
            ),
        )
        dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights' precision once loaded")
        hash: str = Field(
            "",
            pattern=r"^([0-9a-f]{12,64})?$",
            description="the content hash (or its first 12+ hex digits) the workflow was made with; other files are an error",
        )

    @classmethod
    def source_token(cls, params: NodeParams) -> str | None:
        from editgraph.models.loader import model_hash, resolve

        return model_hash(resolve(params.model))  # type: ignore[attr-defined]

    @classmethod
    def check_sources(cls, params: NodeParams, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """The model resolves on this machine and, when the workflow pins one, has that content
        hash (unless the run allows a mismatch). Nothing is loaded, and a tiny model that is not
        built yet is left to the run that needs it."""
        from editgraph.models.errors import ModelError
        from editgraph.models.loader import model_hash, resolve, tiny_is_built
        from editgraph.models.single_file import check_checkpoint_file
        from editgraph.models.tiny import TINY_NAMES

        if not deep:
            return []
        try:
            path = resolve(params.model, build=False)  # type: ignore[attr-defined]
            if path.is_file():
                check_checkpoint_file(path)  # a pickle checkpoint: invalid before anything runs
            if path.name in TINY_NAMES and not tiny_is_built(path):
                return []
            wanted = params.hash  # type: ignore[attr-defined]
            if not wanted or (settings is not None and settings.allow_model_mismatch):
                return []
            digest = model_hash(path)
        except ModelError as exc:
            return [("model", str(exc))]
        if not digest.startswith(wanted):
            return [("model", (
                f"model {Path(params.model).name!r} at {path} is not the one this workflow was made with: "  # type: ignore[attr-defined]
                f"expected content hash {wanted}, found {digest}. Point the name at the right files, "
                f"or run with --allow-model-mismatch to use these anyway"
            ))]
        return []

    @classmethod
    def model_kind(cls, params: NodeParams) -> tuple[str, str] | None:
        """A built-in model's kind from its spec; a folder's from its UNet's input channels."""
        import json

        from editgraph.models.errors import ModelError
        from editgraph.models.loader import resolve
        from editgraph.models.tiny import TINY_MODELS

        name = getattr(params, "model", None)
        if not isinstance(name, str) or not name:
            return None
        try:
            path = resolve(name, build=False)
        except ModelError:
            return None  # check_sources reports it
        if path.name in TINY_MODELS:
            return path.name, TINY_MODELS[path.name].kind
        try:
            channels = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8")).get("in_channels")
        except (OSError, ValueError, AttributeError):
            return None  # a single-file checkpoint or an unusual folder: known once loaded
        return path.name, {4: "base", 9: "inpaint", 8: "instruct"}.get(channels, f"{channels}-channel")

    # Model names resolve through the model registry, not as files to find beside an image.
    relocatable = False

    # The expected hash only guards; the actual files' hash (source_token) is what is keyed, so a
    # pinned and an unpinned reference to the same files share cache entries.
    unkeyed = ("hash",)

    def run(self, ctx: RunContext) -> DiffusionModel:
        from editgraph.models.loader import load_model

        ctx.check_cancelled()
        return load_model(self.params.model, device=ctx.device, dtype=self.params.dtype)
