"""Flux Kontext (FluxKontextPipeline) in separate stages.

Kontext edits one picture by instruction: CLIP gives the pooled text vector, T5 the token
embeddings; the picture is VAE-encoded (shifted and scaled) and its packed tokens ride along
after the generated ones at time coordinate 1. The transformer is guidance-distilled (`guidance`
enters as an embedding); a negative prompt with `true_cfg` > 1 adds real classifier-free guidance.

The latents a denoise returns are unpacked (B, C, h, w) in the VAE's scaled space; `decode` undoes
the scale and shift, so a denoise never loads the VAE.
"""

from __future__ import annotations

from typing import Any

import torch

from editgraph.diffusion import flow
from editgraph.errors import NodeError
from editgraph.values.sockets import Conditioning, Reference, References

MAX_SEQUENCE_LENGTH = 512  # FluxKontextPipeline's T5 prompt length
MAX_REFERENCES = 1  # the pipeline takes one picture


def pipeline_class(model: Any) -> Any:
    import diffusers

    return getattr(diffusers, model.pipeline)


def _helper(model: Any, *, vae: bool = False, text: bool = False) -> Any:
    """The pipeline class over only the components a stage needs (see diffusion/flux2.py)."""
    get = model.component
    return pipeline_class(model)(
        scheduler=None,
        vae=model.vae if vae else None,
        text_encoder=get("text_encoder") if text else None,
        tokenizer=get("tokenizer") if text else None,
        text_encoder_2=get("text_encoder_2") if text else None,
        tokenizer_2=get("tokenizer_2") if text else None,
        transformer=None,
    )


def vae_scale_factor(model: Any) -> int:
    return 2 ** (len(model.vae_config["block_out_channels"]) - 1)


def encode_prompt(model: Any, prompt: str, negative_prompt: str | None) -> Conditioning:
    """T5 token embeddings (1, 512, d) and CLIP's pooled vector, for the prompt and (when given)
    the negative prompt; true classifier-free guidance needs the latter."""
    pipe = _helper(model, text=True)
    kw = {"device": flow.device_of(pipe.text_encoder_2), "max_sequence_length": MAX_SEQUENCE_LENGTH}
    embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, **kw)
    negative = negative_pooled = None
    if negative_prompt is not None:
        negative, negative_pooled, _ = pipe.encode_prompt(prompt=negative_prompt, prompt_2=None, **kw)
    return Conditioning(
        embeds=flow.owned(embeds), pooled=flow.owned(pooled), negative=flow.owned(negative),
        negative_pooled=flow.owned(negative_pooled), family=model.family,
    )


