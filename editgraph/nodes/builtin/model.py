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
from editgraph.values.sockets import Model


@node("model.load", version="1.1.3", deterministic=True)
class LoadModel(Node):
    """Load a diffusion model (SD's UNet, VAE, text encoder, tokenizer; a flow model's transformer,
    VAE and text encoder, optionally with the transformer from one .safetensors/.gguf file) that
    later nodes use to encode prompts, encode and decode pictures, and denoise. Loads once per process."""

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
        transformer: InputPath | None = Field(
            None,
            description=(
                "Flux 2 / Kontext / Qwen-Image-Edit: a .safetensors or .gguf file holding the transformer "
                "(original or diffusers keys; GGUF quantized), loaded with `model`'s folder for every config and the other components"
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
        from editgraph.models.loader import model_hash, resolve, resolve_transformer

        single = resolve_transformer(params.transformer, model=params.model)  # type: ignore[attr-defined]
        return model_hash(resolve(params.model), transformer=single)  # type: ignore[attr-defined]

    @classmethod
    def check_sources(cls, params: NodeParams, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """The model resolves on this machine and, when the workflow pins one, has that content
        hash (unless the run allows a mismatch). Nothing is loaded, and a tiny model that is not
        built yet is left to the run that needs it."""
        from editgraph.models.errors import ModelError
        from editgraph.models.loader import model_hash, resolve, resolve_transformer, tiny_is_built
        from editgraph.models.tiny import TINY_NAMES

        if not deep:
            return []
        try:
            single = resolve_transformer(params.transformer, model=params.model)  # type: ignore[attr-defined]
        except ModelError as exc:
            return [("transformer", str(exc))]  # a pickle or missing file: invalid before anything runs
        try:
            path = resolve(params.model, build=False)  # type: ignore[attr-defined]
            if path.is_file():
                from editgraph.models.single_file import check_checkpoint_file

                check_checkpoint_file(path)  # a pickle checkpoint: invalid before anything runs
            if path.name in TINY_NAMES and not tiny_is_built(path):
                return []
            wanted = params.hash  # type: ignore[attr-defined]
            if not wanted or (settings is not None and settings.allow_model_mismatch):
                return []
            digest = model_hash(path, transformer=single)
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
        """A built-in model's kind from its spec; a flow-matching folder's ("flow") from its
        model_index.json; an SD folder's from its UNet's input channels."""
        import json

        from editgraph.models.errors import ModelError
        from editgraph.models.flow_loader import is_flow_index
        from editgraph.models.loader import resolve
        from editgraph.models.tiny import TINY_MODELS
        from editgraph.models.tiny_flow import FLOW_MODELS

        name = getattr(params, "model", None)
        if not isinstance(name, str) or not name:
            return None
        try:
            path = resolve(name, build=False)
        except ModelError:
            return None  # check_sources reports it
        if path.name in TINY_MODELS:
            return path.name, TINY_MODELS[path.name].kind
        if path.name in FLOW_MODELS:
            return path.name, "flow"
        try:
            if is_flow_index(json.loads((path / "model_index.json").read_text(encoding="utf-8"))):
                return path.name, "flow"
        except (OSError, ValueError, AttributeError):
            pass  # no index (a single file): an SD folder is told by its UNet below
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
        from editgraph.models.offload import load_device

        ctx.check_cancelled()
        p = self.params
        # Under a CPU offload mode the weights load onto the CPU and visit the device per node.
        offload = ctx.settings.offload if ctx.settings is not None else "none"
        return load_model(p.model, device=load_device(ctx.device, offload), dtype=p.dtype, transformer=p.transformer)


@node("model.lora", version="1.0.0")
class ApplyLora(Node):
    """Apply a LoRA (a small add-on trained for a style, a character, a product) to the model at a
    scale, so the pictures it paints take on what the LoRA learned. Chain several for several LoRAs.
    The base model is not reloaded, and nodes using only parts the LoRA leaves alone (a UNet-only
    LoRA: the prompt encode, the VAE) keep their cached results when it or its scale changes."""

    wraps_model = "model"  # the output is the input model with adapters on top

    class Params(NodeParams):
        lora: InputPath = Field(
            ..., min_length=1,
            description="a .safetensors LoRA (diffusers or kohya layout): a path relative to the workflow file, or a registered name",
        )
        scale: float = Field(1.0, ge=-10.0, le=10.0, description="how strongly it applies: 0 = not at all, 1 = as trained")
        hash: str = Field(
            "",
            pattern=r"^([0-9a-f]{12,64})?$",
            description="the content hash (or its first 12+ hex digits) the workflow was made with; other files are an error",
        )

    # The pinned hash only guards; the file's hash (source_token) is what is keyed.
    unkeyed = ("hash",)

    @classmethod
    def source_token(cls, params: NodeParams) -> str | None:
        from editgraph.filehash import memo_digest
        from editgraph.models.lora import resolve_lora

        return memo_digest(resolve_lora(params.lora))  # type: ignore[attr-defined]

    @classmethod
    def check_sources(cls, params: NodeParams, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """The file resolves, is a size-capped safetensors file holding LoRA weights only (its
        header read, no tensor), and has the pinned hash when the workflow pins one."""
        from editgraph.filehash import memo_digest
        from editgraph.models.errors import ModelError
        from editgraph.models.lora import check_lora_file, resolve_lora

        value = params.lora  # type: ignore[attr-defined]
        try:
            path = resolve_lora(value)
            check_lora_file(path)
            wanted = params.hash  # type: ignore[attr-defined]
            if not deep or not wanted or (settings is not None and settings.allow_model_mismatch):
                return []
            digest = memo_digest(path)
        except ModelError as exc:
            return [("lora", str(exc))]
        if not digest.startswith(wanted):
            return [("lora", (
                f"LoRA {Path(value).name!r} at {path} is not the one this workflow was made with: expected content hash "
                f"{wanted}, found {digest}. Point the path at the right file, or run with --allow-model-mismatch"
            ))]
        return []

    def run(self, ctx: RunContext, model: Model) -> Model:
        from editgraph.errors import NodeError
        from editgraph.filehash import memo_digest
        from editgraph.models.lora import LoraModel, check_lora_file, make_spec, resolve_lora

        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise NodeError("model.lora needs the peft package (diffusers applies LoRAs through it): pip install 'editgraph[lora]'")
        path = resolve_lora(self.params.lora)
        layout, _ = check_lora_file(path)
        digest = memo_digest(path)
        base, applied = (model.base, model.loras) if isinstance(model, LoraModel) else (model, ())
        if not (hasattr(base, "unet") or hasattr(base, "component")):
            raise NodeError(f"model.lora needs a diffusion model (from model.load), got {type(model).__name__}")
        if any(spec.content_hash == digest for spec in applied):
            raise NodeError(f"LoRA {str(path)!r} is already applied to this model; change that node's scale instead")
        ctx.check_cancelled()
        return LoraModel(base, (*applied, make_spec(base, path, digest, self.params.scale, layout)))
