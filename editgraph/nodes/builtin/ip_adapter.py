"""IP-Adapter nodes: a reference picture steers an SD 1.x / SDXL denoise (style, subject, product).

    ip_adapter.load    an adapter folder (h94/IP-Adapter layout) -> IPAdapter handle
    ip_adapter.encode  one reference picture -> ImageEmbeds   (the CLIP image encoder; keyed by the
                       picture's content, so each reference is encoded once)
    denoise            takes `ip_adapter` + `ip` and `ip_scale` (diffusers' set_ip_adapter_scale)

Changing the prompt or the scale reruns only the denoise and what follows; changing a reference
reruns its encode. The maths live in editgraph/diffusion/ip_adapter.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import InputPath, Node, NodeParams, node
from editgraph.values.sockets import Image, ImageEmbeds, Model

TINY_ADAPTER = "tiny-ip-adapter"  # models/tiny_ip_adapter.py (kept literal: no import of models here)


@node("ip_adapter.load", version="1.0.0", deterministic=True)
class LoadIPAdapter(Node):
    """Load an IP-Adapter (its weights and the CLIP image encoder beside them) so that reference
    pictures can steer an SD 1.x / SDXL denoise. Nothing is read from disk until a node uses it."""

    cost_class = "expensive"  # its handle stays in memory, its ref goes to disk

    class Params(NodeParams):
        adapter: InputPath = Field(
            TINY_ADAPTER, min_length=1,
            description=f"{TINY_ADAPTER} (built in) or a folder in h94/IP-Adapter's layout, relative to the workflow file",
        )
        weight: str = Field(
            "models/ip-adapter_sd15.safetensors", min_length=1, max_length=400, pattern=r"^[^\x00]*\.safetensors$",
            description="the adapter file inside the folder (SDXL: sdxl_models/ip-adapter_sdxl.safetensors); "
            "its image encoder is the image_encoder/ folder beside it",
        )
        dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights' precision once loaded")

    # Adapter names resolve through the tiny-model builder, not as files to find beside an image.
    relocatable = False

    @classmethod
    def source_token(cls, params: NodeParams) -> str | None:
        from editgraph.models.ip_adapter import adapter_hash, resolve_adapter

        return adapter_hash(*resolve_adapter(params.adapter, params.weight))  # type: ignore[attr-defined]

    @classmethod
    def check_sources(cls, params: NodeParams, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """The folder, the .safetensors weight file and its image encoder exist (a tiny adapter
        not built yet is left to the run). Nothing is loaded."""
        from pathlib import Path

        from editgraph.models.errors import ModelError
        from editgraph.models.ip_adapter import resolve_adapter

        name = params.adapter  # type: ignore[attr-defined]
        if not deep or not isinstance(name, str) or Path(name).name == TINY_ADAPTER and not Path(name).exists():
            return []
        try:
            resolve_adapter(name, params.weight)  # type: ignore[attr-defined]
        except ModelError as exc:
            return [("adapter", str(exc))]
        return []

    def run(self, ctx: RunContext) -> Model:
        from editgraph.models.ip_adapter import load_ip_adapter

        ctx.check_cancelled()
        p = self.params
        return load_ip_adapter(p.adapter, p.weight, device=ctx.device, dtype=p.dtype)


@node("ip_adapter.encode", version="1.0.0")
class EncodeIPReference(Node):
    """Read a reference picture (a style sample, a product shot) with the IP-Adapter's CLIP image
    encoder: the embedding that later steers the denoise toward what the picture shows."""

    cost_class = "expensive"  # model work: always worth a disk entry

    model_components = {"adapter": ("image_encoder",)}

    class Params(NodeParams):
        pass

    def run(self, ctx: RunContext, adapter: Model, image: Image) -> ImageEmbeds:
        import torch

        from editgraph.diffusion.ip_adapter import encode_image

        if not hasattr(adapter, "image_encoder"):
            raise NodeError(f"ip_adapter.encode needs an IP-Adapter (from ip_adapter.load), got {type(adapter).__name__}")
        ctx.check_cancelled()
        with torch.inference_mode():
            embeds, negative = encode_image(adapter, image)
        return ImageEmbeds(embeds=embeds.float().clone(), negative=negative.float().clone(), adapter=adapter.content_hash)
