"""ComfyUI's Flux Kontext and Qwen-Image-Edit graphs, translated onto editgraph's flow.* stages.

ComfyUI loads such a model in parts (UNETLoader for the diffusion model, DualCLIPLoader or
CLIPLoader for the text encoders, VAELoader) and chains conditioning through small nodes
(ReferenceLatent, FluxGuidance, ConditioningZeroOut, TextEncodeQwenImageEdit(Plus)). editgraph
loads one diffusers folder with model.load and runs

    flow.reference (one per picture) -> flow.references -> flow.prompt -> flow.denoise -> flow.decode

What becomes what:
- UNETLoader's file name becomes the model name; the text encoder and VAE loaders of the same
  workflow resolve to that model too (a diffusers folder holds all of them; their file names go
  into the model param's description). With no UNETLoader, or several, a separate text encoder or
  VAE is listed as untranslatable, as before.
- ReferenceLatent(conditioning, VAEEncode(picture)) adds the picture as a reference; through
  FluxKontextImageScale, its flow.reference snaps it to a Kontext resolution (auto_resize), as
  the pipeline does (diffusers resizes to that size; ComfyUI also centre-crops: a few pixels).
- TextEncodeQwenImageEdit(Plus) is the instruction read together with its pictures: the
  pictures become references (VAE copy and the small copy the text encoder sees at ComfyUI's
  areas: 1024² for both with the first, 384² and 1024² with Plus) and flow.prompt takes them.
- KSampler: steps and seed as they are; cfg becomes flow.denoise's `true_cfg`, used when the
  negative prompt is a real one (not ConditioningZeroOut) and cfg > 1, as ComfyUI skips the
  negative at cfg 1; FluxGuidance's value becomes `guidance` (ComfyUI's Flux default 3.5 when
  absent). The output size comes from an empty latent's width and height, or, for a latent encoded
  from the reference picture, from the references (the pipeline's rule: 0 = from the references).
  Flow models sample with their own FlowMatchEuler schedule: sampler "euler" with scheduler
  "simple"/"normal" carry over; others are approximations (errors unless --partial).
- SetLatentNoiseMask over the encoded picture makes a masked edit: that picture's flow.reference
  becomes flow.denoise's `source`, the mask its `mask`, KSampler's denoise its `strength` (the
  inpaint pipelines' strength); Kontext sees its other references, Qwen reads the source with
  the prompt (run it on a QwenImageEditInpaintPipeline / FluxKontextInpaintPipeline folder).
Not translated (listed): a denoise below 1 without a mask, a second sampling pass.
"""

from __future__ import annotations

from typing import Any

from editgraph.sharing.comfy.api import (
    PART_LOADERS,
    UNET_LOADERS,
    FlowCond,
    FlowRef,
    LatentV,
    ModelV,
    Pixels,
    ScaledPixels,
    Translator,
    Untranslatable,
    _eg_id,
    _ID_SAFE,
    _stem,
    handles,
)

KONTEXT_RESIZE = (("auto_resize", True),)
NO_RESIZE = (("auto_resize", False),)
QWEN_EDIT_AREAS = (("condition_area", 1024 * 1024), ("vae_area", 1024 * 1024))  # TextEncodeQwenImageEdit: both copies 1 MP
QWEN_PLUS_AREAS = (("condition_area", 384 * 384), ("vae_area", 1024 * 1024))  # TextEncodeQwenImageEditPlus
FLUX_DEFAULT_GUIDANCE = 3.5  # ComfyUI's Flux model when no FluxGuidance is set
FLOW_SPACINGS = {"simple", "normal"}
MAX_REFERENCES = 8  # flow.references' slots
WEIGHT_DTYPES = {"default": None, "fp8_e4m3fn": "bfloat16", "fp8_e4m3fn_fast": "bfloat16", "fp8_e5m2": "bfloat16"}


def _no(t: Translator, nid: str, why: str) -> Untranslatable:
    return Untranslatable(nid, t.class_type(nid), why)


# --- loaders --------------------------------------------------------------------------------------


def _file_inputs(t: Translator, nid: str) -> list[str]:
    return [str(v) for k, v in sorted(t.prompt[nid].get("inputs", {}).items()) if k.endswith("_name") or k.startswith("clip_name")]


