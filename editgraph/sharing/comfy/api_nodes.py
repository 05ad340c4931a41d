"""One handler per ComfyUI node type: what its output `slot` is, as a value for its consumer (see
api.py). Samplers write the editgraph nodes; the rest describe what they hold."""

from __future__ import annotations

from typing import Any

from editgraph.sharing.comfy.api import (
    SAMPLERS,
    FlowCond,
    ScaledPixels,
    SCALE_FILTERS,
    SPACINGS,
    LatentV,
    Literal_,
    MaskV,
    ModelV,
    Pixels,
    Prompt,
    Translator,
    Untranslatable,
    _eg_id,
    _stem,
    comfy_file,
    handles,
)


def _no(t: Translator, nid: str, why: str) -> Untranslatable:
    return Untranslatable(nid, t.class_type(nid), why)


# --- loaders --------------------------------------------------------------------------------------


@handles("CheckpointLoaderSimple", "CheckpointLoader")
def checkpoint(t: Translator, nid: str, slot: int) -> ModelV:
    name = _stem(t.input(nid, "ckpt_name", str))
    ref = t.param("model", {"type": "string", "default": name, "description": f"the checkpoint ComfyUI loaded as {t.input(nid, 'ckpt_name', str)!r}: a model name or path"})
    return ModelV(t.add(_eg_id("model", nid), "model.load", {"model": ref}))


LORA_SCALE = (-10.0, 10.0)  # model.lora's scale range


@handles("LoraLoader", "LoraLoaderModelOnly")
def lora(t: Translator, nid: str, slot: int) -> ModelV:
    """MODEL (slot 0) at strength_model, CLIP (slot 1, LoraLoader) at strength_clip: a model.lora each."""
    if slot == 0:
        model, strength, role = t.input(nid, "model", ModelV), t.input(nid, "strength_model", (int, float), default=1.0), "lora"
    else:
        model, strength, role = t.input(nid, "clip", ModelV), t.input(nid, "strength_clip", (int, float), default=1.0), "lora_clip"
        if model.ref == t.input(nid, "model", ModelV).ref and strength == t.input(nid, "strength_model", (int, float), default=1.0):
            return lora(t, nid, 0)  # both sides alike: one node (the same node spec, written again)
    strength = float(strength)
    if strength == 0.0:
        return model  # ComfyUI skips a LoRA at strength 0
    if not LORA_SCALE[0] <= strength <= LORA_SCALE[1]:
        raise _no(t, nid, f"strength {strength} is outside model.lora's scale range {LORA_SCALE[0]}..{LORA_SCALE[1]}")
    file_name = comfy_file(t.input(nid, "lora_name", str))
    path = t.param("lora", {
        "type": "string", "default": _stem(file_name),
        "description": f"the LoRA ComfyUI loaded as {file_name!r}: a .safetensors path or a registered name",
    })
    ref = t.add(_eg_id(role, nid), "model.lora", {"lora": path, "scale": strength}, {"model": model.ref})
    return ModelV(ref, model.clip_skip, model.flow, model.root)


@handles("CLIPSetLastLayer")
def clip_skip(t: Translator, nid: str, slot: int) -> ModelV:
    clip = t.input(nid, "clip", ModelV)
    stop = int(t.input(nid, "stop_at_clip_layer", int, default=-1))
    # ComfyUI -1 = the last layer; diffusers' clip_skip 1 = one before the last
    skip = -stop - 1
    if not 0 <= skip <= 12:
        raise _no(t, nid, f"stop_at_clip_layer {stop} is outside -13..-1")
    return ModelV(clip.ref, skip or None, clip.flow, clip.base)


@handles("PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean")
def primitive(t: Translator, nid: str, slot: int) -> Literal_:
    return Literal_(t.input(nid, "value", (int, float, str, bool)))


# --- prompts ----------------------------------------------------------------------------------------


@handles("CLIPTextEncode")
def text(t: Translator, nid: str, slot: int) -> Prompt | FlowCond:
    clip = t.input(nid, "clip", ModelV)
    if clip.flow:
        return FlowCond(str(t.input(nid, "text", str)), clip)
    return Prompt(str(t.input(nid, "text", str)), clip)


