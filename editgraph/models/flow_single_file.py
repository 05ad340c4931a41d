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
    except Exception as exc:  # shapes that do not fit, missing weights ("meta tensor"), a torn file
        raise ModelError(
            f"cannot load {file} as the {cls_name} of {root}: {type(exc).__name__}: {str(exc)[:300]} "
            "(a transformer file must hold all the weights of this model's transformer, in diffusers' or the original keys)"
        ) from exc
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


# Flux 2's diffusers names -> BFL's original ones (the inverse of diffusers'
# convert_flux2_transformer_checkpoint_to_diffusers, which is width-agnostic; its Flux 1 converter
# assumes the full 3072 width, so a tiny Kontext file can only be written in diffusers' keys).
_FLUX2_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_FLUX2_DOUBLE = {
    "attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm", "attn.to_out.0": "img_attn.proj",
    "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2", "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm", "attn.to_add_out": "txt_attn.proj",
    "ff_context.linear_in": "txt_mlp.0", "ff_context.linear_out": "txt_mlp.2",
}
_FLUX2_SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2", "attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"}
_FUSED = {"attn.to_": "img_attn.qkv", "attn.add_": "txt_attn.qkv"}  # q, k, v stacked on dim 0


def flux2_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """A Flux2Transformer2DModel state dict in BFL's original names (how flux2-dev.safetensors
    and its GGUF conversions store it): q/k/v fused, norm scales named `scale`, and the final
    modulation's (scale, shift) halves swapped back to (shift, scale)."""
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        parts = module.split(".")
        if parts[0] in ("transformer_blocks", "single_transformer_blocks"):
            double = parts[0] == "transformer_blocks"
            block, inner = ".".join(parts[:2]), ".".join(parts[2:])
            new_block = ("double_blocks." if double else "single_blocks.") + parts[1]
            if double and inner in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"):
                stem = "attn.add_" if "add_" in inner else "attn.to_"
                fused.setdefault(f"{new_block}.{_FUSED[stem]}.{leaf}", {})[inner.replace("_proj", "")[-1]] = value
                continue
            table = _FLUX2_DOUBLE if double else _FLUX2_SINGLE
            if inner not in table:
                raise ModelError(f"Flux 2 key {key!r} has no place in the original layout")
            name = table[inner]
            out[f"{new_block}.{name}.{'scale' if name.endswith('_norm') else leaf}"] = value
            continue
        if module not in _FLUX2_TOP:
            raise ModelError(f"Flux 2 key {key!r} has no place in the original layout")
        if module == "norm_out.linear":
            scale, shift = value.chunk(2, dim=0)
            value = torch.cat([shift, scale], dim=0)
        out[f"{_FLUX2_TOP[module]}.{leaf}"] = value
    for key, qkv in fused.items():
        out[key] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def _layout_state(folder: Path, layout: str) -> dict[str, Any]:
    state = _folder_state(folder)
    if layout == "diffusers":
        return state
    cls_name = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))["_class_name"]
    if layout != "original" or cls_name != "Flux2Transformer2DModel":
        raise ModelError(f"cannot write a {cls_name} in the {layout!r} layout (diffusers: any; original: Flux 2 only)")
    return flux2_to_original(state)


def write_safetensors(folder: str | Path, target: str | Path, layout: str = "diffusers") -> Path:
    """The transformer of diffusers folder `folder` as one .safetensors file, in diffusers' keys or
    (Flux 2) the original ones."""
    from safetensors.torch import save_file

    out = Path(target)
    save_file({k: v.contiguous() for k, v in _layout_state(Path(folder), layout).items()}, str(out), metadata={"format": "pt"})
    return out


def write_gguf(folder: str | Path, target: str | Path, qtype: str = "Q8_0", layout: str = "diffusers") -> Path:
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
    for name, tensor in sorted(_layout_state(src, layout).items()):
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