@handles(*UNET_LOADERS)
def unet(t: Translator, nid: str, slot: int) -> ModelV:
    file_name = str(t.input(nid, "unet_name", str))
    dtype_name = str(t.input(nid, "weight_dtype", str, default="default"))
    if dtype_name not in WEIGHT_DTYPES:
        raise _no(t, nid, f"weight_dtype {dtype_name!r} is not one of {', '.join(WEIGHT_DTYPES)}")
    dtype = WEIGHT_DTYPES[dtype_name]
    if dtype is not None:
        t.approximate(nid, f"weight_dtype {dtype_name!r}: editgraph has no fp8 weights; the model loads in {dtype}")
    parts = [f for c in sorted(t.prompt) if t.class_type(c) in PART_LOADERS for f in _file_inputs(t, c)]
    with_parts = f" with {', '.join(repr(p) for p in parts)}" if parts else ""
    ref = t.param("model", {
        "type": "string", "default": _stem(file_name),
        "description": f"the diffusers folder of the model ComfyUI loaded as {file_name!r}{with_parts}: a model name or path",
    })
    params: dict[str, Any] = {"model": ref}
    if dtype is not None:
        params["dtype"] = dtype
    return ModelV(t.add(_eg_id("model", nid), "model.load", params), flow=True)


@handles(*PART_LOADERS)
def separate_part(t: Translator, nid: str, slot: int) -> ModelV:
    unets = [c for c in sorted(t.prompt) if t.class_type(c) in UNET_LOADERS]
    if len(unets) != 1:
        why = ("editgraph loads a model's VAE, text encoder and UNet together (model.load of one checkpoint or folder); "
               "a separate file for one part is not supported")
        if unets:
            why = f"the workflow loads {len(unets)} diffusion models (UNETLoader); which one's folder holds this part is ambiguous"
        raise _no(t, nid, why)
    # the one diffusion model's diffusers folder holds its text encoders and VAE too
    return t.value(unets[0], 0, ModelV, consumer=nid)


@handles("CFGNorm")
def cfg_norm(t: Translator, nid: str, slot: int) -> ModelV:
    # the Qwen stages already rescale the guided prediction to the conditional one's norm (the
    # pipeline's true CFG), which is what CFGNorm at strength 1 is for
    strength = float(t.input(nid, "strength", (int, float), default=1.0))
    model = t.input(nid, "model", ModelV)
    if strength != 1.0:
        t.approximate(nid, f"strength {strength}: editgraph rescales guidance to the conditional prediction's norm in full (strength 1)")
    return model


@handles("ModelSamplingAuraFlow", "ModelSamplingFlux", "ModelSamplingSD3")
def model_sampling(t: Translator, nid: str, slot: int) -> ModelV:
    model = t.input(nid, "model", ModelV)
    shift = t.prompt[nid].get("inputs", {}).get("shift", t.prompt[nid].get("inputs", {}).get("max_shift"))
    t.approximate(nid, f"a fixed shift ({shift}): editgraph uses the model folder's own scheduler config (the pipeline's shift)")
    return model


# --- conditioning ---------------------------------------------------------------------------------


def _flow_cond(t: Translator, nid: str, name: str = "conditioning") -> FlowCond:
    cond = t.input(nid, name, FlowCond)
    if cond.zero:
        raise _no(t, nid, "its conditioning was zeroed (ConditioningZeroOut): nothing is left to add to")
    return cond


def _reference(t: Translator, nid: str, latent: LatentV) -> FlowRef:
    if latent.kind != "encoded" or latent.mask is not None or latent.model is None or not latent.model.flow:
        raise _no(t, nid, "a reference latent must be a picture encoded by the flow model's VAE (VAEEncode), without a noise mask")
    image = latent.image
    if isinstance(image, ScaledPixels):
        return FlowRef(image.image, KONTEXT_RESIZE)
    return FlowRef(image, NO_RESIZE)  # type: ignore[arg-type]


@handles("ReferenceLatent")
def reference_latent(t: Translator, nid: str, slot: int) -> FlowCond:
    cond = _flow_cond(t, nid)
    latent = t.input(nid, "latent", LatentV, optional=True)
    if latent is None:
        return cond
    return FlowCond(cond.text, cond.model, (*cond.refs, _reference(t, nid, latent)), cond.guidance, False, cond.reads_refs)


