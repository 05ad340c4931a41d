"""The denoise loop and what it shares between the diffusion nodes (prompt, VAE, denoise, refine,
instruct), which never import each other.

Every function here keeps the order of operations of diffusers' own pipelines
(StableDiffusionPipeline, ...Img2ImgPipeline, ...InpaintPipeline, ...InstructPix2PixPipeline), so
on the CPU the same seed and scheduler give the same latents bit for bit. What that takes:

- one torch.Generator per run, drawn in the pipelines' order: the VAE posterior sample, then the
  noise, then (inpainting) the masked image's posterior sample; the same generator goes to
  scheduler.step (ancestral samplers draw there);
- the pipelines' memory layouts: their image preprocessing yields channels-last tensors, and a
  contiguous copy of the same values changes the VAE's output by ~1e-6. Values that crossed the
  cache come back contiguous, so every entry point here first restores the pipeline's layout:
  the result depends on the values alone, never on whether they came from memory or disk;
- the pipelines' timestep arithmetic for strength, including scheduler.set_begin_index.

diffusers is imported inside functions: `editgraph validate` / `nodes` must not pay its ~5 s import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from editgraph.diffusion.schedules import generator_for, make_scheduler
from editgraph.models.offload import execution_device
from editgraph.diffusion.vae import check_model_family, decode_latents, encode_moments, posterior, sample_image_latents, vae_input
from editgraph.errors import NodeError



@dataclass
class DenoiseJob:
    """One run of the loop. `latent` supplies the shape and the start (see start_latents)."""

    model: Any
    cond: Any  # Conditioning
    latent: Any  # Latent
    steps: int
    cfg: float
    strength: float
    seed: int
    scheduler: str
    mask: torch.Tensor | None = None  # (B, 1, H, W) pixels, 1 = change
    image: torch.Tensor | None = None  # (B, 3, H, W) pixels for 9-channel inpainting
    progress: Callable[[int, int, torch.Tensor], None] | None = None  # (step, total, current latents)
    ip_adapter: Any = None  # IPAdapter handle: its weights join the UNet for this run only
    ip: Any = None  # ImageEmbeds of the reference picture(s)
    ip_scale: float = 1.0  # set_ip_adapter_scale: how strongly the references steer


def get_timesteps(scheduler: Any, steps: int, strength: float) -> torch.Tensor:
    """The img2img pipelines' arithmetic: skip the first (1 - strength) of the schedule."""
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    if steps - t_start < 1:
        raise NodeError(
            f"strength {strength} of {steps} steps leaves no step to run (int(steps * strength) = 0); "
            "raise steps or strength"
        )
    return timesteps


def step_kwargs(scheduler: Any, generator: torch.Generator) -> dict[str, Any]:
    """prepare_extra_step_kwargs(generator, eta=0.0): pass what the scheduler's step() accepts."""
    import inspect

    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _randn(shape: torch.Size | tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=generator.device, dtype=dtype)


