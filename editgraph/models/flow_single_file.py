"""Flow-family transformers from one file, the way most people get Flux 2, Kontext and
Qwen-Image-Edit for a 24 GB card: a `.safetensors` file (original BFL/ComfyUI keys or diffusers'
keys) or a `.gguf` file (quantized; diffusers dequantizes each layer as it runs). The model's
diffusers folder gives the transformer's config and every other component.

    model.load  model=/models/FLUX.2-dev  transformer=/models/flux2-dev-Q4_K_M.gguf

Loading goes through diffusers' `from_single_file(file, config=<folder>, subfolder="transformer")`,
with `GGUFQuantizationConfig(compute_dtype=<the load's dtype>)` for GGUF, offline. Untrusted files
are read only as safetensors or GGUF, never unpickled. The writers below turn a folder's
transformer into one file of either kind (the tests' round trips; handy for making test files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editgraph.models.errors import ModelError

TRANSFORMER_SUFFIXES = (".safetensors", ".gguf")
GGUF_TYPES = ("Q8_0", "Q4_0", "F16", "BF16", "F32")  # what write_gguf can store; gguf reads more


def check_transformer_file(path: Path) -> None:
    """ModelError unless `path` is a .safetensors or .gguf file (validation calls it too)."""
    if path.suffix.lower() not in TRANSFORMER_SUFFIXES:
        raise ModelError(
            f"transformer {path} is not a .safetensors or .gguf file; editgraph loads single-file transformers "
            "only in those formats (pickle-based .ckpt/.pt/.bin files can run code)"
        )
    if not path.is_file():
        raise ModelError(f"transformer file {path} not found")


def load_transformer(cls_name: str, file: Path, root: Path, torch_dtype: Any) -> Any:
    """The transformer of the model folder `root`, its weights read from `file`."""
    import diffusers
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    check_transformer_file(file)
    if cls_name not in SINGLE_FILE_LOADABLE_CLASSES:
        raise ModelError(f"diffusers cannot load a {cls_name} from a single file ({file}); use a diffusers folder")
    extra: dict[str, Any] = {}
    if file.suffix.lower() == ".gguf":
        from diffusers.utils import is_gguf_available

        if not is_gguf_available():
            raise ModelError(f"{file} is a GGUF file; loading it needs the `gguf` package (pip install 'editgraph[gguf]')")
        extra["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=torch_dtype)
    cls = getattr(diffusers, cls_name)
    dlog = diffusers.utils.logging
    before = dlog.get_verbosity()
    # from_single_file's cast warns "modules that should be kept in float32: []" on every load
    dlog.set_verbosity_error()
    try:
        return cls.from_single_file(
            str(file), config=str(root), subfolder="transformer", torch_dtype=torch_dtype, local_files_only=True, **extra
        )
    finally:
        dlog.set_verbosity(before)


def _folder_state(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted((folder / "transformer").glob("*.safetensors"))
    if not files:
        raise ModelError(f"no transformer weights in {folder / 'transformer'}")
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def write_safetensors(folder: str | Path, target: str | Path) -> Path:
    """The transformer of diffusers folder `folder` as one .safetensors file (diffusers' keys)."""
    from safetensors.torch import save_file

    out = Path(target)
    save_file(_folder_state(Path(folder)), str(out), metadata={"format": "pt"})
    return out


def write_gguf(folder: str | Path, target: str | Path, qtype: str = "Q8_0") -> Path:
    """The transformer of `folder` as a GGUF file: 2-D weights whose rows fit the quantization's
    block are stored as `qtype`; biases, norms and odd shapes stay float32, as GGUF converters do."""
    import gguf

    if qtype not in GGUF_TYPES:
        raise ModelError(f"GGUF type {qtype!r} is not supported here; use one of {', '.join(GGUF_TYPES)}")
    kind = getattr(gguf.GGMLQuantizationType, qtype)
    block = gguf.GGML_QUANT_SIZES[kind][0]
    src, out = Path(folder), Path(target)
    arch = json.loads((src / "transformer" / "config.json").read_text(encoding="utf-8"))["_class_name"]
    writer = gguf.GGUFWriter(str(out), arch=arch)
    for name, tensor in sorted(_folder_state(src).items()):
        data = tensor.float().numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0 and qtype != "F32":
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