@handles("FluxGuidance")
def flux_guidance(t: Translator, nid: str, slot: int) -> FlowCond:
    cond = _flow_cond(t, nid)
    guidance = float(t.input(nid, "guidance", (int, float), default=FLUX_DEFAULT_GUIDANCE))
    return FlowCond(cond.text, cond.model, cond.refs, guidance, False, cond.reads_refs)


@handles("ConditioningZeroOut")
def zero_out(t: Translator, nid: str, slot: int) -> FlowCond:
    cond = t.input(nid, "conditioning", FlowCond)
    return FlowCond("", cond.model, (), None, True, cond.reads_refs)


@handles("FluxKontextImageScale")
def kontext_scale(t: Translator, nid: str, slot: int) -> ScaledPixels:
    return ScaledPixels(t.input(nid, "image", Pixels))


def _qwen_pictures(t: Translator, nid: str, names: tuple[str, ...], areas: tuple[tuple[str, Any], ...]) -> FlowCond:
    clip = t.input(nid, "clip", ModelV)
    if not clip.flow:
        raise _no(t, nid, "needs a Qwen-Image-Edit text encoder (CLIPLoader with the model's UNETLoader)")
    pictures = [t.input(nid, n, Pixels, optional=True) for n in names]
    given = [p for p in pictures if p is not None]
    if given and t.input(nid, "vae", ModelV, optional=True) is None:
        raise _no(t, nid, "pictures without a VAE (the text encoder sees them, the denoiser does not): editgraph's Qwen stages always give the denoiser the references")
    if given and pictures[: len(given)] != given:
        raise _no(t, nid, f"pictures in {', '.join(names)} with a gap: ComfyUI numbers them by slot, editgraph in order; connect them from the first slot")
    return FlowCond(str(t.input(nid, "prompt", str)), clip, tuple(FlowRef(p, areas) for p in given), None, False, True)


@handles("TextEncodeQwenImageEdit")
def qwen_edit(t: Translator, nid: str, slot: int) -> FlowCond:
    return _qwen_pictures(t, nid, ("image",), QWEN_EDIT_AREAS)


@handles("TextEncodeQwenImageEditPlus")
def qwen_edit_plus(t: Translator, nid: str, slot: int) -> FlowCond:
    return _qwen_pictures(t, nid, ("image1", "image2", "image3"), QWEN_PLUS_AREAS)


# --- the sampler ------------------------------------------------------------------------------------


def _reference_node(t: Translator, model: ModelV, ref: FlowRef) -> str:
    """One flow.reference per picture and settings: the positive and negative prompts (and several
    samplers) share it, so it is encoded once."""
    base = _eg_id("reference", _ID_SAFE.sub("_", ref.image.ref))
    params = dict(ref.params)
    eg, n = base, 1
    while eg in t.nodes:
        spec = t.nodes[eg]
        if spec.get("params", {}) == params and spec["inputs"] == {"model": model.ref, "image": ref.image.ref}:
            return eg
        n += 1
        eg = f"{base}_{n}"
    return t.add(eg, "flow.reference", params, {"model": model.ref, "image": ref.image.ref})