@handles("InpaintModelConditioning", "InstructPixToPixConditioning")
def conditioning_with_pixels(t: Translator, nid: str, slot: int) -> Any:
    """positive (0) and negative (1) pass through; the latent (2) is the pixels, encoded."""
    if slot in (0, 1):
        return t.input(nid, "positive" if slot == 0 else "negative", Prompt)
    vae = t.input(nid, "vae", ModelV)
    pixels = t.input(nid, "pixels", Pixels)
    if t.class_type(nid) == "InstructPixToPixConditioning":
        return LatentV("encoded", model=vae, image=pixels, instruct=True)
    mask = t.input(nid, "mask", MaskV)
    if t.input(nid, "noise_mask", bool, default=True) is False:
        t.approximate(nid, "noise_mask off (repaint everywhere, condition on the masked image) has no equivalent; the mask limits the repaint")
    return LatentV("encoded", model=vae, image=pixels, mask=mask, inpaint_image=True)


# --- latents --------------------------------------------------------------------------------------


@handles("EmptyLatentImage", "EmptySD3LatentImage")
def empty(t: Translator, nid: str, slot: int) -> LatentV:
    size = tuple(int(t.input(nid, k, int, default=d)) for k, d in (("width", 512), ("height", 512), ("batch_size", 1)))
    return LatentV("empty", size=size)  # type: ignore[arg-type]


@handles("VAEEncode")
def encode(t: Translator, nid: str, slot: int) -> LatentV:
    vae = t.input(nid, "vae", ModelV)
    pixels = t.input(nid, "pixels", (Pixels, ScaledPixels))
    if isinstance(pixels, ScaledPixels) and not vae.flow:
        raise _no(t, nid, "a FluxKontextImageScale picture encoded by a Stable Diffusion VAE: editgraph snaps to Kontext sizes only where a flow model encodes a reference")
    return LatentV("encoded", model=vae, image=pixels)


@handles("VAEEncodeForInpaint")
def encode_for_inpaint(t: Translator, nid: str, slot: int) -> LatentV:
    mask = t.input(nid, "mask", MaskV)
    grow = int(t.input(nid, "grow_mask_by", int, default=6))
    if grow:
        mask = MaskV(t.add(_eg_id("grow", nid), "mask.grow", {"pixels": grow, "shape": "square"}, {"mask": mask.ref}))
    return LatentV("encoded", model=t.input(nid, "vae", ModelV), image=t.input(nid, "pixels", Pixels), mask=mask, inpaint_image=True)


@handles("SetLatentNoiseMask")
def noise_mask(t: Translator, nid: str, slot: int) -> LatentV:
    latent = t.input(nid, "samples", LatentV)
    mask = t.input(nid, "mask", MaskV)
    # the pixels go along when known: a 9-channel inpainting model needs them, others ignore them
    return LatentV(latent.kind, latent.model, latent.ref, latent.image, mask, latent.image is not None, latent.instruct, latent.size)


@handles("VAEDecode")
def decode(t: Translator, nid: str, slot: int) -> Pixels:
    vae = t.input(nid, "vae", ModelV)
    latent = t.input(nid, "samples", LatentV)
    if vae.flow or (latent.model is not None and latent.model.flow):
        if latent.kind != "sampled" or not (vae.flow and latent.model is not None and latent.model.flow):
            raise _no(t, nid, "a flow model's VAE decodes what its sampler made (flow.decode); this latent or VAE is from elsewhere")
        return Pixels(t.add(_eg_id("decode", nid), "flow.decode", inputs={"model": vae.ref, "latent": latent.ref}))  # type: ignore[dict-item]
    ref = t.latent_ref(latent, vae, nid)
    return Pixels(t.add(_eg_id("decode", nid), "vae.decode", inputs={"model": vae.ref, "latent": ref}))


# --- samplers ---------------------------------------------------------------------------------------


def _sampler(t: Translator, nid: str, sampler_name: str, scheduler: str) -> str:
    name = SAMPLERS.get(sampler_name)
    if name is None:
        t.approximate(nid, f"sampler {sampler_name!r} has no editgraph equivalent (have: {', '.join(sorted(SAMPLERS))}); euler is used")
        name = "euler"
    if scheduler not in SPACINGS:
        t.approximate(nid, f"scheduler {scheduler!r} has no editgraph equivalent (editgraph samplers use the model's own timestep spacing, like {', '.join(sorted(SPACINGS))})")
    return name


