"""Qwen-Image-Edit (QwenImageEditPipeline, QwenImageEditInpaintPipeline) and its Plus variant
(QwenImageEditPlusPipeline) in separate stages.

Each reference picture is resized twice: small (CONDITION_AREA) for the Qwen2.5-VL encoder, which
reads the instruction together with the pictures ("Picture 1: ... Picture 2: ..."), and large
(VAE_AREA) for the VAE, whose packed tokens ride along after the generated ones. So here the
prompt encode depends on the references' small pictures: changing a reference re-encodes the
instruction too (the LLM looks at it), but never the other references' VAE latents.

The pipeline hard-codes both areas as module constants; the engine takes them as params with the
pipeline's values as defaults (tests lower both, on the pipeline module and in the params, because
a 1024x1024 VAE encode takes half a minute even with tiny weights on a CPU).

The first Qwen-Image-Edit reads one picture, and both its text encoder and its VAE see the same
copy at about 1024² (VAE_AREA: `condition_area` does not apply). Its inpaint pipeline repaints the
masked region of that picture: it *samples* the VAE posterior with the run's seed (the others take
its mode), so a reference encoded by one of these models keeps the posterior (mean, std) and the
masked denoise draws from it, in the pipeline's order, before drawing the noise.

The latents a denoise returns are unpacked (B, C, h, w) in the normalised space; `decode` undoes
the normalisation with the VAE's statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from editgraph.diffusion import flow
from editgraph.errors import NodeError
from editgraph.values.sockets import Conditioning, Reference, References

CONDITION_AREA = 384 * 384  # QwenImageEditPlusPipeline's CONDITION_IMAGE_SIZE
VAE_AREA = 1024 * 1024  # its VAE_IMAGE_SIZE
OUTPUT_AREA = 1024 * 1024  # the output size when none is given, at the last reference's aspect
MAX_REFERENCES = 3
PLUS = "QwenImageEditPlusPipeline"
PIPELINES = (PLUS, "QwenImageEditPipeline", "QwenImageEditInpaintPipeline")


def pipeline_class(model: Any) -> Any:
    import diffusers

    if model.pipeline not in PIPELINES:
        raise NodeError(f"model {model.name!r} is a {model.pipeline}; editgraph's Qwen-Image-Edit stages follow {', '.join(PIPELINES)}")
    return getattr(diffusers, model.pipeline)


def max_references(model: Any) -> int:
    """Plus reads up to three pictures; the first Qwen-Image-Edit (and its inpaint pipeline) one."""
    return MAX_REFERENCES if model.pipeline == PLUS else 1


def _helper(model: Any, *, vae: bool = False, text: bool = False) -> Any:
    """The pipeline class over only the components a stage needs (see diffusion/flux2.py)."""
    get = model.component
    return pipeline_class(model)(
        scheduler=None,
        vae=model.vae if vae else None,
        text_encoder=get("text_encoder") if text else None,
        tokenizer=get("tokenizer") if text else None,
        processor=get("processor") if text else None,
        transformer=None,
    )


def vae_scale_factor(model: Any) -> int:
    return 2 ** len(model.vae_config["temperal_downsample"])


def calculate_dimensions(area: int, ratio: float) -> tuple[int, int]:
    """(width, height) of `area` pixels at aspect `ratio`, each rounded to a multiple of 32."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return round(width / 32) * 32, round(height / 32) * 32


