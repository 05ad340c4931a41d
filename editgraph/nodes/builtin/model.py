"""model.load: bring a diffusion model into the graph.

The model is a name (`tiny-sd`, `tiny-sd-inpaint`, `tiny-ip2p`, `medium-sd`: built into the cache
on first use) or a path, relative to the workflow file, to a diffusers folder or a single
.safetensors checkpoint. Its key is the hash of its files, not its path, so editing a weight file
reruns everything made with it and the same files elsewhere share cache entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.models.handle import DiffusionModel
from editgraph.nodes.registry import InputPath, Node, NodeParams, node


@node("model.load", version="1.0.0", deterministic=True)
class LoadModel(Node):
    """Load a Stable Diffusion model (UNet, VAE, text encoder, tokenizer) that later nodes use to
    encode prompts, encode and decode pictures, and denoise. Loads once per process."""

    class Params(NodeParams):
        model: InputPath = Field(
            ...,
            min_length=1,
            description=(
                "a built-in tiny model (tiny-sd, tiny-sd-inpaint, tiny-ip2p, medium-sd) or a path, "
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
        import os

        from editgraph.models.errors import ModelError
        from editgraph.models.loader import model_hash, resolve

        path = resolve(params.model)  # type: ignore[attr-defined]
        digest = model_hash(path)
        wanted = params.hash  # type: ignore[attr-defined]
        if wanted and not digest.startswith(wanted) and os.environ.get("EDITGRAPH_ALLOW_MODEL_MISMATCH") != "1":
            raise ModelError(
                f"model {Path(params.model).name!r} at {path} is not the one this workflow was made with: "  # type: ignore[attr-defined]
                f"expected content hash {wanted}, found {digest}. Point the name at the right files, "
                f"or run with --allow-model-mismatch to use these anyway"
            )
        return digest

    @classmethod
    def check_sources(cls, params: NodeParams) -> list[str]:
        """For `editgraph validate`: the model resolves on this machine and has the pinned hash."""
        from editgraph.models.errors import ModelError

        try:
            cls.source_token(params)
        except ModelError as exc:
            return [str(exc)]
        return []

    # The expected hash only guards; the actual files' hash (source_token) is what is keyed, so a
    # pinned and an unpinned reference to the same files share cache entries.
    unkeyed = ("hash",)

    def run(self, ctx: RunContext) -> DiffusionModel:
        from editgraph.models.loader import load_model

        ctx.check_cancelled()
        return load_model(self.params.model, device=ctx.device, dtype=self.params.dtype)
