"""A cheap look at a latent mid-denoise: a fixed linear map from latent channels to RGB.

A VAE decode per step would cost as much as a step. Stable Diffusion's 4 latent channels map
roughly linearly to colour; the 4x3 factors below are the widely used least-squares fit for
SD 1.x/2.x latents (the same numbers several UIs ship for their "latent2rgb" previews). For other
channel counts (or a tiny model with random weights) the first three channels, each stretched to
its own range, still show the picture forming. No weights are needed; TAESD-style decoders would
be sharper but none ships with a licence and size we can bundle for SD latents.
"""

from __future__ import annotations

import base64
import io

import torch

_SD_FACTORS = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)
MAX_SIDE = 128  # previews are a thumbnail beside the graph; a small PNG per step keeps sockets light


def latent_to_rgb(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (3, h, w) in 0..1 for the first item of the batch."""
    x = latents[0].detach().to("cpu", torch.float32)  # (C, h, w)
    if x.shape[0] == 4:
        rgb = torch.einsum("chw,cr->rhw", x, _SD_FACTORS)  # (3, h, w), roughly -1..1
        return ((rgb + 1) / 2).clamp(0, 1)
    rgb = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    lo = rgb.amin(dim=(1, 2), keepdim=True)
    hi = rgb.amax(dim=(1, 2), keepdim=True)
    return ((rgb - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def preview_png(latents: torch.Tensor) -> str:
    """A data: URL of a small PNG of the latents, ready for an <img src>."""
    from PIL import Image

    rgb = latent_to_rgb(latents)
    h, w = rgb.shape[1:]
    scale = max(1, MAX_SIDE // max(h, w))  # upscale tiny latents (nearest: it is a preview, be honest)
    pixels = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (h, w, 3)
    img = Image.fromarray(pixels)
    if scale > 1:
        img = img.resize((w * scale, h * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
