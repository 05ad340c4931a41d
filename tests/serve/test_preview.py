"""The cheap latent-to-RGB projection behind the denoise previews."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from editgraph.serve.preview import latent_to_rgb, preview_png


def test_sd_latents_use_the_linear_factors():
    zero = latent_to_rgb(torch.zeros(1, 4, 2, 3))
    assert zero.shape == (3, 2, 3) and torch.allclose(zero, torch.full_like(zero, 0.5))
    # the first latent channel alone pushes every colour up by its row of factors
    one = torch.zeros(1, 4, 1, 1)
    one[0, 0] = 1.0
    assert torch.allclose(latent_to_rgb(one).flatten(), (torch.tensor([0.3512, 0.2297, 0.3227]) + 1) / 2)
    assert latent_to_rgb(torch.full((1, 4, 2, 2), 50.0)).max() == 1.0  # clamped


def test_other_channel_counts_stretch_the_first_three():
    x = torch.arange(16 * 2 * 2, dtype=torch.float32).reshape(1, 16, 2, 2)
    rgb = latent_to_rgb(x)
    assert rgb.shape == (3, 2, 2)
    for c in range(3):
        assert rgb[c].min() == 0 and rgb[c].max() == 1


def test_preview_is_a_small_png_data_url():
    url = preview_png(torch.randn(1, 4, 64, 96))
    img = Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
    assert img.size == (96, 64)  # already above the 128 px target's half: not scaled
    small = preview_png(torch.randn(1, 4, 8, 8))
    assert Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1]))).size == (128, 128)