def encode_reference(model: Any, image: torch.Tensor, auto_resize: bool) -> Reference:
    """The picture to edit: resized to the nearest Kontext training resolution (auto_resize) or
    cropped down to a multiple of 16, then VAE-encoded (its mode), shifted and scaled."""
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    pipe = _helper(model, vae=True)
    img = flow.to_pil(image, "reference")
    height, width = pipe.image_processor.get_default_height_width(img)
    if auto_resize:
        aspect = width / height
        _, width, height = min((abs(aspect - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    multiple = pipe.vae_scale_factor * 2
    width, height = width // multiple * multiple, height // multiple * multiple
    pixels = pipe.image_processor.preprocess(pipe.image_processor.resize(img, height, width), height, width)
    pixels = pixels.to(device=flow.device_of(pipe.vae), dtype=model.vae.dtype)
    latents = pipe._encode_vae_image(image=pixels, generator=None)  # (1, C, h, w)
    return Reference(latents=flow.owned(latents), family=model.family, size=(width, height))


def denoise(
    model: Any, cond: Conditioning, refs: References | None, *, width: int, height: int, steps: int,
    guidance: float, true_cfg: float, seed: int, progress=None,
) -> torch.Tensor:
    """FluxKontextPipeline's generation; returns unpacked latents (1, C, h, w) in the scaled space."""

    cls = pipeline_class(model)
    items = list(refs.items) if refs is not None else []
    if len(items) > MAX_REFERENCES:
        raise NodeError(f"denoise: Flux Kontext takes {MAX_REFERENCES} reference picture, got {len(items)}")
    if not width and items:
        width = int(items[0].size[0])
    if not height and items:
        height = int(items[0].size[1])
    if not width or not height:
        raise NodeError("denoise: give `width` and `height` (or a reference picture to take them from)")
    f = vae_scale_factor(model)
    flow.check_size("denoise", width, height, f * 2)
    transformer, device, generator, dtype, channels, lh, lw = flow.setup(model, cond, seed, width, height, f)

    # 1. the picture's tokens and ids (time coordinate 1), then the generated ones' ids
    ref_tokens = None
    latent_ids = cls._prepare_latent_image_ids(1, lh // 2, lw // 2, device, dtype)
    if items:
        ref = items[0].latents.to(device=device, dtype=dtype)
        rh, rw = ref.shape[2:]
        ref_tokens = cls._pack_latents(ref, 1, channels, rh, rw)
        ref_ids = cls._prepare_latent_image_ids(1, rh // 2, rw // 2, device, dtype)
        ref_ids[..., 0] = 1
        latent_ids = torch.cat([latent_ids, ref_ids], dim=0)

    # 2. starting noise: the run's only random draw
    latents = cls._pack_latents(flow.noise((1, channels, lh, lw), generator, dtype, device), 1, channels, lh, lw)

    # 3. schedule, shifted for this many tokens
    scheduler, timesteps = flow.schedule(model, steps, latents.shape[1], device)

    # 4. the loop: distilled guidance as an embedding, true CFG only with a negative prompt
    predict = _predictor(transformer, cond, guidance, true_cfg, latent_ids, ref_tokens, device)

    latents = flow.run_loop(flow.Loop(scheduler, timesteps, predict, progress=progress), latents)
    return cls._unpack_latents(latents, height, width, f)


def denoise_masked(
    model: Any, cond: Conditioning, source: Reference, mask: torch.Tensor, refs: References | None, *,
    steps: int, guidance: float, true_cfg: float = 1.0, strength: float, seed: int, progress=None,
) -> torch.Tensor:
    """FluxKontextInpaintPipeline: repaint where `mask` is white, keep the source's latents elsewhere
    (blended back at every step's noise level). The model sees the reference when one is given,
    else the source itself. Returns unpacked latents like `denoise`.

    The pipeline also VAE-encodes the masked picture, drawing from the generator after the noise,
    and then never uses the result: with nothing drawn after it, skipping it changes no number."""
    import diffusers

    cls = diffusers.FluxKontextInpaintPipeline  # any Kontext model: the inpaint pipeline takes its components
    items = list(refs.items) if refs is not None else []
    if len(items) > MAX_REFERENCES:
        raise NodeError(f"denoise: Flux Kontext takes {MAX_REFERENCES} reference picture besides the source, got {len(items)}")
    width, height = (int(v) for v in source.size)
    f = vae_scale_factor(model)
    transformer, device, generator, dtype, channels, lh, lw = flow.setup(model, cond, seed, width, height, f)

    # 1. schedule for the whole run, then cut by strength
    scheduler, timesteps = flow.schedule(model, steps, (height // f // 2) * (width // f // 2), device, strength=strength)

    # 2. start: the source's latents noised to the first timestep (the run's only random draw that counts)
    image_latents = source.latents.to(device=device, dtype=dtype)
    noise = flow.noise((1, channels, lh, lw), generator, dtype, device)
    latents = cls._pack_latents(scheduler.scale_noise(image_latents, timesteps[:1].repeat(1), noise), 1, channels, lh, lw)
    noise = cls._pack_latents(noise, 1, channels, lh, lw)
    packed_source = cls._pack_latents(image_latents, 1, channels, *image_latents.shape[2:])

    # 3. what the model sees besides (time coordinate 1): the reference if given, else the source
    seen = items[0].latents.to(device=device, dtype=dtype) if items else image_latents
    ref_tokens = packed_source if not items else cls._pack_latents(seen, 1, channels, *seen.shape[2:])
    seen_ids = cls._prepare_latent_image_ids(1, seen.shape[2] // 2, seen.shape[3] // 2, device, dtype)
    seen_ids[..., 0] = 1
    latent_ids = torch.cat([cls._prepare_latent_image_ids(1, lh // 2, lw // 2, device, dtype), seen_ids], dim=0)

    # 4. the mask, binarised at the picture's size, nearest-sampled to the latent grid (on the CPU,
    #    as the pipeline does), then on the device, packed
    helper = cls(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=None)
    helper.mask_processor.register_to_config(vae_scale_factor=f * 2, vae_latent_channels=channels)
    mask_pixels = helper.mask_processor.preprocess(flow.mask_to_pil(mask), height=height, width=width)
    grid = torch.nn.functional.interpolate(mask_pixels, size=(lh, lw)).to(device=device, dtype=dtype)
    packed_mask = cls._pack_latents(grid.repeat(1, channels, 1, 1), 1, channels, lh, lw)

    predict = _predictor(transformer, cond, guidance, true_cfg, latent_ids, ref_tokens, device)

    blend = flow.keep_known(scheduler, timesteps, packed_source, packed_mask, noise)
    loop = flow.Loop(scheduler, timesteps, predict, after_step=blend, progress=progress, begin_index=None)
    return cls._unpack_latents(flow.run_loop(loop, latents), height, width, f)


def _predictor(transformer: Any, cond: Conditioning, guidance: float, true_cfg: float, latent_ids: torch.Tensor,
               ride_along: torch.Tensor | None, device: torch.device):
    """The loop's velocity for the latents' tokens: the transformer sees them followed by the
    pictures' tokens (`ride_along`); distilled guidance as an embedding where the model has one,
    true CFG only with a negative prompt. The prompt's tensors, their ids and the guidance on `device`."""
    g = torch.full([1], guidance, device=device, dtype=torch.float32).expand(1) if transformer.config.guidance_embeds else None
    text_ids = torch.zeros(cond.embeds.shape[1], 3).to(device=device, dtype=cond.embeds.dtype)
    true_cfg_on = true_cfg > 1 and cond.negative is not None
    embeds, pooled = cond.embeds.to(device), cond.pooled.to(device)
    if true_cfg_on:
        negative, negative_pooled = cond.negative.to(device), cond.negative_pooled.to(device)

    def run(hidden, timestep, embeds, pooled):
        return transformer(
            hidden_states=hidden, timestep=timestep / 1000, guidance=g, pooled_projections=pooled,
            encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=latent_ids, joint_attention_kwargs={},
            return_dict=False,
        )[0]

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        hidden = latents if ride_along is None else torch.cat([latents, ride_along], dim=1)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        velocity = run(hidden, timestep, embeds, pooled)[:, : latents.size(1)]
        if true_cfg_on:
            uncond = run(hidden, timestep, negative, negative_pooled)[:, : latents.size(1)]
            velocity = uncond + true_cfg * (velocity - uncond)
        return velocity

    return predict


def decode(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> 0..1 pixels (undo scale and shift, VAE decode)."""
    vae = model.vae
    latents = latents.to(flow.device_of(vae))  # a denoise's latents, or the CPU's when they came from the disk cache
    latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
    return flow.postprocess(vae.decode(latents, return_dict=False)[0])
