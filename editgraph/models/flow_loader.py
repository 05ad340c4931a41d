"""Flow-matching edit models (Flux 2 / Klein, Flux Kontext, Qwen-Image-Edit): recognised from a
diffusers folder's model_index.json, hashed by their files, and loaded lazily, component by
component, when a node first touches one.

Lazy loading is what makes caching pay on these models: their text encoders are LLMs of 4-24 B
parameters, and a run whose prompt encodes all come from the cache must never read one from disk.
Every component read is appended to LOADS (the loader's own record, which tests assert on);
`FlowModel.release(name)` drops a component so the next use reads it again.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.models.errors import ModelError
from editgraph.models.handle import LazyParts
from editgraph.values.sockets import Model

# model_index.json `_class_name` -> (latent family, kind). The family names the latent space:
# Klein and Flux 2 share Flux 2's VAE; Kontext has Flux 1's; Qwen-Image-Edit its own.
FLOW_PIPELINES: dict[str, tuple[str, str]] = {
    "Flux2Pipeline": ("flux2", "edit"),
    "Flux2KleinPipeline": ("flux2", "edit"),
    "Flux2KleinInpaintPipeline": ("flux2", "inpaint"),
    "FluxKontextPipeline": ("flux", "edit"),
    "FluxKontextInpaintPipeline": ("flux", "inpaint"),
    "QwenImageEditPipeline": ("qwen-image", "edit"),
    "QwenImageEditPlusPipeline": ("qwen-image", "edit"),
    "QwenImageEditInpaintPipeline": ("qwen-image", "inpaint"),
}

# What a component's weights are called inside its folder.
_WEIGHT_STEMS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")

# The loader's record: (model folder, component) for every component read from disk, in order.
LOADS: list[tuple[str, str]] = []
_record_lock = threading.Lock()


def is_flow_index(index: dict[str, Any]) -> bool:
    return index.get("_class_name") in FLOW_PIPELINES


def _component_entries(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """component -> (library, class) for every component model_index.json names (nulls skipped)."""
    out = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        if entry[0] is None or entry[1] is None:
            continue
        out[name] = (str(entry[0]), str(entry[1]))
    return out


def _weights(folder: Path, comp: str) -> list[Path]:
    """The .safetensors file(s) of a weighted component (sharded ones with their index)."""
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.safetensors.index.json"))
    if not found:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        why = f"; it holds only {', '.join(pickled)}, and editgraph loads .safetensors only (pickle files can run code)" if pickled else ""
        raise ModelError(f"no .safetensors weights in {folder}{why}")
    return found


def check_flow_folder(root: Path, index: dict[str, Any], *, single_transformer: bool = False) -> list[Path]:
    """Raise ModelError naming the first missing piece; return the files a load reads (what the
    content hash covers): model_index.json, every component's configs, tokenizer files and weights.
    `single_transformer`: the transformer's weights come from a file of their own
    (models/flow_single_file.py), so its folder needs only config.json and its weights are not read."""
    files = [root / "model_index.json"]
    for comp, (library, _cls) in sorted(_component_entries(index).items()):
        folder = root / comp
        if not folder.is_dir():
            raise ModelError(f"{root / 'model_index.json'} names {comp}, but there is no {comp}/ folder in {root}")
        weighted = comp != "scheduler" and not comp.startswith(("tokenizer", "processor"))
        elsewhere = single_transformer and comp == "transformer"
        if weighted:
            if not (folder / "config.json").is_file():
                raise ModelError(f"no {comp}/config.json in {root}")
            if not elsewhere:
                _weights(folder, comp)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix not in _PICKLE_SUFFIXES and not (elsewhere and ".safetensors" in path.name):
                files.append(path)
    return files


@dataclass(eq=False, kw_only=True)
class FlowModel(LazyParts, Model):
    """A flow-matching edit model whose components load on first use (see module docstring)."""

    name: str
    path: str
    family: str  # latent family: "flux2", "flux", "qwen-image"
    kind: str  # "edit" | "inpaint"
    pipeline: str  # the diffusers pipeline class name from model_index.json
    content_hash: str
    index: dict[str, Any] = field(repr=False)
    torch_dtype: Any = field(repr=False)
    device: Any = field(repr=False)
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)
    transformer_file: str | None = None  # a .safetensors / .gguf file the transformer loads from instead

    def __fingerprint__(self) -> str:
        base = f"model:{self.content_hash}"
        return base if self.dtype == "float32" else f"{base}:{self.dtype}"

    def using(self, components: tuple[str, ...] | None = None):
        # A LoRA variant of this model (models/lora.py) may have left adapters on in the shared
        # modules: the plain model runs with them off.
        from editgraph.models.lora import base_using

        return base_using(self, components)

    # --- components ---------------------------------------------------------------------------

    def has(self, comp: str) -> bool:
        return comp in _component_entries(self.index)

    def component_names(self) -> tuple[str, ...]:
        return tuple(sorted(_component_entries(self.index)))

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return json.loads((Path(self.path) / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))

    @property
    def transformer(self) -> Any:
        return self.component("transformer")

    @property
    def vae(self) -> Any:
        return self.component("vae")

    @property
    def vae_config(self) -> dict[str, Any]:
        """The VAE's config without loading its weights (sizes are known before any encode)."""
        return json.loads((Path(self.path) / "vae" / "config.json").read_text(encoding="utf-8"))

    @property
    def transformer_config(self) -> dict[str, Any]:
        return json.loads((Path(self.path) / "transformer" / "config.json").read_text(encoding="utf-8"))

    def _load(self, comp: str) -> Any:
        from editgraph.models.tiny import quiet_progress

        entries = _component_entries(self.index)
        if comp not in entries:
            raise ModelError(f"model {self.name!r} ({self.pipeline}) has no {comp} component")
        library, cls_name = entries[comp]
        root = Path(self.path)
        with _record_lock:
            LOADS.append((self.path, comp))
        try:
            with quiet_progress():
                module = self._read(root, comp, library, cls_name)
        except ModelError:
            raise
        except Exception as exc:  # a torn or corrupt file: name it, keep the loader's reason
            raise ModelError(f"cannot load {comp} from {root / comp}: {type(exc).__name__}: {exc}") from exc
        if hasattr(module, "requires_grad_"):
            module.to(self.device).eval().requires_grad_(False)
        return module

    def _read(self, root: Path, comp: str, library: str, cls_name: str) -> Any:
        import diffusers
        import transformers

        common = {"local_files_only": True}
        if comp == "processor":
            from editgraph.models.tokenizers_offline import load_qwen_vl_processor

            return load_qwen_vl_processor(root / comp, self.component("tokenizer"))
        if comp.startswith("tokenizer") and cls_name == "PixtralProcessor":
            # Flux 2 names its Mistral processor here, whose image half needs torchvision; the
            # pipeline's prompt encoding only uses its tokenizer and chat template.
            return transformers.AutoTokenizer.from_pretrained(root / comp, **common)
        if comp.startswith("tokenizer"):
            return getattr(transformers, cls_name).from_pretrained(root / comp, **common)
        if comp == "transformer" and self.transformer_file is not None:
            from editgraph.models.flow_single_file import load_transformer

            return load_transformer(cls_name, Path(self.transformer_file), root, self.torch_dtype)
        if library == "diffusers":
            cls = getattr(diffusers, cls_name, None)
            if cls is None:
                raise ModelError(f"{root / 'model_index.json'}: diffusers has no class {cls_name} (for {comp})")
            return cls.from_pretrained(root, subfolder=comp, torch_dtype=self.torch_dtype, use_safetensors=True, **common)
        cls = getattr(transformers, cls_name, None)
        if cls is None:
            raise ModelError(f"{root / 'model_index.json'}: transformers has no class {cls_name} (for {comp})")
        return cls.from_pretrained(root, subfolder=comp, dtype=self.torch_dtype, use_safetensors=True, **common)


def open_flow_model(
    root: Path, index: dict[str, Any], *, name: str, content_hash: str, torch_dtype: Any, device: Any,
    transformer: Path | None = None,
) -> FlowModel:
    """A FlowModel over the folder (its transformer from the file `transformer` when given);
    nothing but configs is read until a component is used."""
    family, kind = FLOW_PIPELINES[index["_class_name"]]
    check_flow_folder(root, index, single_transformer=transformer is not None)
    return FlowModel(
        name=name, path=str(root), family=family, kind=kind, pipeline=index["_class_name"],
        content_hash=content_hash, index=index, torch_dtype=torch_dtype, device=device,
        dtype=str(torch_dtype).removeprefix("torch."), transformer_file=str(transformer) if transformer else None,
    )