def flow_sample(t: Translator, nid: str, *, model: ModelV, positive: FlowCond, negative: FlowCond | None, latent: LatentV,
                seed: Any, steps: int, cfg: float, sampler: tuple[str, str], strength: float) -> LatentV:
    """KSampler over a flow edit model: flow.references, flow.prompt, flow.denoise (see the module doc)."""
    sampler_name, scheduler = sampler
    masked = latent.kind == "encoded" and latent.mask is not None
    if strength != 1.0 and not masked:
        raise _no(t, nid, f"denoise {strength} on a flow edit model without a noise mask: flow.denoise repaints fully (only masked edits take a strength)")
    if positive.zero:
        raise _no(t, nid, "the positive prompt was zeroed (ConditioningZeroOut)")
    if positive.model.root != model.root:
        raise _no(t, nid, "the prompt's text encoder and the sampled model come from different models")
    if sampler_name != "euler":
        t.approximate(nid, f"sampler {sampler_name!r}: flow edit models sample with their own FlowMatchEuler scheduler (ComfyUI's 'euler')")
    if scheduler not in FLOW_SPACINGS:
        t.approximate(nid, f"scheduler {scheduler!r}: flow edit models use their own schedule (like {', '.join(sorted(FLOW_SPACINGS))})")

    # 1. the output size: an empty latent's, the references' (the pipeline's rule), or with a noise
    #    mask the encoded picture's, which becomes the masked edit's source
    width = height = 0
    source: FlowRef | None = None
    if latent.kind == "empty":
        width, height, batch = latent.size
        if batch != 1:
            raise _no(t, nid, f"batch_size {batch}: flow.denoise makes one picture")
    elif latent.kind == "encoded":
        image = latent.image.image if isinstance(latent.image, ScaledPixels) else latent.image
        same = [r for r in positive.refs if r.image == image]
        if masked:
            # the source is encoded like the reference of the same picture (Qwen: its areas), else as ComfyUI did
            source = same[0] if same else FlowRef(image, KONTEXT_RESIZE if isinstance(latent.image, ScaledPixels) else NO_RESIZE)  # type: ignore[arg-type]
        elif not same:
            t.approximate(nid, "the latent is encoded from a picture that is not a reference: the output takes the references' size")
    else:
        raise _no(t, nid, "a second sampling pass over a flow model's output is not translated")

    # 2. the references, in order, encoded once each (a masked edit's model sees the source besides
    #    them: Kontext takes a reference other than the source; Qwen reads the source with the prompt)
    if len(positive.refs) > MAX_REFERENCES:
        raise _no(t, nid, f"{len(positive.refs)} reference pictures; flow.references takes up to {MAX_REFERENCES}")
    refs = None
    if positive.refs:
        slots = {f"ref{i + 1}": _reference_node(t, model, r) for i, r in enumerate(positive.refs)}
        refs = t.add(_eg_id("references", nid), "flow.references", inputs=slots)
    denoise_refs = refs
    if source is not None:
        others = [r for r in positive.refs if r.image != source.image]
        denoise_refs = None
        if others and not positive.reads_refs:
            slots = {f"ref{i + 1}": _reference_node(t, model, r) for i, r in enumerate(others)}
            denoise_refs = t.add(_eg_id("denoise_refs", nid), "flow.references", inputs=slots)
        elif others:
            raise _no(t, nid, "a Qwen-Image-Edit masked edit reads only the picture it repaints; other pictures have no place")

    # 3. the instruction (and the negative prompt where true CFG will use it)
    use_negative = negative is not None and not negative.zero and cfg > 1.0
    if negative is not None and negative.zero and cfg > 1.0:
        t.approximate(nid, f"cfg {cfg} against a zeroed negative: editgraph's true CFG needs a negative prompt; none is used")
    if use_negative and negative.model.ref != positive.model.ref:  # type: ignore[union-attr]
        raise _no(t, nid, "positive and negative prompts come from different text encoders")
    if use_negative and positive.reads_refs and negative.refs != positive.refs:  # type: ignore[union-attr]
        raise _no(t, nid, "the negative prompt reads other pictures than the positive one: flow.prompt encodes both with the same references")
    text_params: dict[str, Any] = {"prompt": positive.text}
    if use_negative:
        text_params["negative_prompt"] = negative.text  # type: ignore[union-attr]
    text_inputs = {"model": positive.model.ref}  # with the LoRAs its CLIP went through
    if positive.reads_refs and refs is not None:
        text_inputs["references"] = refs
    cond = t.add(_eg_id("text", nid), "flow.prompt", text_params, text_inputs)

    # 4. the denoise
    params: dict[str, Any] = {"steps": steps, "seed": seed}
    if not positive.reads_refs:  # Kontext, Klein: a distilled guidance embedding
        params["guidance"] = positive.guidance if positive.guidance is not None else FLUX_DEFAULT_GUIDANCE
    params["true_cfg"] = cfg if use_negative else 1.0
    if width and height:
        params.update(width=width, height=height)
    inputs = {"model": model.ref, "cond": cond}
    if denoise_refs is not None:
        inputs["references"] = denoise_refs
    if source is not None:
        params["strength"] = strength
        inputs.update(source=_reference_node(t, model, source), mask=latent.mask.ref)  # type: ignore[union-attr]
    ref = t.add(_eg_id("denoise", nid), "flow.denoise", params, inputs)
    return LatentV("sampled", model=model, ref=ref)
