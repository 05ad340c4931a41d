"""Pixels to latents and back through the VAE, in the memory layouts diffusers' pipelines use
(see editgraph.diffusion.denoise's docstring for why layout matters)."""

from __future__ import annotations

from typing import Any

import torch

from editgraph.errors import NodeError
from editgraph.models.offload import execution_device


def check_model_family(what: str, model: Any, latent_family: str) -> None:
    if latent_family and model.family != latent_family:
        raise NodeError(
            f"{what}: the latent belongs to the {latent_family!r} family but model {model.name!r} is {model.family!r}; "
            "latents do not cross families (decode with one model and encode with the other to move between them)"
        )


def vae_input(model: Any, image: torch.Tensor, what: str = "image") -> torch.Tensor:
    """0..1 pixels -> the VAE's -1..1 input, in the channels-last layout of diffusers' preprocessing."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise NodeError(f"{what} must be a (B, 3, H, W) image tensor, got shape {tuple(image.shape)}")
    f = model.vae_scale_factor
    h, w = image.shape[-2:]
    if h % f or w % f:
        raise NodeError(
            f"{what} is {w}x{h} (width x height) but the VAE of {model.name!r} needs both divisible by {f}; "
            f"resize it first, e.g. image.resize with multiple_of={f}"
        )
    # Same expression as VaeImageProcessor.normalize, on the same layout (see module docstring).
    pixels = image.to(device=execution_device(model.vae), dtype=model.vae.dtype).contiguous(memory_format=torch.channels_last)
    return 2.0 * pixels - 1.0


def encode_moments(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE posterior's parameters (B, 2C, h, w) for -1..1 pixels from vae_input()."""
    return model.vae.encode(pixels).latent_dist.parameters


def posterior(moments: torch.Tensor) -> Any:
    """The VAE posterior, rebuilt in the layout the VAE encoder gives it (channels-last)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    return DiagonalGaussianDistribution(moments.contiguous(memory_format=torch.channels_last))  # on the moments' device


def sample_image_latents(model: Any, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw an image latent from the posterior with the run's generator, scaled as the pipelines do."""
    return model.vae.config.scaling_factor * posterior(moments).sample(generator)


def is_channels_last(t: torch.Tensor) -> bool:
    """True when a 4-D tensor is laid out channels-last (and that differs from contiguous)."""
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def decode_latents(model: Any, samples: torch.Tensor, tiled: bool, channels_last: bool = False) -> torch.Tensor:
    """Latent -> 0..1 pixels, as the pipelines' decode + postprocess("pt") do, from the layout
    the pipeline would have (see Latent.channels_last)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    z = samples.to(device=execution_device(model.vae), dtype=model.vae.dtype).contiguous(memory_format=layout) / model.vae.config.scaling_factor
    image = model.vae.tiled_decode(z, return_dict=False)[0] if tiled else model.vae.decode(z, return_dict=False)[0]
    # Pixels go back to the CPU: the pixel nodes after a decode run there on every device.
    return (image * 0.5 + 0.5).clamp(0, 1).cpu()
