"""Single-file checkpoints: the original Stable Diffusion layout in one .safetensors file.

Loading: diffusers' `from_single_file` converts the original keys to diffusers ones, but reads the
component configs from a hub unless given `config=` a local folder. We pass it one of the
config-only folders shipped in editgraph/models/configs/ (JSON configs; the CLIP tokenizer files
are assembled in the cache, see family_configs.py), chosen by what the checkpoint's tensors say
about its family and kind, or a folder the caller names.

Writing: `to_single_file` turns a diffusers SD 1.x or SDXL folder into the original layout, the
inverse of diffusers' converter for any block count (its own scripts assume the full-size UNets).
The tests use it to check that the tiny models survive a round trip bit for bit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from editgraph.models.errors import ModelError
from editgraph.models.handle import DiffusionModel

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."  # SD 2.x's OpenCLIP ViT-H, in open_clip's names
XL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."  # SDXL's CLIP ViT-L
XL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."  # SDXL's OpenCLIP bigG, in open_clip's names

# The pipeline class diffusers converts a checkpoint with, by family and kind.
_PIPELINES = {
    ("sd1", "base"): "StableDiffusionPipeline",
    ("sd2", "base"): "StableDiffusionPipeline",
    ("sd1", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd2", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd1", "instruct"): "StableDiffusionInstructPix2PixPipeline",
    ("sdxl", "base"): "StableDiffusionXLPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
}


def check_checkpoint_file(path: Path) -> None:
    """ModelError unless `path` is a file editgraph may load as a checkpoint: .safetensors only.
    Checked by validation (model.load's check_sources) as well as by the load, so a pickle file is
    an invalid workflow under `validate` and `run` alike, found before anything runs."""
    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"{path} is not a .safetensors file; editgraph loads single-file checkpoints only as .safetensors "
            "(pickle-based .ckpt files can run code)"
        )


def inspect_checkpoint(path: Path) -> tuple[str | None, str, dict[str, tuple[int, ...]]]:
    """(family or None, kind, {key: shape}) from a checkpoint's header, reading no tensor data.
    Family is None when the text width matches no known family (a tiny model)."""
    from safetensors import SafetensorError, safe_open

    check_checkpoint_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path} as a safetensors checkpoint: {exc}") from None
    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        raise ModelError(
            f"{path} holds no Stable Diffusion UNet (no {UNET_PREFIX}input_blocks.0.0.weight); "
            "is it a LoRA, a VAE or a diffusers component file?"
        )
    kind = {4: "base", 9: "inpaint", 8: "instruct"}.get(conv_in[1])
    if kind is None:
        raise ModelError(f"{path}: UNet in_channels is {conv_in[1]}; editgraph knows 4 (base), 9 (inpaint), 8 (instruct)")
    cross = next((s[1] for k, s in shapes.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
    if any(k.startswith("conditioner.embedders.1.") for k in shapes) or cross == 2048:
        family: str | None = "sdxl"
    elif cross == 768:
        family = "sd1"
    elif cross == 1024:
        family = "sd2"
    else:
        family = None
    return family, kind, shapes


def config_folder(family: str, kind: str) -> Path | None:
    """The complete config-only folder (shipped JSON + CLIP tokenizer files, assembled in the
    cache) for a family and kind, or None if editgraph ships none for it."""
    from editgraph.models.family_configs import FAMILY_CONFIGS, config_folder_for
    from editgraph.models.folders import models_root

    name = f"{family}-{kind}"
    return config_folder_for(name, models_root() / "configs") if name in FAMILY_CONFIGS else None


def choose_config(path: Path, config: str | os.PathLike[str] | None) -> Path:
    """The config folder a checkpoint loads with: `config` if given, else the shipped one its
    tensors call for. Raises ModelError saying why there is none."""
    if config is not None:
        cfg = Path(config).resolve()
        if not (cfg / "model_index.json").is_file():
            raise ModelError(
                f"config folder {cfg} for {path} has no model_index.json (it needs the diffusers layout: "
                "model_index.json, unet/config.json, vae/config.json, text_encoder/config.json, tokenizer/, scheduler/)"
            )
        return cfg
    family, kind, _ = inspect_checkpoint(path)
    if family is None:
        raise ModelError(
            f"{path}: cannot tell the model family from its cross-attention width; "
            "pass config= a diffusers or config-only folder for it"
        )
    found = config_folder(family, kind)
    if found is None:
        from editgraph.models.family_configs import FAMILY_CONFIGS

        raise ModelError(
            f"{path} is a {family} {kind} checkpoint, and editgraph ships no config for that "
            f"(it has: {', '.join(FAMILY_CONFIGS)}); convert it to a diffusers folder or pass config="
        )
    return found


def load_single_file(
    path: Path, *, name: str, content_hash: str, dtype: Any, config: str | os.PathLike[str] | None = None
) -> DiffusionModel:
    import diffusers

    from editgraph.models.folders import detect_family, read_json

    cfg = choose_config(path, config)
    marker = read_json(cfg / "editgraph.json") if (cfg / "editgraph.json").is_file() else None
    family, kind = detect_family(read_json(cfg / "unet" / "config.json"), marker, where=str(cfg))
    index = read_json(cfg / "model_index.json")
    pipeline_name = _PIPELINES.get((family, kind)) or str(index.get("_class_name", "StableDiffusionPipeline"))
    pipeline_cls = getattr(diffusers, pipeline_name)
    extra: dict[str, Any] = {"safety_checker": None, "feature_extractor": None} if family != "sdxl" else {}
    try:
        pipe = pipeline_cls.from_single_file(str(path), config=str(cfg), local_files_only=True, torch_dtype=dtype, **extra)
    except Exception as exc:  # diffusers' converter reports bad keys and shapes as assorted types
        raise ModelError(f"cannot load {path} with configs from {cfg}: {type(exc).__name__}: {exc}") from exc
    return DiffusionModel(
        name=name,
        path=str(path),
        family=family,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        content_hash=content_hash,
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler_config=dict(pipe.scheduler.config),
        text_encoder_2=getattr(pipe, "text_encoder_2", None),
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
        extra={"pipeline": pipeline_name, "config": str(cfg)},
    )


# --- diffusers folder -> original layout --------------------------------------------------------

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Diffusers UNet2DConditionModel keys -> original `model.diffusion_model.*` keys (SD 1.x/2.x, SDXL)."""
    per_block = int(config["layers_per_block"])
    n_blocks = len(config["block_out_channels"])
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]

    # 1. Map each diffusers module prefix to its original one.
    prefixes = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL: pooled text + size/crop ids
        "add_embedding.linear_2.": "label_emb.0.2.",
    }
    for i in range(n_blocks):
        for j in range(per_block):
            slot = 1 + i * (per_block + 1) + j
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{slot}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{slot}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (per_block + 1)}.0.op."
        for j in range(per_block + 1):  # up blocks have one layer more (they take the skips)
            slot = i * (per_block + 1) + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{slot}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{slot}.1."
        last = i * (per_block + 1) + per_block
        prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{last}.{2 if up_has_attn[i] else 1}."

    # 2. Rename keys; resnet layers also rename their members.
    out: dict[str, Any] = {}
    for key, value in state.items():
        prefix = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
        if prefix is None:
            raise ModelError(f"UNet key {key!r} has no place in the original SD layout (adapters are not converted)")
        rest = key[len(prefix) :]
        if ".resnets." in prefix:
            member, _, leaf = rest.partition(".")
            rest = f"{_RESNET.get(member, member)}.{leaf}"
        out[UNET_PREFIX + prefixes[prefix] + rest] = value
    return out


