"""IP-Adapters for SD 1.x and SDXL: a reference picture steers the denoise through extra
cross-attention on its CLIP image embedding (Ye et al. 2023; diffusers' `load_ip_adapter`).

An adapter is a folder in h94/IP-Adapter's layout: a weight file (`models/ip-adapter_sd15.safetensors`,
`sdxl_models/ip-adapter_sdxl.safetensors` ...) with the CLIP vision encoder it was trained on in an
`image_encoder/` folder beside it. `tiny-ip-adapter` is built on first use (models/tiny_ip_adapter.py).

The handle loads its two parts lazily and apart, as the flow models do: the image encoder when a
reference is encoded, the adapter weights when a denoise uses them; a run whose reference
encodes come from the cache never reads the image encoder. Weights are read from .safetensors only.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.models.errors import ModelError
from editgraph.models.handle import LazyParts
from editgraph.values.sockets import Model

DEFAULT_WEIGHT = "models/ip-adapter_sd15.safetensors"  # h94/IP-Adapter's SD 1.5 adapter

# The loader's record: (weight file, part) for every part read from disk, in order (tests assert on it).
LOADS: list[tuple[str, str]] = []
_record_lock = threading.Lock()


def resolve_adapter(name_or_path: str | os.PathLike[str], weight: str) -> tuple[Path, Path, Path]:
    """(folder, weight file, image encoder folder) for an adapter name or folder and the weight
    file's path inside it. Raises ModelError naming what is missing."""
    from editgraph.models.tiny_ip_adapter import TINY_ADAPTERS

    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if text in TINY_ADAPTERS or (not path.exists() and path.name in TINY_ADAPTERS):
        path = ensure_tiny_adapter(path.name)
    path = path.resolve()
    if not path.is_dir():
        raise ModelError(f"IP-Adapter {text!r}: no folder at {path} (an h94/IP-Adapter-style folder, or {', '.join(TINY_ADAPTERS)})")
    rel = Path(weight)
    if rel.is_absolute() or ".." in rel.parts:
        raise ModelError(f"IP-Adapter weight {weight!r} must be a path inside {path}")
    file = path / rel
    if file.suffix.lower() != ".safetensors":
        raise ModelError(
            f"IP-Adapter weight {weight!r} is not a .safetensors file; editgraph loads adapters only as .safetensors "
            "(pickle-based .bin files can run code)"
        )
    if not file.is_file():
        found = sorted(p.relative_to(path).as_posix() for p in path.rglob("ip-adapter*.safetensors"))
        raise ModelError(f"IP-Adapter weight {weight!r} not found in {path} (it holds: {', '.join(found) or 'no ip-adapter*.safetensors'})")
    encoder = file.parent / "image_encoder"
    if not (encoder / "config.json").is_file() or not any(encoder.glob("*.safetensors")):
        raise ModelError(f"no image encoder beside {file}: {encoder} needs config.json and model.safetensors")
    return path, file, encoder


def ensure_tiny_adapter(name: str) -> Path:
    from editgraph.models.loader import models_root
    from editgraph.models.tiny import build_into

    return build_into(name, models_root() / name, _tiny_built)


def _tiny_built(folder: Path) -> bool:
    from editgraph.models.tiny import BUILDER_VERSION
    from editgraph.models.tiny_ip_adapter import _PARTS

    try:
        version = json.loads((folder / "editgraph.json").read_text(encoding="utf-8")).get("builder_version")
    except (OSError, ValueError, AttributeError):
        return False
    return version == BUILDER_VERSION and all((folder / sub / w).is_file() and (folder / sub / "image_encoder" / "model.safetensors").is_file() for sub, w, *_ in _PARTS)


def adapter_files(weight_file: Path, encoder: Path) -> list[Path]:
    return [weight_file, *sorted(p for p in encoder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))]


def adapter_hash(folder: Path, weight_file: Path, encoder: Path) -> str:
    from editgraph.models import hashing

    return hashing.content_hash(folder, adapter_files(weight_file, encoder))


