"""Tiny seeded LoRA files for a loaded tiny model, in the two layouts people share them in.

    write_diffusers_lora(model, "unet", path, rank=4, seed=1)       # unet.<module>.lora_A/B.weight
    write_kohya_sd_lora(model, path, text_encoder=True, seed=2)     # lora_unet_<module>.lora_down/up.weight + .alpha
    write_kohya_flux2_lora(model, path, seed=3)                     # lora_unet_double_blocks_0_img_attn_proj ...

The targets are the attention projections diffusers' own LoRA trainers use; the weights are seeded
normal draws (lora_B too, which real training starts at zero, so the LoRA changes the picture).
Byte-identical across processes for the same model files and seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Linear layers a LoRA targets, by the end of their module name.
_UNET_TARGETS = (".attn1.to_q", ".attn1.to_k", ".attn1.to_v", ".attn1.to_out.0", ".attn2.to_q", ".attn2.to_v")
# kohya text-encoder LoRAs carry out_proj: diffusers recognises their converted layout by it.
_TEXT_TARGETS = (".self_attn.q_proj", ".self_attn.v_proj", ".self_attn.out_proj")
_TRANSFORMER_TARGETS = (".attn.to_q", ".attn.to_k", ".attn.to_v", ".attn.to_out.0")


def _linears(module: Any, ends: tuple[str, ...]) -> list[tuple[str, Any]]:
    import torch

    return [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(ends)]


def _pair(gen: Any, layer: Any, rank: int, std: float) -> tuple[Any, Any]:
    import torch

    down = torch.randn(rank, layer.in_features, generator=gen) * std
    up = torch.randn(layer.out_features, rank, generator=gen) * std
    return down.contiguous(), up.contiguous()


def _save(tensors: dict[str, Any], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_diffusers_lora(model: Any, component: str, path: Path, *, rank: int = 4, seed: int = 0, std: float = 0.2) -> Path:
    """A diffusers-layout LoRA on one component ("unet", "text_encoder", "transformer")."""
    import torch

    module = model.component(component) if hasattr(model, "component") else getattr(model, component)
    ends = {"unet": _UNET_TARGETS, "transformer": _TRANSFORMER_TARGETS}.get(component, _TEXT_TARGETS)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, layer in _linears(module, ends):
        down, up = _pair(gen, layer, rank, std)
        tensors[f"{component}.{name}.lora_A.weight"] = down
        tensors[f"{component}.{name}.lora_B.weight"] = up
    return _save(tensors, Path(path))


def write_kohya_sd_lora(model: Any, path: Path, *, text_encoder: bool = True, rank: int = 4, alpha: float = 2.0,
                        seed: int = 0, std: float = 0.2) -> Path:
    """A kohya-layout LoRA for a Stable Diffusion model: UNet attention, and optionally the text encoder's."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("lora_unet_", model.unet, _UNET_TARGETS)]
    if text_encoder:
        parts.append(("lora_te_", model.text_encoder, _TEXT_TARGETS))
    for prefix, module, ends in parts:
        for name, layer in _linears(module, ends):
            if prefix == "lora_te_" and not name.startswith("text_model."):
                name = "text_model." + name  # kohya names CLIP's layers from text_model
            key = prefix + name.replace(".", "_")
            down, up = _pair(gen, layer, rank, std)
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.lora_up.weight"] = up
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    return _save(tensors, Path(path))


def write_kohya_flux2_lora(model: Any, path: Path, *, rank: int = 4, alpha: float = 2.0, seed: int = 0, std: float = 0.2) -> Path:
    """A kohya-layout (BFL block names) LoRA for a Flux 2 transformer: the image and text attention
    output projections of every double block and the output projection of every single block."""
    import torch

    transformer = model.component("transformer")
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    targets = []
    for i, block in enumerate(transformer.transformer_blocks):
        targets += [(f"lora_unet_double_blocks_{i}_img_attn_proj", block.attn.to_out[0]),
                    (f"lora_unet_double_blocks_{i}_txt_attn_proj", block.attn.to_add_out)]
    for i, block in enumerate(transformer.single_transformer_blocks):
        targets.append((f"lora_unet_single_blocks_{i}_linear2", block.attn.to_out))
    for key, layer in targets:
        down, up = _pair(gen, layer, rank, std)
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    return _save(tensors, Path(path))
