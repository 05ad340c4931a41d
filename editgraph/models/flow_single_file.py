"""Flow-family transformers from one file, the way most people get Flux 2, Kontext and
Qwen-Image-Edit for a 24 GB card: a `.safetensors` file (original BFL/ComfyUI keys or diffusers'
keys) or a `.gguf` file (quantized; diffusers dequantizes each layer as it runs). The model's
diffusers folder gives the transformer's config and every other component.

    model.load  model=/models/FLUX.2-dev  transformer=/models/flux2-dev-Q4_K_M.gguf

Loading goes through diffusers' `from_single_file(file, config=<folder>, subfolder="transformer")`,
with `GGUFQuantizationConfig(compute_dtype=<the load's dtype>)` for GGUF, offline. Untrusted files
are read only as safetensors or GGUF, never unpickled. One exception to "diffusers converts": a Flux
1 / Kontext file in BFL's original keys is converted here (flux_original_to_diffusers) and handed to
diffusers as a state dict, because diffusers' converter hard-codes the full model's 3072 width when
it splits the single blocks' fused `linear1`; ours reads the width from the file and equals
diffusers' at 3072 (tests/models/test_flux_original_keys.py). The writers below turn a folder's
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
    source: Any = str(file)
    if cls_name in ("FluxTransformer2DModel", "QwenImageTransformer2DModel"):
        # Flux 1: diffusers' converter would split linear1 at width 3072. Qwen-Image: diffusers maps
        # keys as they are, so ComfyUI's model.diffusion_model. prefix would leave every weight unset.
        source = _checkpoint(file, flux=cls_name == "FluxTransformer2DModel")
    dlog = diffusers.utils.logging
    before = dlog.get_verbosity()
    # from_single_file's cast warns "modules that should be kept in float32: []" on every load
    dlog.set_verbosity_error()
    try:
        return cls.from_single_file(
            source, config=str(root), subfolder="transformer", torch_dtype=torch_dtype, local_files_only=True, **extra
        )
    except Exception as exc:  # shapes that do not fit, missing weights ("meta tensor"), a torn file
        raise ModelError(
            f"cannot load {file} as the {cls_name} of {root}: {type(exc).__name__}: {str(exc)[:300]} "
            "(a transformer file must hold all the weights of this model's transformer, in diffusers' or the original keys)"
        ) from exc
    finally:
        dlog.set_verbosity(before)


def _checkpoint(file: Path, *, flux: bool) -> dict[str, Any]:
    """A Flux 1 / Kontext or Qwen-Image transformer file's tensors in diffusers' keys (GGUF ones stay
    quantized): without ComfyUI's `model.diffusion_model.` prefix, and (Flux 1) converted here when
    the file is in BFL's original keys. ComfyUI's Qwen-Image modules carry diffusers' names."""
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    try:
        checkpoint = load_single_file_checkpoint(str(file), local_files_only=True)
    except Exception as exc:  # a torn or foreign file: safetensors and gguf raise assorted types
        raise ModelError(f"cannot read {file} as a transformer file: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if flux and any(k.removeprefix(ORIGINAL_PREFIX).startswith("double_blocks.") for k in checkpoint):
        return flux_original_to_diffusers(checkpoint, where=str(file))
    if any(k.startswith(ORIGINAL_PREFIX) for k in checkpoint):
        return {k.removeprefix(ORIGINAL_PREFIX): v for k, v in checkpoint.items()}
    return checkpoint


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
# convert_flux2_transformer_checkpoint_to_diffusers, which is width-agnostic).
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
def flux2_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """A Flux2Transformer2DModel state dict in BFL's original names (how flux2-dev.safetensors
    and its GGUF conversions store it): q/k/v fused, norm scales named `scale`, and the final
    modulation's (scale, shift) halves swapped back to (shift, scale)."""
    return _to_original(state, "Flux 2", _FLUX2_TOP, _FLUX2_DOUBLE, _FLUX2_SINGLE, _FLUX_FUSED_DOUBLE, {})


# Flux 1 (and Kontext, same architecture): diffusers' names <-> BFL's (flux1-dev.safetensors,
# flux1-kontext-dev.safetensors and their GGUF conversions). Fused tensors are listed separately.
ORIGINAL_PREFIX = "model.diffusion_model."  # ComfyUI-saved files nest the transformer under it
_FLUX_TOP = {
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "context_embedder": "txt_in",
    "x_embedder": "img_in",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",  # (scale, shift) in diffusers, (shift, scale) in BFL's
}
_FLUX_DOUBLE = {
    "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
    "attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
    "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2", "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
}
_FLUX_SINGLE = {"norm.linear": "modulation.lin", "attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm", "proj_out": "linear2"}
# fused BFL module -> the diffusers modules stacked in it on dim 0, in order
_FLUX_FUSED_DOUBLE = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_FLUX_FUSED_SINGLE = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
_BLOCKS = {"transformer_blocks": "double_blocks", "single_transformer_blocks": "single_blocks"}


def _swap_halves(value: Any) -> Any:
    import torch

    first, second = value.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def flux_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """A FluxTransformer2DModel (Flux 1, Kontext) state dict in BFL's original names: q/k/v (and,
    in single blocks, the MLP input) fused, norm scales named `scale`, the final modulation's
    halves swapped to (shift, scale). The inverse of flux_original_to_diffusers."""
    return _to_original(state, "Flux", _FLUX_TOP, _FLUX_DOUBLE, _FLUX_SINGLE, _FLUX_FUSED_DOUBLE, _FLUX_FUSED_SINGLE)


def _to_original(state: dict[str, Any], label: str, top: dict[str, str], double_names: dict[str, str],
                 single_names: dict[str, str], fused_double: dict[str, tuple[str, ...]],
                 fused_single: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """diffusers' names -> BFL's, from a family's tables: blocks renamed, the fused groups'
    members stacked on dim 0 in their listed order, norm scales named `scale`, and the final
    modulation's halves swapped."""
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}  # BFL key -> (member order, tensors)
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        parts = module.split(".")
        if parts[0] in _BLOCKS:
            double = parts[0] == "transformer_blocks"
            block, inner = f"{_BLOCKS[parts[0]]}.{parts[1]}", ".".join(parts[2:])
            groups = fused_double if double else fused_single
            target = next((name for name, members in groups.items() if inner in members), None)
            if target is not None:
                fused.setdefault(f"{block}.{target}.{leaf}", (groups[target], {}))[1][inner] = value
                continue
            name = (double_names if double else single_names).get(inner)
            if name is None:
                raise ModelError(f"{label} key {key!r} has no place in the original layout")
            out[f"{block}.{name}.{'scale' if name.endswith('_norm') else leaf}"] = value
            continue
        if module not in top:
            raise ModelError(f"{label} key {key!r} has no place in the original layout")
        out[f"{top[module]}.{leaf}"] = _swap_halves(value) if module == "norm_out.linear" else value
    for key, (order, members) in fused.items():
        out[key] = torch.cat([members[m] for m in order], dim=0)
    return out


def flux_original_to_diffusers(checkpoint: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """BFL's Flux 1 / Kontext transformer keys -> diffusers' FluxTransformer2DModel keys, for any
    width: what diffusers' convert_flux_transformer_checkpoint_to_diffusers does at its hard-coded
    3072 (same splits along dim 0, same copies, so GGUF tensors stay quantized), the width read
    from `img_in.weight` instead."""
    import torch

    state = {k.removeprefix(ORIGINAL_PREFIX): v for k, v in checkpoint.items()}
    if "img_in.weight" not in state:
        raise ModelError(f"{where} has double_blocks.* keys but no img_in.weight: not a whole Flux transformer")
    width = state["img_in.weight"].shape[0]
    back = {v: k for k, v in _FLUX_TOP.items()}
    back_double = {v: k for k, v in _FLUX_DOUBLE.items()}
    back_single = {v: k for k, v in _FLUX_SINGLE.items()}
    out: dict[str, Any] = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        parts = module.split(".")
        if parts[0] in ("double_blocks", "single_blocks") and len(parts) > 2:
            double = parts[0] == "double_blocks"
            block = ("transformer_blocks." if double else "single_transformer_blocks.") + parts[1]
            inner = ".".join(parts[2:])
            members = (_FLUX_FUSED_DOUBLE if double else _FLUX_FUSED_SINGLE).get(inner)
            if members is not None:
                # q, k, v are `width` rows each; a single block's MLP input takes the rest (4x width)
                sizes = [width] * 3 + ([value.shape[0] - 3 * width] if len(members) == 4 else [])
                for member, piece in zip(members, torch.split(value, sizes, dim=0), strict=True):
                    out[f"{block}.{member}.{leaf}"] = torch.cat([piece])  # a copy, as diffusers makes
                continue
            name = (back_double if double else back_single).get(inner)
            if name is not None:
                out[f"{block}.{name}.{'weight' if leaf == 'scale' else leaf}"] = value
                continue
        elif module in back:
            name = back[module]
            out[f"{name}.{leaf}"] = _swap_halves(value) if name == "norm_out.linear" else value
            continue
        raise ModelError(f"{where}: key {key!r} is not part of a Flux 1 / Kontext transformer in BFL's layout")
    return out


def _layout_state(folder: Path, layout: str) -> dict[str, Any]:
    state = _folder_state(folder)
    if layout == "diffusers":
        return state
    cls_name = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))["_class_name"]
    converters = {"Flux2Transformer2DModel": flux2_to_original, "FluxTransformer2DModel": flux_to_original}
    if layout != "original" or cls_name not in converters:
        raise ModelError(f"cannot write a {cls_name} in the {layout!r} layout (diffusers: any; original: Flux 2, Flux 1 / Kontext)")
    return converters[cls_name](state)


def write_safetensors(folder: str | Path, target: str | Path, layout: str = "diffusers") -> Path:
    """The transformer of diffusers folder `folder` as one .safetensors file, in diffusers' keys or
    (Flux 2, Flux 1 / Kontext) BFL's original ones."""
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