@dataclass(eq=False, kw_only=True)
class IPAdapter(LazyParts, Model):
    """A loaded IP-Adapter: its CLIP image encoder and its weights, each read on first use."""

    name: str
    path: str  # the adapter's folder
    weight_file: str
    encoder_path: str
    content_hash: str
    torch_dtype: Any = field(repr=False)
    device: Any = field(repr=False)
    dtype: str = "float32"
    family: str = "ip-adapter"

    def __fingerprint__(self) -> str:
        # the Model form ("model:<hash>"), so provenance records the adapter's files like a model's
        base = f"model:{self.content_hash}"
        return base if self.dtype == "float32" else f"{base}:{self.dtype}"

    def component_names(self) -> tuple[str, ...]:
        return ("image_encoder", "weights")

    def unet_modules(self) -> Any:
        """{UNet: (attention processors, image projection)}: the adapter converted for each UNet it
        has run on (diffusion/ip_adapter.py fills it). Released with the weights."""
        import weakref

        with self._lock:
            return self._parts.setdefault("unets", weakref.WeakKeyDictionary())

    @property
    def image_encoder(self) -> Any:
        return self.component("image_encoder")

    @property
    def feature_extractor(self) -> Any:
        """CLIPImageProcessor at the encoder's input size: what load_ip_adapter makes when the
        pipeline has none (resize the short side, centre-crop, CLIP's mean and std). Without
        torchvision, transformers gives the pipeline its PIL variant, so we ask for that one."""
        import transformers

        cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
        size = int(json.loads((Path(self.encoder_path) / "config.json").read_text(encoding="utf-8"))["image_size"])
        return cls(size=size, crop_size=size)

    @property
    def weights(self) -> dict[str, dict[str, Any]]:
        """{"image_proj": {...}, "ip_adapter": {...}}, as load_ip_adapter splits a .safetensors file."""
        return self.component("weights")

    def _load(self, comp: str) -> Any:
        from editgraph.models.tiny import quiet_progress

        with _record_lock:
            LOADS.append((self.weight_file, comp))
        try:
            if comp == "image_encoder":
                from transformers import CLIPVisionModelWithProjection

                with quiet_progress():
                    module = CLIPVisionModelWithProjection.from_pretrained(
                        self.encoder_path, dtype=self.torch_dtype, local_files_only=True, use_safetensors=True
                    )
                return module.to(self.device).eval().requires_grad_(False)
            if comp == "weights":
                return read_weights(Path(self.weight_file))
        except ModelError:
            raise
        except Exception as exc:  # a torn or corrupt file: name it, keep the loader's reason
            raise ModelError(f"cannot load the IP-Adapter's {comp} from {self.path}: {type(exc).__name__}: {exc}") from exc
        raise ModelError(f"IP-Adapter has no component {comp!r} (it has image_encoder, weights)")


def read_weights(path: Path) -> dict[str, dict[str, Any]]:
    """The adapter file split as diffusers' load_ip_adapter splits it; only the plain IP-Adapter
    (one image embedding projected to 4 tokens) is supported."""
    from safetensors import safe_open

    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            head, _, rest = key.partition(".")
            if head in state:
                state[head][rest] = f.get_tensor(key)
    if not state["ip_adapter"] or "proj.weight" not in state["image_proj"]:
        kind = "IP-Adapter Plus / Full-face / FaceID" if state["image_proj"] else "not an IP-Adapter"
        raise ModelError(
            f"{path}: {kind} (no image_proj.proj.weight); editgraph supports the plain IP-Adapter "
            "(ip-adapter_sd15, ip-adapter_sdxl, ip-adapter_sdxl_vit-h)"
        )
    return state


def load_ip_adapter(
    name_or_path: str | os.PathLike[str], weight: str = DEFAULT_WEIGHT, *, device: Any = None, dtype: Any = None
) -> IPAdapter:
    """The adapter (once per process), lazily loaded: reading it costs only a hash until used."""
    import torch

    from editgraph.models import cache
    from editgraph.models.loader import parse_dtype

    torch_dtype = parse_dtype(dtype)
    dev = torch.device(device if device is not None else "cpu")
    folder, file, encoder = resolve_adapter(name_or_path, weight)
    digest = adapter_hash(folder, file, encoder)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    key = cache.CacheKey(str(file), digest, str(dev), dtype_name)

    def open_adapter() -> IPAdapter:
        return IPAdapter(
            name=os.fspath(name_or_path), path=str(folder), weight_file=str(file), encoder_path=str(encoder),
            content_hash=digest, torch_dtype=torch_dtype, device=dev, dtype=dtype_name,
        )

    return cache.get_or_load(key, open_adapter)  # type: ignore[arg-type, return-value]