def _prompt_embeds(cond: Any, batch: int, cfg_on: bool) -> torch.Tensor:
    """(2B or B, tokens, dim): negative first, as the pipelines concatenate them."""
    pos = cond.embeds.contiguous()
    if pos.shape[0] != batch:
        pos = pos.repeat(batch // pos.shape[0], 1, 1) if batch % pos.shape[0] == 0 else None
    if pos is None:
        raise NodeError(f"conditioning has batch {cond.embeds.shape[0]} but the latent has batch {batch}")
    if not cfg_on:
        return pos
    neg = cond.negative if cond.negative is not None else torch.zeros_like(cond.embeds)
    neg = neg.contiguous().repeat(batch // neg.shape[0], 1, 1) if neg.shape[0] != batch else neg.contiguous()
    return torch.cat([neg, pos])


def _sdxl_added_cond(job: DenoiseJob, batch: int, cfg_on: bool, latents: torch.Tensor) -> dict[str, Any] | None:
    """SDXL's micro-conditioning: pooled text embeds and (original size, crop, target size) ids."""
    if job.model.family != "sdxl":
        return None
    cond = job.cond
    f = job.model.vae_scale_factor
    h, w = latents.shape[-2] * f, latents.shape[-1] * f
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=latents.dtype).repeat(batch, 1)
    pooled = cond.pooled.repeat(batch // cond.pooled.shape[0], 1)
    if cfg_on:
        neg = cond.negative_pooled if cond.negative_pooled is not None else torch.zeros_like(cond.pooled)
        pooled = torch.cat([neg.repeat(batch // neg.shape[0], 1), pooled])
        time_ids = torch.cat([time_ids, time_ids])
    return {"text_embeds": pooled, "time_ids": time_ids}


def denoise(job: DenoiseJob) -> torch.Tensor:
    """txt2img, img2img and inpainting in one loop, optionally steered by IP-Adapter references;
    returns the final latents (B, C, h, w)."""
    from editgraph.diffusion.ip_adapter import installed

    if (job.ip is None) != (job.ip_adapter is None):
        raise NodeError("denoise: IP-Adapter references need both `ip` (from ip_adapter.encode) and `ip_adapter`; connect both or neither")
    with installed(job.model.unet, job.ip_adapter, job.ip_scale):
        return _denoise(job)


def _denoise(job: DenoiseJob) -> torch.Tensor:
    model, latent = job.model, job.latent
    unet = model.unet
    unet_channels = int(unet.config.in_channels)
    if unet_channels == 8:
        raise NodeError(f"model {model.name!r} is an InstructPix2Pix model (8-channel UNet); use the `instruct` node")
    if unet_channels not in (4, 9):
        raise NodeError(f"model {model.name!r}: UNet with {unet_channels} input channels; supported are 4, 8 (instruct) and 9")
    check_model_family("denoise", model, latent.family)
    dtype = unet.dtype
    batch = latent.samples.shape[0]
    h, w = latent.samples.shape[-2:]
    f = model.vae_scale_factor
    # 0. the same wiring runs 4- and 9-channel models. A 9-channel (inpainting) UNet always sees
    #    a mask and the masked picture's latents: with no mask, the whole picture may change (an
    #    all-ones mask, so nothing of the picture is kept); with a mask but no `image`, the
    #    picture is the latent's own decode (what vae.encode saw, through the VAE's round trip;
    #    the pixels outside the mask are pasted back from the photo downstream anyway).
    mask_px, image_px = job.mask, job.image
    if unet_channels == 9:
        if mask_px is None:
            mask_px = torch.ones(batch, 1, h * f, w * f)
            image_px = torch.zeros(batch, 3, h * f, w * f)
        elif image_px is None:
            image_px = decode_latents(model, latent.samples, max(h, w) * f > 1024, latent.channels_last)
    inpaint = mask_px is not None
    device = execution_device(unet)  # the onload device when offloaded (weights then sit on the CPU)
    generator = generator_for(job.seed, device)
    cfg_on = job.cfg > 1.0 and unet.config.time_cond_proj_dim is None

    # 1. prompt embeddings, negative first
    prompt_embeds = _prompt_embeds(job.cond, batch, cfg_on).to(device=device, dtype=dtype)

    # 2. timesteps, cut by strength
    scheduler = make_scheduler(job.scheduler, model.scheduler_config)
    scheduler.set_timesteps(job.steps, device=device)
    timesteps = get_timesteps(scheduler, job.steps, job.strength)
    latent_timestep = timesteps[:1].repeat(batch)
    strength_max = job.strength == 1.0

    # 3. starting latents: draws in the pipelines' order (posterior sample, noise, masked image)
    moments = latent.moments.to(device) if latent.moments is not None else None
    bare = latent.samples.to(device=device, dtype=dtype).contiguous()
    if not inpaint:
        if moments is not None:  # StableDiffusionImg2ImgPipeline.prepare_latents
            init_latents = torch.cat([sample_image_latents(model, moments.to(dtype), generator)], dim=0)
            noise = _randn(init_latents.shape, generator, dtype)
            latents = scheduler.add_noise(init_latents, noise, latent_timestep)
        elif strength_max:  # StableDiffusionPipeline.prepare_latents: the latent only gives the shape
            latents = _randn(bare.shape, generator, dtype) * scheduler.init_noise_sigma
        else:  # img2img from a latent (a refine pass, an upscaled latent)
            init_latents = torch.cat([bare], dim=0)
            noise = _randn(init_latents.shape, generator, dtype)
            latents = scheduler.add_noise(init_latents, noise, latent_timestep)
    else:  # StableDiffusionInpaintPipeline.prepare_latents
        image_latents = None
        if unet_channels == 4 or not strength_max:
            image_latents = sample_image_latents(model, moments.to(dtype), generator) if moments is not None else bare
            image_latents = image_latents.repeat(batch // image_latents.shape[0], 1, 1, 1)
        noise = _randn((batch, model.latent_channels, h, w), generator, dtype)
        latents = noise * scheduler.init_noise_sigma if strength_max else scheduler.add_noise(image_latents, noise, latent_timestep)

        # 4. mask (binarized like the pipeline's mask processor) and masked-image latents
        mask_condition = _pixel_mask(mask_px, batch, h * f, w * f).to(device=device, dtype=dtype)
        if image_px is not None:
            init_image = vae_input(model, image_px, "image").to(torch.float32)
            if init_image.shape[-2:] != mask_condition.shape[-2:]:
                raise NodeError(
                    f"denoise: image is {init_image.shape[-1]}x{init_image.shape[-2]} but the latent decodes to "
                    f"{w * f}x{h * f} (width x height)"
                )
            masked_image = (init_image * (mask_condition < 0.5)).to(dtype)
            masked_image_latents = sample_image_latents(model, encode_moments(model, masked_image), generator)
        else:
            # The pipeline encodes the masked image even for a 4-channel UNet; its posterior draw
            # moves the generator, which ancestral samplers feel. Draw the same amount.
            _randn((batch, model.latent_channels, h, w), generator, dtype)
            masked_image_latents = None
        mask = F.interpolate(mask_condition, size=(h, w)).to(dtype)
        if masked_image_latents is not None and masked_image_latents.shape[0] < batch:
            masked_image_latents = masked_image_latents.repeat(batch // masked_image_latents.shape[0], 1, 1, 1)
        mask_in = torch.cat([mask] * 2) if cfg_on else mask
        mil_in = None
        if masked_image_latents is not None:
            mil_in = torch.cat([masked_image_latents] * 2) if cfg_on else masked_image_latents
            mil_in = mil_in.to(dtype)

    added_cond = _sdxl_added_cond(job, batch, cfg_on, latents)
    if job.ip is not None:  # the pipelines' prepare_ip_adapter_image_embeds
        from editgraph.diffusion.ip_adapter import image_embeds

        added_cond = {**(added_cond or {}), "image_embeds": image_embeds(job.ip, batch, cfg_on, device, dtype)}
    extra = step_kwargs(scheduler, generator)

    # 5. the loop
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        latent_model_input = torch.cat([latents] * 2) if cfg_on else latents
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        if inpaint and unet_channels == 9:
            latent_model_input = torch.cat([latent_model_input, mask_in, mil_in], dim=1)
        noise_pred = unet(
            latent_model_input, t, encoder_hidden_states=prompt_embeds, timestep_cond=None,
            cross_attention_kwargs=None, added_cond_kwargs=added_cond, return_dict=False,
        )[0]
        if cfg_on:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + job.cfg * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        if inpaint and unet_channels == 4:
            # latent blending: outside the mask, the image's own latents noised to the next timestep
            init_latents_proper = image_latents
            if i < n - 1:
                init_latents_proper = scheduler.add_noise(init_latents_proper, noise, timesteps[i + 1 : i + 2])
            latents = (1 - mask) * init_latents_proper + mask * latents
        if job.progress is not None:
            job.progress(i + 1, n, latents)
    return latents


def _pixel_mask(mask: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) 0/1: the pipeline's mask processor binarizes at 0.5."""
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise NodeError(f"mask must be a (B, 1, H, W) tensor, got shape {tuple(mask.shape)}")
    if mask.shape[-2:] != (height, width):
        raise NodeError(
            f"mask is {mask.shape[-1]}x{mask.shape[-2]} but the latent decodes to {width}x{height} (width x height)"
        )
    if mask.shape[0] not in (1, batch):
        raise NodeError(f"mask has batch {mask.shape[0]} but the latent has batch {batch}")
    binary = (mask >= 0.5).to(mask.dtype).contiguous()
    return binary.repeat(batch // binary.shape[0], 1, 1, 1)


def instruct(
    model: Any, cond: Any, latent: Any, *, steps: int, cfg: float, image_cfg: float, seed: int, scheduler_name: str,
    progress: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """StableDiffusionInstructPix2PixPipeline's loop: the UNet sees the noisy latent next to the
    source image's latent (the posterior's mode, unscaled), guided by text and by image."""
    unet = model.unet
    if int(unet.config.in_channels) != 8:
        raise NodeError(
            f"instruct needs an InstructPix2Pix model (8-channel UNet); {model.name!r} has {unet.config.in_channels}"
        )
    check_model_family("instruct", model, latent.family)
    dtype = unet.dtype
    device = execution_device(unet)  # the onload device when offloaded (weights then sit on the CPU)
    generator = generator_for(seed, device)
    cfg_on = cfg > 1.0 and image_cfg >= 1.0

    # 1. prompt embeddings: [text, negative, negative] (pix2pix's own order)
    batch = latent.samples.shape[0]
    pos = cond.embeds.contiguous().repeat(batch // cond.embeds.shape[0], 1, 1)
    if cfg_on:
        neg = (cond.negative if cond.negative is not None else torch.zeros_like(cond.embeds)).contiguous()
        neg = neg.repeat(batch // neg.shape[0], 1, 1)
        prompt_embeds = torch.cat([pos, neg, neg])
    else:
        prompt_embeds = pos
    prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)

    # 2. timesteps (no strength: pix2pix always runs the whole schedule)
    sched = make_scheduler(scheduler_name, model.scheduler_config)
    sched.set_timesteps(steps, device=device)
    timesteps = sched.timesteps

    # 3. the source image's latent: the posterior's mode, unscaled, as the pipeline takes it
    if latent.moments is not None:
        image_latents = posterior(latent.moments.to(device=device, dtype=dtype)).mode()
    else:
        image_latents = latent.samples.to(device=device, dtype=dtype).contiguous() / model.vae.config.scaling_factor
    image_latents = torch.cat([image_latents], dim=0)
    if cfg_on:
        image_latents = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)], dim=0)

    # 4. starting noise
    latents = _randn((batch, model.latent_channels, *latent.samples.shape[-2:]), generator, dtype) * sched.init_noise_sigma
    extra = step_kwargs(sched, generator)

    # 5. the loop
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        latent_model_input = torch.cat([latents] * 3) if cfg_on else latents
        scaled = sched.scale_model_input(latent_model_input, t)
        scaled = torch.cat([scaled, image_latents], dim=1)
        noise_pred = unet(scaled, t, encoder_hidden_states=prompt_embeds, added_cond_kwargs=None,
                          cross_attention_kwargs=None, return_dict=False)[0]
        if cfg_on:
            noise_pred_text, noise_pred_image, noise_pred_uncond = noise_pred.chunk(3)
            noise_pred = (
                noise_pred_uncond
                + cfg * (noise_pred_text - noise_pred_image)
                + image_cfg * (noise_pred_image - noise_pred_uncond)
            )
        latents = sched.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        if progress is not None:
            progress(i + 1, n, latents)
    return latents