def vae_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Diffusers AutoencoderKL keys -> original `first_stage_model.*` keys."""
    n_blocks = len(config["block_out_channels"])
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if parts[1] == "down_blocks":  # encoder.down_blocks.i.resnets.j / downsamplers.0.conv
            i = int(parts[2])
            new = new.replace(f"down_blocks.{i}.resnets.", f"down.{i}.block.")
            new = new.replace(f"down_blocks.{i}.downsamplers.0.", f"down.{i}.downsample.")
        elif parts[1] == "up_blocks":  # the decoder's up blocks are numbered from the deepest
            i = int(parts[2])
            k = n_blocks - 1 - i
            new = new.replace(f"up_blocks.{i}.resnets.", f"up.{k}.block.")
            new = new.replace(f"up_blocks.{i}.upsamplers.0.", f"up.{k}.upsample.")
        elif parts[1] == "mid_block":
            new = new.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
            if "mid_block.attentions.0." in new:
                new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
                member = parts[4] if parts[4] != "to_out" else "to_out.0"
                new = new.replace(f"attn_1.{member}.", f"attn_1.{_VAE_ATTN[member]}.")
                if new.endswith(".weight") and value.ndim == 2:
                    value = value[:, :, None, None]  # the original attention uses 1x1 convs
        out[VAE_PREFIX + new] = value
    return out


def openclip_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """transformers CLIP text encoder keys -> open_clip's (SD 2.x's encoder, SDXL's second): q, k
    and v fused into one in_proj, layers renamed, a projection stored transposed. The inverse of
    diffusers' convert_open_clip_checkpoint."""
    import torch

    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, Any] = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in state:  # SDXL's pooled projection; SD 2.x uses none
        out["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    state.pop("embeddings.position_ids", None)
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
    for key in sorted(state):
        if not key.startswith("encoder.layers."):
            raise ModelError(f"text encoder key {key!r} has no place in open_clip's layout")
        _, _, n, rest = key.split(".", 3)
        block = f"transformer.resblocks.{n}."
        if rest.startswith("self_attn.q_proj."):
            leaf = rest.rsplit(".", 1)[1]
            qkv = [state[f"encoder.layers.{n}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
            out[f"{block}attn.in_proj_{leaf}"] = torch.cat(qkv, dim=0)
        elif rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
            continue  # fused with q above
        else:
            module, leaf = rest.rsplit(".", 1)
            out[f"{block}{names[module]}.{leaf}"] = state[key]
    return out


def to_single_file(folder: str | os.PathLike[str], target: str | os.PathLike[str], *, open_clip: bool | None = None) -> Path:
    """Write the SD 1.x, 2.x or SDXL diffusers folder `folder` as one original-layout .safetensors
    file. `open_clip`: store the (first) text encoder in open_clip's names, as SD 2.x checkpoints
    do; by default, when its width is SD 2.x's (1024)."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(folder), Path(target)
    unet_config = json.loads((src / "unet" / "config.json").read_text(encoding="utf-8"))
    vae_config = json.loads((src / "vae" / "config.json").read_text(encoding="utf-8"))
    xl = (src / "text_encoder_2").is_dir()
    if open_clip is None:
        open_clip = not xl and unet_config.get("cross_attention_dim") == 1024
    state: dict[str, Any] = {}
    state.update(unet_to_original(load_file(src / "unet" / "diffusion_pytorch_model.safetensors"), unet_config))
    state.update(vae_to_original(load_file(src / "vae" / "diffusion_pytorch_model.safetensors"), vae_config))
    text = load_file(src / "text_encoder" / "model.safetensors")
    if open_clip:
        state.update({SD2_OPENCLIP_PREFIX + k: v for k, v in openclip_to_original(text).items()})
    else:
        clip_prefix = XL_CLIP_PREFIX if xl else CLIP_PREFIX
        for key, value in text.items():
            # transformers >= 5.6 saves CLIPTextModel without its "text_model." level; originals have it.
            state[clip_prefix + key.removeprefix("text_model.")] = value
    if xl:
        for key, value in openclip_to_original(load_file(src / "text_encoder_2" / "model.safetensors")).items():
            state[XL_OPENCLIP_PREFIX + key] = value
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(dst), metadata={"format": "pt"})
    return dst
