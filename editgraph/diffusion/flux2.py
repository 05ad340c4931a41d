"""Flux 2 Klein (Flux2KleinPipeline, Flux2KleinInpaintPipeline) and Flux 2 [dev] (Flux2Pipeline)
in separate stages.

Klein encodes the prompt with a Qwen3 LLM (three hidden layers stacked), encodes every reference
picture with the Flux 2 VAE into 2x2-patchified, batch-normalised latents, and denoises packed
tokens with the reference tokens appended (each reference at its own time coordinate 10, 20, ...).
Classifier-free guidance runs against the encoded empty prompt, as the pipeline does. Flux 2 [dev]
is the same with a Mistral 3 text encoder (layers 10, 20, 30) and guidance distilled into the
transformer: `guidance` enters as an embedding and there is no negative pass.

The latents a denoise returns stay in the VAE's normalised, patchified space (B, 4C, h/16, w/16):
undoing the batch norm needs the VAE's statistics, so `decode` does it and a denoise never loads
the VAE.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from editgraph.diffusion import flow
from editgraph.errors import NodeError
from editgraph.values.sockets import Conditioning, Reference, References

# Flux2KleinPipeline's defaults: the stacked Qwen3 layers, the prompt length, the largest
# reference area before it is scaled down, and the size when neither a size nor a reference is given.
OUT_LAYERS = (9, 18, 27)
OUT_LAYERS_DEV = (10, 20, 30)  # Flux2Pipeline's Mistral layers
MAX_SEQUENCE_LENGTH = 512
MAX_REFERENCE_AREA = 1024 * 1024
DEFAULT_SAMPLE_SIZE = 128


def pipeline_class(model: Any) -> Any:
    import diffusers

    return getattr(diffusers, model.pipeline)


def _helper(model: Any, *, vae: bool = False, text: bool = False, cls: Any = None) -> Any:
    """The model's pipeline class (or `cls`) over only the components a stage needs: its methods
    are the family's definitions of prompt and image encoding, and nothing else gets loaded."""
    vae_module = model.vae if vae else None
    pipe = (cls or pipeline_class(model))(
        scheduler=None,
        vae=vae_module,
        text_encoder=model.component("text_encoder") if text else None,
        tokenizer=model.component("tokenizer") if text else None,
        transformer=None,
    )
    if vae_module is None:  # the pipeline falls back to 8 and 32 without a VAE: use the real ones
        pipe.vae_scale_factor = vae_scale_factor(model)
        if hasattr(pipe, "mask_processor"):
            pipe.mask_processor.register_to_config(vae_scale_factor=pipe.vae_scale_factor * 2)
    return pipe


def vae_scale_factor(model: Any) -> int:
    return 2 ** (len(model.vae_config["block_out_channels"]) - 1)


def encode_prompt(model: Any, prompt: str) -> Conditioning:
    """The prompt and the empty negative prompt (what guidance steers away from), (1, L, 3 * width)."""
    pipe = _helper(model, text=True)
    dev = model.pipeline == "Flux2Pipeline"
    layers = OUT_LAYERS_DEV if dev else OUT_LAYERS
    kw = {"device": flow.device_of(pipe.text_encoder), "max_sequence_length": MAX_SEQUENCE_LENGTH, "text_encoder_out_layers": layers}
    embeds, _ = pipe.encode_prompt(prompt=prompt, **kw)
    if dev:  # guidance-distilled: no negative pass ever
        return Conditioning(embeds=flow.owned(embeds), family=model.family)
    negative, _ = pipe.encode_prompt(prompt="", **kw)
    return Conditioning(embeds=flow.owned(embeds), negative=flow.owned(negative), family=model.family)


def encode_reference(model: Any, image: torch.Tensor) -> Reference:
    """One reference: scaled down past 1024x1024 px, cropped to a multiple of 16, VAE-encoded."""
    pipe = _helper(model, vae=True)
    img = flow.to_pil(image, "reference")
    if model.kind == "edit":  # the edit pipelines refuse tiny or extreme pictures; the inpaint one does not
        try:
            pipe.image_processor.check_image_input(img)
        except ValueError as exc:
            raise NodeError(f"reference picture: {exc}") from None
    width, height = source_size = img.size
    if width * height > MAX_REFERENCE_AREA and model.kind == "inpaint":
        # Flux2KleinInpaintPipeline scales an oversized reference its own way (int() of each side)
        scale = math.sqrt(MAX_REFERENCE_AREA / (width * height))
        img = pipe.image_processor.resize(img, int(height * scale), int(width * scale))
        width, height = img.size
    elif width * height > MAX_REFERENCE_AREA:
        img = pipe.image_processor._resize_to_target_area(img, MAX_REFERENCE_AREA)
        width, height = img.size
    multiple = pipe.vae_scale_factor * 2
    width, height = width // multiple * multiple, height // multiple * multiple
    pixels = pipe.image_processor.preprocess(img, height=height, width=width, resize_mode="crop")
    pixels = pixels.to(device=flow.device_of(pipe.vae), dtype=model.vae.dtype)
    latents = pipe._encode_vae_image(image=pixels, generator=None)  # (1, 4C, h, w)
    return Reference(latents=flow.owned(latents), family=model.family, size=(width, height), source_size=source_size)


