"""IP-Adapter maths for SD 1.x / SDXL, as diffusers' pipelines do it (encode_image,
prepare_ip_adapter_image_embeds, UNet2DConditionModel._load_ip_adapter_weights).

diffusers' `load_ip_adapter` rewrites the UNet for good: its cross-attention processors gain the
adapter's to_k_ip / to_v_ip and the UNet an image projection. Here the UNet is shared by every node
of a process (one load per model), and a plain denoise must still see the plain UNet, so the
adapter is installed only for the duration of one denoise (`installed`), under a lock per UNet
that every denoise takes, and the UNet's own processors are put back after. The adapter's modules
are converted by diffusers' own functions once per (UNet, adapter) and kept in the adapter handle.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from editgraph.errors import NodeError
from editgraph.models.offload import execution_device

_unet_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def unet_lock(unet: Any) -> threading.RLock:
    with _locks_guard:
        lock = _unet_locks.get(unet)
        if lock is None:
            lock = _unet_locks[unet] = threading.RLock()
        return lock


def to_pil(image: torch.Tensor) -> list[Any]:
    """(B, 3, H, W) 0..1 -> B RGB PIL pictures: the pipelines' feature extractor takes PIL. Exact
    for pictures read from 8-bit files (k/255 * 255 rounds back to k)."""
    from PIL import Image as PILImage

    if image.ndim != 4 or image.shape[1] != 3:
        raise NodeError(f"ip_adapter.encode: image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    u8 = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return [PILImage.fromarray(x.permute(1, 2, 0).numpy()) for x in u8]


def encode_image(adapter: Any, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StableDiffusionPipeline.encode_image for the plain IP-Adapter: the CLIP image embedding of
    each picture (n, D) and the zeros guidance steers away from."""
    encoder = adapter.image_encoder
    pixels = adapter.feature_extractor(to_pil(image), return_tensors="pt").pixel_values
    # the device it computes on: offloaded in group/sequential mode its weights sit on the CPU
    # between calls, and encoder.device would say so
    pixels = pixels.to(device=execution_device(encoder), dtype=next(encoder.parameters()).dtype)
    embeds = encoder(pixels).image_embeds
    return embeds, torch.zeros_like(embeds)


def _modules_for(unet: Any, adapter: Any) -> tuple[dict[str, Any], Any]:
    """(attention processors, image projection) of `adapter` for `unet`, built once per pair with
    diffusers' converters (which read the UNet's plain processors: call with those installed)."""
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    cache = adapter.unet_modules()
    found = cache.get(unet)
    if found is None:
        state = adapter.weights
        cross = state["image_proj"]["proj.weight"].shape[0] // 4
        if cross != unet.config.cross_attention_dim:
            raise NodeError(
                f"IP-Adapter {adapter.name!r} is made for a UNet with cross-attention width {cross}, but this model's is "
                f"{unet.config.cross_attention_dim} (SD 1.x: 768, SDXL: 2048); pick the adapter file for this model's family"
            )
        try:
            procs = unet._convert_ip_adapter_attn_to_diffusers([state], low_cpu_mem_usage=False)
        except KeyError as exc:
            raise NodeError(f"IP-Adapter {adapter.name!r} does not fit this UNet's attention layers (no weights for {exc})") from None
        proj = MultiIPAdapterImageProjection([unet._convert_ip_adapter_image_proj_to_diffusers(state["image_proj"], low_cpu_mem_usage=False)])
        for module in (*procs.values(), proj):
            if isinstance(module, torch.nn.Module):
                module.to(device=execution_device(unet), dtype=unet.dtype).eval().requires_grad_(False)
        found = cache[unet] = (procs, proj)
    return found


@contextlib.contextmanager
def installed(unet: Any, adapter: Any | None, scale: float) -> Iterator[None]:
    """Hold the UNet's lock for one denoise; with an adapter, run it with the adapter's processors
    at `scale` (set_ip_adapter_scale) and its image projection, then restore the plain UNet."""
    with unet_lock(unet):
        if adapter is None:
            yield
            return
        plain = dict(unet.attn_processors)
        procs, proj = _modules_for(unet, adapter)
        for p in procs.values():
            if hasattr(p, "scale") and isinstance(p.scale, list):
                p.scale = [scale] * len(p.scale)
        saved = (unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
        unet.set_attn_processor(dict(procs))  # set_attn_processor pops from the dict it is given
        unet.encoder_hid_proj = proj
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        try:
            yield
        finally:
            unet.set_attn_processor(plain)
            unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = saved


def image_embeds(ip: Any, batch: int, cfg_on: bool, device: Any, dtype: Any) -> list[torch.Tensor]:
    """prepare_ip_adapter_image_embeds: (B or 2B, n, D), negative first, in a one-adapter list."""
    pos = torch.cat([ip.embeds.contiguous()[None]] * batch, dim=0)
    if cfg_on:
        neg = torch.cat([ip.negative.contiguous()[None]] * batch, dim=0)
        pos = torch.cat([neg, pos], dim=0)
    return [pos.to(device=device, dtype=dtype)]
