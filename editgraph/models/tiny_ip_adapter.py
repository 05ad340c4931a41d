"""A tiny IP-Adapter the project builds itself, in the layout of h94/IP-Adapter on the hub:

    tiny-ip-adapter/
      models/ip-adapter_sd15.safetensors          fits tiny-sd (and tiny-sd-inpaint)
      models/image_encoder/{config.json, model.safetensors}
      sdxl_models/ip-adapter_sdxl.safetensors     fits tiny-sdxl
      sdxl_models/image_encoder/{config.json, model.safetensors}
      editgraph.json

Each adapter file holds what diffusers' `load_ip_adapter` reads: `image_proj.proj.*` and
`image_proj.norm.*` (the plain IP-Adapter's projection of one CLIP image embedding to 4 text-like
tokens) and `ip_adapter.<k>.to_k_ip.weight` / `to_v_ip.weight` for every cross-attention layer of
the UNet it fits, numbered 1, 3, 5 ... as the original checkpoints are. The image encoders are
CLIPVisionModelWithProjection at toy width (32 px input). Weights are seeded, so two builds give
the same bytes (tests/models/test_tiny_ip_adapter.py checks, across processes too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_ADAPTERS = ("tiny-ip-adapter",)

# (subfolder, weight file, tiny model it fits, CLIP projection width, seed)
_PARTS = (
    ("models", "ip-adapter_sd15.safetensors", "tiny-sd", 32, 4000),
    ("sdxl_models", "ip-adapter_sdxl.safetensors", "tiny-sdxl", 48, 5000),
)


def _cross_attention_sizes(unet: Any) -> list[int]:
    """Hidden size of each cross-attention layer, in the order diffusers numbers the adapter's keys
    (UNet2DConditionModel.attn_processors order; see diffusers' _convert_ip_adapter_attn_to_diffusers)."""
    channels = list(unet.config.block_out_channels)
    sizes = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention: no image tokens
        if name.startswith("mid_block"):
            sizes.append(channels[-1])
        elif name.startswith("up_blocks"):
            sizes.append(list(reversed(channels))[int(name[len("up_blocks.")])])
        else:
            sizes.append(channels[int(name[len("down_blocks.")])])
    return sizes


def _image_encoder(projection: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=projection, hidden_act="gelu",
    )
    return CLIPVisionModelWithProjection(config).eval()


def make_ip_adapter_tiny(out: Path, builder_version: int, write_json) -> Path:
    """Build tiny-ip-adapter into the (empty) folder `out`."""
    import torch
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file

    from editgraph.models.tiny import TINY_MODELS, _unet

    for sub, weight, fits, projection, seed in _PARTS:
        spec = TINY_MODELS[fits]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = _image_encoder(projection)
            torch.manual_seed(seed + 1)
            unet = _unet(spec)  # only its structure: which layers the adapter feeds
            cross = int(unet.config.cross_attention_dim)
            proj = ImageProjection(image_embed_dim=projection, cross_attention_dim=cross, num_image_text_embeds=4)
            state: dict[str, torch.Tensor] = {
                "image_proj.proj.weight": proj.image_embeds.weight.detach().clone(),
                "image_proj.proj.bias": proj.image_embeds.bias.detach().clone(),
                "image_proj.norm.weight": proj.norm.weight.detach().clone(),
                "image_proj.norm.bias": proj.norm.bias.detach().clone(),
            }
            for i, hidden in enumerate(_cross_attention_sizes(unet)):
                key = 2 * i + 1
                # std 0.2: strong enough that the reference visibly moves a 2-step tiny denoise
                state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.2
                state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.2
        encoder.save_pretrained(out / sub / "image_encoder", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(out / sub / weight), metadata={"format": "pt"})
    write_json(out / "editgraph.json", {"name": "tiny-ip-adapter", "kind": "ip-adapter", "builder_version": builder_version})
    return out