def encode_reference(model: Any, image: torch.Tensor, condition_area: int = CONDITION_AREA, vae_area: int = VAE_AREA) -> Reference:
    """One reference: its small picture for the instruction encoder, and its VAE latents (mode,
    normalised by the VAE's latent statistics) at about `vae_area` pixels. The first
    Qwen-Image-Edit gives its text encoder the VAE's copy, and keeps the posterior (module doc)."""
    pipe = _helper(model, vae=True)
    img = flow.to_pil(image, "reference")
    width, height = img.size
    vw, vh = calculate_dimensions(vae_area, width / height)
    device = flow.device_of(pipe.vae)
    if model.pipeline == PLUS:
        cw, ch = calculate_dimensions(condition_area, width / height)
        condition = flow.pil_to_tensor(pipe.image_processor.resize(img, ch, cw))
        pixels = pipe.image_processor.preprocess(img, vh, vw).unsqueeze(2)  # (1, 3, 1, H, W): one frame
        latents = pipe._encode_vae_image(image=pixels.to(device=device, dtype=model.vae.dtype), generator=None)[:, :, 0]
        return Reference(
            latents=flow.owned(latents), family=model.family, condition=condition, size=(vw, vh), source_size=(width, height)
        )
    # 1. one copy for both: resized, then preprocessed at its own size (a no-op resize)
    resized = pipe.image_processor.resize(img, vh, vw)
    pixels = pipe.image_processor.preprocess(resized, vh, vw).unsqueeze(2)
    # 2. the posterior once: its mode normalised is the reference (QwenImageEditPipeline's
    #    _encode_vae_image, argmax), its mean and std are what the inpaint pipeline samples
    posterior = model.vae.encode(pixels.to(device=device, dtype=model.vae.dtype)).latent_dist
    latents = _normalise(model, posterior.mode())[:, :, 0]
    return Reference(
        latents=flow.owned(latents), family=model.family, condition=flow.pil_to_tensor(resized), size=(vw, vh),
        source_size=(width, height), posterior=flow.owned(torch.stack([posterior.mean, posterior.std])),
    )