def _steps_for(steps: int, strength: float) -> int:
    """The whole-schedule step count N for which int(N * strength) == steps run (see api.py)."""
    if strength >= 1.0:
        return steps
    n = max(steps, int(steps / strength))
    while int(n * strength) < steps:
        n += 1
    return n


def _prompts(t: Translator, nid: str, model: ModelV) -> tuple[Any, Any]:
    """The positive and negative prompts: FlowCond for a flow model, Prompt otherwise."""
    want = FlowCond if model.flow else Prompt
    return t.input(nid, "positive", want), t.input(nid, "negative", want)


def _sample(t: Translator, nid: str, *, model: ModelV, positive: Any, negative: Any, latent: LatentV,
            seed: Any, steps: int, cfg: float, sampler: tuple[str, str], strength: float) -> LatentV:
    if not 0 < strength <= 1:
        raise _no(t, nid, f"denoise {strength} is outside (0, 1]")
    if model.flow:
        from editgraph.sharing.comfy.api_flow import flow_sample

        return flow_sample(t, nid, model=model, positive=positive, negative=negative, latent=latent, seed=seed,
                           steps=steps, cfg=cfg, sampler=sampler, strength=strength)
    sampler = _sampler(t, nid, *sampler)
    if negative is not None and negative.model.ref != positive.model.ref:
        raise _no(t, nid, "positive and negative prompts come from different text encoders")
    if positive.model.root != model.root:
        raise _no(t, nid, "the prompt's text encoder and the sampled model come from different checkpoints; editgraph encodes prompts with the sampling model")
    text_params: dict[str, Any] = {"prompt": positive.text, "negative_prompt": negative.text if negative else ""}
    if positive.model.clip_skip:
        text_params["clip_skip"] = positive.model.clip_skip
    # the prompt's own model: the same checkpoint, with the LoRAs its CLIP went through
    cond = t.add(_eg_id("text", nid), "prompt.encode", text_params, {"model": positive.model.ref})
    start = t.latent_ref(latent, model, nid)
    params: dict[str, Any] = {"steps": _steps_for(steps, strength), "cfg": cfg, "seed": seed, "scheduler": sampler}  # type: ignore[dict-item]
    if latent.instruct:
        if strength < 1:
            raise _no(t, nid, f"denoise {strength} with InstructPix2Pix: editgraph's instruct node always runs the whole schedule")
        # ComfyUI guides with (negative + image) -> (positive + image): diffusers' image guidance 1
        ref = t.add(_eg_id("instruct", nid), "instruct", {**params, "image_cfg": 1.0}, {"model": model.ref, "cond": cond, "latent": start})
        return LatentV("sampled", model=model, ref=ref)
    inputs = {"model": model.ref, "cond": cond, "latent": start}
    if latent.mask is not None:
        inputs["mask"] = latent.mask.ref
        if latent.inpaint_image and latent.image is not None:
            inputs["image"] = latent.image.ref
    ref = t.add(_eg_id("denoise", nid), "denoise", {**params, "strength": strength}, inputs)
    return LatentV("sampled", model=model, ref=ref)


def _seed(t: Translator, nid: str, name: str) -> Any:
    seed = t.input(nid, name, (int, str))
    if seed == "random":
        return "random"
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise _no(t, nid, f"{name} {seed!r} is not a seed (an integer 0..2**64-1)")
    return seed


@handles("KSampler")
def ksampler(t: Translator, nid: str, slot: int) -> LatentV:
    model = t.input(nid, "model", ModelV)
    positive, negative = _prompts(t, nid, model)
    return _sample(
        t, nid, model=model, positive=positive, negative=negative, latent=t.input(nid, "latent_image", LatentV),
        seed=_seed(t, nid, "seed"), steps=int(t.input(nid, "steps", int)), cfg=float(t.input(nid, "cfg", (int, float))),
        sampler=(t.input(nid, "sampler_name", str), t.input(nid, "scheduler", str)),
        strength=float(t.input(nid, "denoise", (int, float), default=1.0)),
    )