def output_size(model: Any, width: int, height: int, refs: References | None) -> tuple[int, int]:
    """The pipeline's rule: the size asked for, else the first reference's, else the default."""
    f = vae_scale_factor(model)
    if not width and refs is not None and refs.items:
        width = int(refs.items[0].size[0])
    if not height and refs is not None and refs.items:
        height = int(refs.items[0].size[1])
    return width or DEFAULT_SAMPLE_SIZE * f, height or DEFAULT_SAMPLE_SIZE * f


def _inpaint_class() -> Any:
    import diffusers

    return diffusers.Flux2KleinInpaintPipeline


def reference_tokens(
    model: Any, refs: References | None, device: torch.device, inpaint: bool = False
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """All references' packed tokens (1, N, C) and their position ids (1, N, 4), in list order, on `device`."""
    if refs is None or not refs.items:
        return None, None
    cls = _inpaint_class() if inpaint else pipeline_class(model)
    latents = [r.latents.to(device) for r in refs.items]
    # The inpaint pipeline's version takes the batch size; both give reference i time 10 * (i + 1).
    ids = cls._prepare_image_ids(latents, 1) if inpaint else cls._prepare_image_ids(latents)
    tokens = torch.cat([cls._pack_latents(x).squeeze(0) for x in latents], dim=0).unsqueeze(0)
    return tokens.to(device), ids.to(device)


def transformer_call(model: Any, cond: Conditioning, ref_tokens, ref_ids, latent_ids, guidance: float, device: torch.device):
    """predict(latents, t) for the loop: conditional (and, with guidance, unconditional) velocity;
    the prompt's embeddings, their ids and the guidance on `device`, as the pipeline has them."""
    cls = pipeline_class(model)
    transformer = model.transformer
    embeds = cond.embeds.to(device)
    text_ids = cls._prepare_text_ids(embeds).to(device)
    negative = cond.negative.to(device) if cond.negative is not None else None
    negative_ids = cls._prepare_text_ids(negative).to(device) if negative is not None else None
    distilled = bool(model.index.get("is_distilled", False))
    # Flux 2 [dev]: guidance is an input of the transformer, not a second pass
    embedded = torch.full([1], guidance, device=device, dtype=torch.float32).expand(1) if transformer.config.guidance_embeds else None
    cfg = guidance > 1 and not distilled and embedded is None
    if cfg and negative is None:
        raise NodeError("guidance > 1 needs the negative (empty) prompt the prompt encode makes; re-encode the prompt")

    def run(hidden, timestep, img_ids, text, tids, name):
        with transformer.cache_context(name):
            return transformer(
                hidden_states=hidden, timestep=timestep, guidance=embedded, encoder_hidden_states=text, txt_ids=tids,
                img_ids=img_ids, joint_attention_kwargs=None, return_dict=False,
            )[0]

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        hidden, ids = latents.to(transformer.dtype), latent_ids
        if ref_tokens is not None:
            hidden = torch.cat([latents, ref_tokens], dim=1).to(transformer.dtype)
            ids = torch.cat([latent_ids, ref_ids], dim=1)
        velocity = run(hidden, timestep / 1000, ids, embeds, text_ids, "cond")[:, : latents.size(1) :]
        if cfg:
            uncond = run(hidden, timestep / 1000, ids, negative, negative_ids, "uncond")[:, : latents.size(1) :]
            velocity = uncond + guidance * (velocity - uncond)
        return velocity

    return predict


def denoise(
    model: Any, cond: Conditioning, refs: References | None, *, width: int, height: int, steps: int,
    guidance: float, seed: int, progress=None,
) -> torch.Tensor:
    """Flux2KleinPipeline's (Flux2Pipeline's) generation from noise, conditioned on the references; returns the
    final latents (1, 4C, h, w) in the VAE's normalised, patchified space."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    cls = pipeline_class(model)
    width, height = output_size(model, width, height, refs)
    f = vae_scale_factor(model)
    flow.check_size("denoise", width, height, f * 2)
    transformer = model.transformer
    device = flow.device_of(transformer)  # the pipeline's _execution_device
    generator = flow.generator(seed, device)

    # 1. starting noise: the run's only random draw, (1, 4C, h/2f, w/2f) packed to tokens
    grid = (height // (f * 2), width // (f * 2))
    latents = flow.noise((1, transformer.config.in_channels, *grid), generator, cond.embeds.dtype, device)
    latent_ids = cls._prepare_latent_ids(latents).to(device)
    latents = cls._pack_latents(latents)  # (1, h*w, 4C)

    # 2. reference tokens, appended after the generated ones
    ref_tokens, ref_ids = reference_tokens(model, refs, device)

    # 3. schedule, shifted for this many tokens and steps
    mu = compute_empirical_mu(image_seq_len=latents.shape[1], num_steps=steps)
    scheduler, timesteps = flow.schedule(model, steps, latents.shape[1], device, mu=mu, flow_sigmas_off=True)

    # 4. the loop
    predict = transformer_call(model, cond, ref_tokens, ref_ids, latent_ids, guidance, device)
    latents = flow.run_loop(flow.Loop(scheduler, timesteps, predict, progress=progress), latents)
    return _unpack(latents, latent_ids, grid)


def denoise_masked(
    model: Any, cond: Conditioning, source: Reference, mask: torch.Tensor, refs: References | None, *,
    steps: int, guidance: float, strength: float, seed: int, progress=None,
) -> torch.Tensor:
    """Flux2KleinInpaintPipeline: repaint where `mask` is white, keep the source's latents elsewhere
    (blended back at every step's noise level); the source is also the first reference the model
    sees, `refs` follow it. Returns the final latents like `denoise`. Any Klein model can do this
    (the inpaint pipeline takes Klein's very components); Flux 2 [dev] has no inpaint pipeline."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein_inpaint import compute_empirical_mu

    if not model.pipeline.startswith("Flux2Klein"):
        raise NodeError(f"denoise: masked edits need a Flux 2 Klein model (Flux2KleinInpaintPipeline); {model.name!r} is a {model.pipeline}")
    cls = _inpaint_class()
    width, height = (int(v) for v in source.size)
    if tuple(int(v) for v in source.source_size) != (width, height):
        raise NodeError(
            f"denoise: the source picture is {source.source_size[0]}x{source.source_size[1]} px but inpainting needs "
            f"a multiple of 16 (it was cut to {width}x{height}); crop it first with image.crop_to_mask multiple_of=16"
        )
    f = vae_scale_factor(model)
    transformer = model.transformer
    device = flow.device_of(transformer)  # the pipeline's _execution_device
    generator = flow.generator(seed, device)
    dtype = cond.embeds.dtype

    # 1. schedule for the whole run, then cut by strength
    tokens = (height // f // 2) * (width // f // 2)
    mu = compute_empirical_mu(image_seq_len=tokens, num_steps=steps)
    scheduler, timesteps = flow.schedule(model, steps, tokens, device, mu=mu, strength=strength, flow_sigmas_off=True)
    latent_timestep = timesteps[:1].repeat(1)

    # 2. start: the source's latents noised to the first timestep (the run's only random draw)
    image_latents = source.latents.to(device=device, dtype=dtype)  # (1, 4C, h, w)
    latent_ids = cls._prepare_latent_ids(torch.zeros_like(image_latents)).to(device)
    noise = flow.noise(tuple(image_latents.shape), generator, dtype, device)
    latents = cls._pack_latents(scheduler.scale_noise(image_latents, latent_timestep, noise))
    noise, packed_source = cls._pack_latents(noise), cls._pack_latents(image_latents)

    # 3. what the model sees besides: the source first, then the references
    conditions = References((source, *(refs.items if refs is not None else ())), model.family)
    ref_tokens, ref_ids = reference_tokens(model, conditions, device, inpaint=True)

    # 4. the mask, binarised at the picture's size, then bilinear down to the token grid (on the
    #    CPU, where the pipeline's mask processor leaves it), then to the device
    helper = _helper(model, cls=cls)
    mask_pixels = helper.mask_processor.preprocess(flow.mask_to_pil(mask), height=height, width=width)
    grid = (height // (f * 2), width // (f * 2))
    packed_mask = cls._pack_latents(torch.nn.functional.interpolate(mask_pixels, size=grid, mode="bilinear").to(device, dtype))

    blend = flow.keep_known(scheduler, timesteps, packed_source, packed_mask, noise)
    predict = transformer_call(model, cond, ref_tokens, ref_ids, latent_ids, guidance, device)
    loop = flow.Loop(scheduler, timesteps, predict, after_step=blend, progress=progress, begin_index=None)
    latents = flow.run_loop(loop, latents)
    return _unpack(latents, latent_ids, grid)


def _unpack(latents: torch.Tensor, latent_ids: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Tokens scattered back to their (h, w) places by their ids: the pipelines' scatter, with the
    grid given rather than read back from the ids (Flux2KleinPipeline's way; no device-to-host
    sync, and the same numbers as the dev and inpaint pipelines' reading of it)."""
    import diffusers

    return diffusers.Flux2KleinPipeline._unpack_latents_with_ids(latents, latent_ids, *grid)


def decode(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """Normalised, patchified latents -> 0..1 pixels (undo the batch norm, unpatchify, VAE decode)."""
    cls = pipeline_class(model)
    vae = model.vae
    latents = latents.to(flow.device_of(vae))  # a denoise's latents, or the CPU's when they came from the disk cache
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device, latents.dtype)
    latents = cls._unpatchify_latents(latents * std + mean)
    return flow.postprocess(vae.decode(latents, return_dict=False)[0])