def _normalise(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """(latents - mean) / std with the VAE's latent statistics, in the pipelines' exact arithmetic."""
    config = model.vae_config
    z = config["z_dim"]
    mean = torch.tensor(config["latents_mean"]).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(config["latents_std"]).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    return (latents - mean) * inv_std


def encode_prompt(model: Any, prompt: str, negative_prompt: str | None, refs: References | None) -> Conditioning:
    """The instruction read together with the references' small pictures (and the negative prompt,
    when given, for true classifier-free guidance). Masks ride in `extra` (None: no padding)."""
    pipe = _helper(model, text=True)
    images = [flow.to_pil(r.condition, "reference") for r in refs.items] if refs is not None and refs.items else None
    if model.pipeline != PLUS and len(images or []) != 1:
        raise NodeError(
            f"prompt.encode: {model.pipeline} reads the instruction together with exactly one picture "
            f"(the one to edit), got {len(images or [])}; connect it as the only reference"
        )
    kw = {"image": images, "device": flow.device_of(pipe.text_encoder)}
    embeds, mask = pipe.encode_prompt(prompt=prompt, **kw)
    negative = negative_mask = None
    if negative_prompt is not None:
        negative, negative_mask = pipe.encode_prompt(prompt=negative_prompt, **kw)
    return Conditioning(
        embeds=flow.owned(embeds), negative=flow.owned(negative), family=model.family,
        extra={"mask": flow.owned(mask), "negative_mask": flow.owned(negative_mask), "references": len(images or [])},
    )


def denoise(
    model: Any, cond: Conditioning, refs: References | None, *, width: int, height: int, steps: int,
    true_cfg: float, seed: int, progress=None,
) -> torch.Tensor:
    """QwenImageEditPlusPipeline's generation; returns unpacked latents (1, C, h, w)."""

    cls = pipeline_class(model)
    items = list(refs.items) if refs is not None else []
    if len(items) > max_references(model):
        raise NodeError(f"denoise: {model.pipeline} takes up to {max_references(model)} reference pictures, got {len(items)}")
    if cond.extra.get("references", 0) != len(items):
        raise NodeError(
            f"denoise: the instruction was encoded with {cond.extra.get('references', 0)} reference pictures but "
            f"{len(items)} are connected; feed the same references to prompt.encode and denoise"
        )
    f = vae_scale_factor(model)
    if items:
        sw, sh = items[-1].source_size
        dw, dh = calculate_dimensions(OUTPUT_AREA, sw / sh)
        width, height = width or dw, height or dh
    if not width or not height:
        raise NodeError("denoise: give `width` and `height` (or reference pictures to take them from)")
    width, height = width // (f * 2) * (f * 2), height // (f * 2) * (f * 2)
    transformer, device, generator, dtype, channels, lh, lw = flow.setup(model, cond, seed, width, height, f)

    # 1. the references' packed tokens, in order, and every picture's token grid
    ref_tokens = None
    if items:
        packed = [cls._pack_latents(r.latents.to(device=device, dtype=dtype), 1, channels, *r.latents.shape[2:]) for r in items]
        ref_tokens = torch.cat(packed, dim=1)
    img_shapes = [[(1, height // f // 2, width // f // 2), *[(1, r.size[1] // f // 2, r.size[0] // f // 2) for r in items]]]

    # 2. starting noise: the run's only random draw, (1, 1, C, h, w) packed to tokens
    latents = cls._pack_latents(flow.noise((1, 1, channels, lh, lw), generator, dtype, device), 1, channels, lh, lw)

    # 3. schedule, shifted for this many tokens
    scheduler, timesteps = flow.schedule(model, steps, latents.shape[1], device)

    # 4. the loop: true CFG (with a negative prompt) rescaled to the conditional prediction's norm
    predict = _predictor(transformer, img_shapes, cond, true_cfg, ref_tokens, device)
    latents = flow.run_loop(flow.Loop(scheduler, timesteps, predict, progress=progress), latents)
    return cls._unpack_latents(latents, height, width, f)[:, :, 0]


def denoise_masked(
    model: Any, cond: Conditioning, source: Reference, mask: torch.Tensor, refs: References | None, *,
    steps: int, guidance: float, true_cfg: float = 1.0, strength: float, seed: int, progress=None,
) -> torch.Tensor:
    """QwenImageEditInpaintPipeline: repaint where `mask` is white, keep the source's latents
    elsewhere (blended back at every step's noise level); the model sees the source as its one
    picture. Returns unpacked latents (1, C, h, w) at the source's size, like `denoise`.

    The pipeline also VAE-encodes the masked picture, drawing from the generator after the noise,
    and never uses the result: with nothing drawn after it, skipping it changes no number.
    `guidance` is unused: the Qwen transformer has no guidance embedding (true CFG instead)."""
    import diffusers
    from diffusers.utils.torch_utils import randn_tensor

    cls = diffusers.QwenImageEditInpaintPipeline  # any non-Plus Qwen-Image-Edit model's components run it
    if model.pipeline == PLUS or source.posterior is None:
        raise NodeError(
            f"denoise: masked edits run on Qwen-Image-Edit (QwenImageEditInpaintPipeline), not on {model.pipeline}; "
            "encode the source with that model"
        )
    if refs is not None and refs.items:
        raise NodeError("denoise: Qwen-Image-Edit inpainting sees only the source picture; connect references to prompt.encode only")
    if cond.extra.get("references", 0) != 1:
        raise NodeError("denoise: encode the instruction with the source picture as its one reference (prompt.encode's references)")
    width, height = (int(v) for v in source.size)
    f = vae_scale_factor(model)
    width, height = width // (f * 2) * (f * 2), height // (f * 2) * (f * 2)
    transformer, device, generator, dtype, channels, lh, lw = flow.setup(model, cond, seed, width, height, f)

    # 1. schedule for the whole run, shifted for this many tokens, then cut by strength
    scheduler, timesteps = flow.schedule(model, steps, (height // f // 2) * (width // f // 2), device, strength=strength)

    # 2. the source's latents sampled from its posterior (draw 1), normalised, (1, 1, C, h, w)
    posterior = source.posterior.to(device=device, dtype=dtype)
    mean, std = posterior[0], posterior[1]
    sampled = mean + std * randn_tensor(mean.shape, generator=generator, device=device, dtype=dtype)
    image_latents = _normalise(model, sampled).transpose(1, 2)

    # 3. start: the source noised to the first timestep (draw 2), everything packed to tokens
    noise = flow.noise((1, 1, channels, lh, lw), generator, dtype, device)
    latents = cls._pack_latents(scheduler.scale_noise(image_latents, timesteps[:1].repeat(1), noise), 1, channels, lh, lw)
    noise = cls._pack_latents(noise, 1, channels, lh, lw)
    packed_source = cls._pack_latents(image_latents, 1, channels, lh, lw)

    # 4. the mask, binarised at the picture's size, nearest-sampled to the latent grid, packed
    helper = cls(scheduler=None, vae=None, text_encoder=None, tokenizer=None, processor=None, transformer=None)
    helper.mask_processor.register_to_config(vae_scale_factor=f * 2, vae_latent_channels=model.vae_config["z_dim"])
    mask_pixels = helper.mask_processor.preprocess(flow.mask_to_pil(mask), height=height, width=width)
    grid = torch.nn.functional.interpolate(mask_pixels, size=(lh, lw)).to(device=device, dtype=dtype)  # as the pipeline: sized on the CPU
    packed_mask = cls._pack_latents(grid.repeat(1, channels, 1, 1), 1, channels, lh, lw)

    # 5. the loop: the source's tokens ride along; true CFG rescaled to the conditional norm
    img_shapes = [[(1, height // f // 2, width // f // 2), (1, height // f // 2, width // f // 2)]]
    predict = _predictor(transformer, img_shapes, cond, true_cfg, packed_source, device)
    blend = flow.keep_known(scheduler, timesteps, packed_source, packed_mask, noise)
    loop = flow.Loop(scheduler, timesteps, predict, after_step=blend, progress=progress, begin_index=None)
    return cls._unpack_latents(flow.run_loop(loop, latents), height, width, f)[:, :, 0]


def _predictor(transformer: Any, img_shapes: list, cond: Conditioning, true_cfg: float, ride_along: torch.Tensor | None,
               device: torch.device):
    """The loop's velocity for the latents' tokens: the transformer sees them followed by the
    pictures' tokens (`ride_along`); with true CFG (a negative prompt, scale > 1) the combined
    prediction is rescaled to the conditional one's norm, as the Qwen pipelines do. The prompt's
    embeddings and masks on `device`."""
    true_cfg_on = true_cfg > 1 and cond.negative is not None

    def on(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    embeds, mask = on(cond.embeds), on(cond.extra.get("mask"))
    negative, negative_mask = on(cond.negative), on(cond.extra.get("negative_mask"))

    def run(hidden, timestep, embeds, mask, name):
        with transformer.cache_context(name):
            return transformer(
                hidden_states=hidden, timestep=timestep / 1000, guidance=None, encoder_hidden_states_mask=mask,
                encoder_hidden_states=embeds, img_shapes=img_shapes, attention_kwargs={}, return_dict=False,
            )[0]

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        hidden = latents if ride_along is None else torch.cat([latents, ride_along], dim=1)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        velocity = run(hidden, timestep, embeds, mask, "cond")[:, : latents.size(1)]
        if true_cfg_on:
            uncond = run(hidden, timestep, negative, negative_mask, "uncond")[:, : latents.size(1)]
            combined = uncond + true_cfg * (velocity - uncond)
            velocity = combined * (torch.norm(velocity, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))
        return velocity

    return predict


def decode(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, C, h, w) -> 0..1 pixels (undo the normalisation, VAE decode, one frame)."""
    vae = model.vae
    z = vae.config.z_dim
    latents = latents.unsqueeze(2).to(flow.device_of(vae), vae.dtype)  # the CPU's when they came from the disk cache
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    latents = latents / inv_std + mean
    return flow.postprocess(vae.decode(latents, return_dict=False)[0][:, :, 0])