@handles("KSamplerAdvanced")
def ksampler_advanced(t: Translator, nid: str, slot: int) -> LatentV:
    steps = int(t.input(nid, "steps", int))
    start, end = int(t.input(nid, "start_at_step", int, default=0)), int(t.input(nid, "end_at_step", int, default=10000))
    if t.input(nid, "add_noise", str, default="enable") != "enable" or end < steps:
        raise _no(t, nid, "sampling split across samplers (add_noise disabled or end_at_step before the last step) has no editgraph equivalent")
    if t.input(nid, "return_with_leftover_noise", str, default="disable") != "disable":
        raise _no(t, nid, "return_with_leftover_noise has no editgraph equivalent")
    if not 0 <= start < steps:
        raise _no(t, nid, f"start_at_step {start} must lie in 0..steps-1 ({steps - 1})")
    model = t.input(nid, "model", ModelV)
    positive, negative = _prompts(t, nid, model)
    return _sample(
        t, nid, model=model, positive=positive, negative=negative, latent=t.input(nid, "latent_image", LatentV),
        seed=_seed(t, nid, "noise_seed"), steps=steps - start, cfg=float(t.input(nid, "cfg", (int, float))),
        sampler=(t.input(nid, "sampler_name", str), t.input(nid, "scheduler", str)),
        strength=(steps - start) / steps,
    )


@handles("KSamplerSelect", "BasicScheduler")
def sampler_parts(t: Translator, nid: str, slot: int) -> Literal_:
    return Literal_(nid)  # read by SamplerCustom, which knows what to ask of it


@handles("SamplerCustom")
def sampler_custom(t: Translator, nid: str, slot: int) -> LatentV:
    sel, sch = t.input(nid, "sampler", Literal_), t.input(nid, "sigmas", Literal_)
    sel_id, sch_id = str(sel.value), str(sch.value)
    if t.class_type(sel_id) != "KSamplerSelect" or t.class_type(sch_id) != "BasicScheduler":
        raise _no(t, nid, "editgraph translates SamplerCustom with KSamplerSelect and BasicScheduler only")
    if t.input(nid, "add_noise", bool, default=True) is False:
        raise _no(t, nid, "add_noise off has no editgraph equivalent")
    steps = int(t.input(sch_id, "steps", int))
    strength = float(t.input(sch_id, "denoise", (int, float), default=1.0))
    model = t.input(nid, "model", ModelV)
    positive, negative = _prompts(t, nid, model)
    return _sample(
        t, nid, model=model, positive=positive, negative=negative, latent=t.input(nid, "latent_image", LatentV),
        seed=_seed(t, nid, "noise_seed"), steps=steps, cfg=float(t.input(nid, "cfg", (int, float))),
        sampler=(t.input(sel_id, "sampler_name", str), t.input(sch_id, "scheduler", str)),
        strength=strength,
    )


# --- pixels and masks ---------------------------------------------------------------------------------


@handles("LoadImage")
def load_image(t: Translator, nid: str, slot: int) -> Pixels | MaskV:
    name = comfy_file(t.input(nid, "image", str))
    ref = t.param("image", {"type": "path", "default": name, "description": f"the photo ComfyUI loaded as {name!r}"})
    eg = _eg_id("image", nid)
    if eg not in t.nodes:
        t.add(eg, "image.load", {"path": ref})
    if slot == 0:
        return Pixels(eg)
    # ComfyUI's LoadImage mask is 1 - alpha: transparent pixels are the ones to repaint
    return MaskV(t.add(_eg_id("alpha", nid), "mask.from_alpha", {"change": "transparent"}, {"alpha": f"{eg}.alpha"}))


@handles("LoadImageMask")
def load_mask(t: Translator, nid: str, slot: int) -> MaskV:
    name = comfy_file(t.input(nid, "image", str))
    channel = str(t.input(nid, "channel", str, default="alpha"))
    if channel not in ("alpha", "red", "green", "blue"):
        raise _no(t, nid, f"channel {channel!r} is not alpha, red, green or blue")
    ref = t.param("mask", {"type": "path", "default": name, "description": f"the mask file ComfyUI loaded as {name!r}"})
    # ComfyUI inverts the alpha channel (transparent = 1) and takes colour channels as they are
    return MaskV(t.add(_eg_id("mask", nid), "mask.load", {"path": ref, "channel": channel, "invert": channel == "alpha"}))


