"""What a model needs in memory, per component, read from its safetensors headers alone.

A .safetensors file starts with an 8-byte little-endian length and a JSON header naming every
tensor's dtype, shape and byte range; the weights follow. Reading the header is enough to count
parameters and bytes, so `editgraph models list` can say what a 20 GB model needs without
reading (or loading) a byte of its weights.

Components are a diffusers folder's weight subfolders (unet, transformer, vae, text_encoder, ...),
or the parts of a single-file Stable Diffusion checkpoint by key prefix. A folder that carries a
weight variant next to the full files (diffusion_pytorch_model.fp16.safetensors) counts the full
files only: that is what model.load reads.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from editgraph.models.errors import ModelError

# bytes per value of each safetensors dtype
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0"}  # cast by model.load's dtype
MAX_HEADER = 100 * 2**20  # a header larger than this is a damaged or hostile file, not a model

# single-file Stable Diffusion checkpoints: key prefix -> component (first match wins)
SINGLE_FILE_PARTS = (
    ("model.diffusion_model.", "unet"),
    ("first_stage_model.", "vae"),
    ("cond_stage_model.", "text_encoder"),
    ("conditioner.embedders.0.", "text_encoder"),
    ("conditioner.embedders.1.", "text_encoder_2"),
)


@dataclass(frozen=True)
class Component:
    name: str
    params: int  # values in its float tensors (what model.load's dtype casts)
    other_params: int  # values in integer / bool tensors (buffers such as position ids), kept as stored
    float_bytes: int  # the float tensors' bytes as stored
    other_bytes: int  # the other tensors' bytes
    dtypes: tuple[str, ...]  # the stored dtypes, the one holding most bytes first

    @property
    def stored_bytes(self) -> int:
        return self.float_bytes + self.other_bytes

    def bytes_at(self, dtype: str | None) -> int:
        """Bytes once loaded: float tensors at `dtype` ("float32", "bfloat16", "float16"; None:
        as stored), the rest as stored."""
        if dtype is None:
            return self.stored_bytes
        return self.params * {"float32": 4, "bfloat16": 2, "float16": 2}[dtype] + self.other_bytes


def read_header(path: Path) -> dict[str, dict]:
    """The tensors a .safetensors file declares: {name: {"dtype", "shape", "data_offsets"}}."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ModelError(f"{path} is not a safetensors file: shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER:
                raise ModelError(f"{path}: safetensors header of {n} bytes (more than {MAX_HEADER}); the file is damaged")
            text = f.read(n)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if len(text) != n:
        raise ModelError(f"{path}: the safetensors header is cut short ({len(text)} of {n} bytes)")
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: the safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: the safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    for name, info in header.items():
        if not (isinstance(info, dict) and info.get("dtype") in DTYPE_BYTES and isinstance(info.get("shape"), list)):
            raise ModelError(f"{path}: tensor {name!r} has no known dtype and shape in the header (dtype {info.get('dtype') if isinstance(info, dict) else info!r})")
    return header


def _measure(name: str, tensors: list[dict]) -> Component:
    params = other = float_bytes = other_bytes = 0
    by_dtype: dict[str, int] = {}
    for info in tensors:
        count = math.prod(int(d) for d in info["shape"])
        nbytes = count * DTYPE_BYTES[info["dtype"]]
        by_dtype[info["dtype"]] = by_dtype.get(info["dtype"], 0) + nbytes
        if info["dtype"] in FLOATS:
            params, float_bytes = params + count, float_bytes + nbytes
        else:
            other, other_bytes = other + count, other_bytes + nbytes
    dtypes = tuple(sorted(by_dtype, key=lambda d: (-by_dtype[d], d)))
    return Component(name, params, other, float_bytes, other_bytes, dtypes)


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    # "model.fp16.safetensors" beside "model.safetensors": a variant model.load does not read
    full = [p for p in files if "." not in p.name[: -len(".safetensors")]]
    return full or files


def footprint(path: str | Path) -> list[Component]:
    """The components of the model at `path` (a diffusers folder or a .safetensors checkpoint)
    with their parameter counts and bytes, from the headers only. Components without
    safetensors weights (tokenizers, schedulers, processors) are left out."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ModelError(f"{path}: only .safetensors files can be measured")
        header = read_header(path)
        parts: dict[str, list[dict]] = {}
        for key, info in header.items():
            part = next((c for p, c in SINGLE_FILE_PARTS if key.startswith(p)), "other")
            parts.setdefault(part, []).append(info)
        if set(parts) == {"other"}:  # a diffusers component file or a transformer on its own
            return [_measure("checkpoint", parts["other"])]
        return [_measure(n, t) for n, t in sorted(parts.items())]
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"{path} is neither a diffusers folder (no model_index.json) nor a .safetensors file")
    try:
        names = [k for k, v in json.loads(index.read_text(encoding="utf-8")).items() if isinstance(v, list) and not k.startswith("_")]
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {index}: {exc}") from None
    out = []
    for name in sorted(names):
        files = _weight_files(path / name) if (path / name).is_dir() else []
        if files:
            out.append(_measure(name, [info for f in files for info in read_header(f).values()]))
    return out


def unmeasured(path: str | Path) -> list[str]:
    """Components of a diffusers folder whose weights are not .safetensors (.bin, .pt, .gguf): their
    headers cannot be read without unpickling or a parser, so `models list` names them instead."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        return []
    try:
        names = [k for k, v in json.loads(index.read_text(encoding="utf-8")).items() if isinstance(v, list) and not k.startswith("_")]
    except (OSError, ValueError):
        return []
    out = []
    for name in sorted(names):
        folder = path / name
        if folder.is_dir() and not _weight_files(folder) and any(next(folder.glob(f"*.{ext}"), None) for ext in ("bin", "pt", "pth", "ckpt", "gguf")):
            out.append(name)
    return out


def human(n: int) -> str:
    """Bytes in a unit that fits: 812 B, 6.5 MiB, 23.8 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(components: list[Component], indent: str = "    ") -> list[str]:
    """Rows for `models list`: per component its parameters, stored dtype and bytes, and what it
    takes loaded at model.load's dtypes (float32 is its default)."""
    rows = [f"{indent}{'component':<16} {'parameters':>14}  {'stored':<6} {'on disk':>10} {'float32':>10} {'bf16/fp16':>10}"]
    for c in components:
        rows.append(
            f"{indent}{c.name:<16} {c.params + c.other_params:>14,}  {c.dtypes[0] if c.dtypes else '-':<6} "
            f"{human(c.stored_bytes):>10} {human(c.bytes_at('float32')):>10} {human(c.bytes_at('bfloat16')):>10}"
        )
    if len(components) > 1:
        total = sum(c.params + c.other_params for c in components)
        rows.append(
            f"{indent}{'total':<16} {total:>14,}  {'':<6} {human(sum(c.stored_bytes for c in components)):>10} "
            f"{human(sum(c.bytes_at('float32') for c in components)):>10} {human(sum(c.bytes_at('bfloat16') for c in components)):>10}"
        )
    return rows