@handles("ImagePadForOutpaint")
def pad_for_outpaint(t: Translator, nid: str, slot: int) -> Pixels | MaskV:
    eg = _eg_id("pad", nid)
    if eg not in t.nodes:
        image = t.input(nid, "image", Pixels)
        sides = {k: int(t.input(nid, k, int, default=0)) for k in ("left", "top", "right", "bottom")}
        feathering = int(t.input(nid, "feathering", int, default=40))
        # ComfyUI fills the new area with mid grey and fades the mask `feathering` px into the photo
        t.add(eg, "outpaint.pad", {**sides, "fill": "color", "color": [0.5, 0.5, 0.5], "multiple_of": 8,
                                   "overlap": feathering, "feather": feathering}, {"image": image.ref})
    return Pixels(f"{eg}.image") if slot == 0 else MaskV(f"{eg}.mask")


@handles("ImageScale")
def scale(t: Translator, nid: str, slot: int) -> Pixels:
    image = t.input(nid, "image", Pixels)
    method = str(t.input(nid, "upscale_method", str, default="nearest-exact"))
    width, height = int(t.input(nid, "width", int)), int(t.input(nid, "height", int))
    crop = t.input(nid, "crop", str, default="disabled")
    if crop != "disabled" and width and height:
        raise _no(t, nid, f"crop {crop!r}: editgraph's image.resize scales without cropping")
    filt = SCALE_FILTERS.get(method)
    if filt is None:
        t.approximate(nid, f"upscale_method {method!r} becomes bicubic")
        filt = "bicubic"
    return Pixels(t.add(_eg_id("scale", nid), "image.resize", {"width": width, "height": height, "filter": filt}, {"image": image.ref}))


@handles("ImageScaleBy")
def scale_by(t: Translator, nid: str, slot: int) -> Pixels:
    image = t.input(nid, "image", Pixels)
    method = str(t.input(nid, "upscale_method", str, default="nearest-exact"))
    factor = float(t.input(nid, "scale_by", (int, float), default=1.0))
    if not 0 < factor <= 16:
        raise _no(t, nid, f"scale_by {factor} is outside (0, 16]")
    filt = SCALE_FILTERS.get(method)
    if filt is None:
        t.approximate(nid, f"upscale_method {method!r} becomes bicubic")
        filt = "bicubic"
    return Pixels(t.add(_eg_id("scale", nid), "image.scale", {"factor": factor, "filter": filt}, {"image": image.ref}))


@handles("ImageScaleToTotalPixels")
def scale_to_pixels(t: Translator, nid: str, slot: int) -> Pixels:
    image = t.input(nid, "image", Pixels)
    method = str(t.input(nid, "upscale_method", str, default="nearest-exact"))
    megapixels = float(t.input(nid, "megapixels", (int, float), default=1.0))
    steps = int(t.input(nid, "resolution_steps", int, default=1))
    if not 0 < megapixels <= 256 or not 1 <= steps <= 256:
        raise _no(t, nid, f"megapixels {megapixels} / resolution_steps {steps} outside (0, 256] / 1..256")
    filt = SCALE_FILTERS.get(method)
    if filt is None:
        t.approximate(nid, f"upscale_method {method!r} becomes bicubic")
        filt = "bicubic"
    params = {"megapixels": megapixels, "filter": filt, **({"multiple_of": steps} if steps > 1 else {})}
    return Pixels(t.add(_eg_id("scale", nid), "image.scale", params, {"image": image.ref}))


@handles("ImageCompositeMasked")
def composite(t: Translator, nid: str, slot: int) -> Pixels:
    x, y = int(t.input(nid, "x", int, default=0)), int(t.input(nid, "y", int, default=0))
    if x or y:
        raise _no(t, nid, f"an offset source (x={x}, y={y}): editgraph's image.composite lays images over each other at 0,0")
    inputs = {"base": t.input(nid, "destination", Pixels).ref, "overlay": t.input(nid, "source", Pixels).ref}
    mask = t.input(nid, "mask", MaskV, optional=True)
    if mask is not None:
        inputs["mask"] = mask.ref
    params = {"resize_overlay": True} if t.input(nid, "resize_source", bool, default=False) else None
    return Pixels(t.add(_eg_id("composite", nid), "image.composite", params, inputs))
