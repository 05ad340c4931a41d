"""flow.prompt -> flow.reference(s) -> flow.denoise -> flow.decode equals the diffusers pipelines
bit for bit (max abs diff 0.0) on the tiny builds, same seed: Flux 2 Klein (+ inpaint), Flux
Kontext, Qwen-Image-Edit Plus and Flux 2 [dev]; txt2img where the pipeline has it, one reference, the most
references the family takes, and masked edits."""

from __future__ import annotations

import pytest
import torch

from editgraph.nodes.builtin.flow import FlowDecode, FlowDenoise, FlowPrompt, FlowReference, FlowReferences
from editgraph.values.sockets import References

from .flow_support import (
    QWEN_CONDITION_AREA, QWEN_VAE_AREA, assert_same, box_mask, ctx, flow_model, generator, photo, pipeline_for, to_tensor,
)

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]

PROMPT, SEED, STEPS = "replace the cup with the product in picture 2", 3, 2

# Pictures of different sizes and crops, so each reference's own grid and time coordinate matter.
PICTURES = [photo(64, 64), photo(96, 64, (100, 50, 400, 250)), photo(64, 80, (200, 0, 500, 400)), photo(80, 64, (0, 100, 300, 350))]


def _refs(model, pictures, **params) -> References | None:
    if not pictures:
        return None
    encoded = [FlowReference(FlowReference.Params(**params)).run(ctx(), model=model, image=to_tensor(p)) for p in pictures]
    return FlowReferences(FlowReferences.Params()).run(ctx(), **{f"ref{i + 1}": r for i, r in enumerate(encoded)})


def _engine(model, prompt_params, denoise_params, refs, *, qwen=False, source=None, mask=None):
    c = ctx()
    prompt = FlowPrompt(FlowPrompt.Params(**prompt_params))
    cond = prompt.run(c, model=model, references=refs) if qwen else prompt.run(c, model=model)
    latent = FlowDenoise(FlowDenoise.Params(**{"seed": SEED, "steps": STEPS, **denoise_params})).run(
        c, model=model, cond=cond, references=refs, source=source, mask=mask
    )
    return FlowDecode(FlowDecode.Params()).run(c, model=model, latent=latent)


_assert_same = assert_same


def _generator():
    return generator(SEED)


# --- Flux 2 Klein ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_refs", [0, 1, 4], ids=["flux2-klein-txt2img", "flux2-klein-edit-1-ref", "flux2-klein-edit-4-refs"])
def test_flux2_klein_matches_pipeline(n_refs):
    model = flow_model("tiny-flux2-klein")
    pictures = PICTURES[:n_refs]
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=pictures or None, prompt=PROMPT, height=64, width=64, num_inference_steps=STEPS,
            guidance_scale=4.0, generator=_generator(), output_type="pt",
        ).images
    ours = _engine(model, {"prompt": PROMPT}, {"guidance": 4.0, "width": 64, "height": 64}, _refs(model, pictures))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("n_refs", [0, 1, 4], ids=["flux2-dev-txt2img", "flux2-dev-edit-1-ref", "flux2-dev-edit-4-refs"])
def test_flux2_dev_matches_pipeline(n_refs):
    # Flux 2 [dev]: Mistral 3 text encoder, guidance embedded in the transformer (no negative pass).
    model = flow_model("tiny-flux2")
    pictures = PICTURES[:n_refs]
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=pictures or None, prompt=PROMPT, height=64, width=64, num_inference_steps=STEPS,
            guidance_scale=4.0, generator=_generator(), output_type="pt",
        ).images
    ours = _engine(model, {"prompt": PROMPT}, {"guidance": 4.0, "width": 64, "height": 64}, _refs(model, pictures))
    _assert_same(ours, theirs)


@pytest.mark.parametrize(
    ("strength", "n_refs"), [(1.0, 0), (0.6, 1)], ids=["flux2-klein-inpaint-masked", "flux2-klein-inpaint-masked-with-ref"]
)
def test_flux2_klein_masked_edit_matches_inpaint_pipeline(strength, n_refs):
    model = flow_model("tiny-flux2-klein-inpaint")
    source, mask = photo(64, 64), box_mask(64, 64)
    pictures = PICTURES[1 : 1 + n_refs]
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=source, mask_image=mask, image_reference=pictures[0] if pictures else None, prompt=PROMPT,
            strength=strength, num_inference_steps=STEPS + 1, guidance_scale=4.0, generator=_generator(), output_type="pt",
        ).images
    encoded_source = FlowReference(FlowReference.Params()).run(ctx(), model=model, image=to_tensor(source))
    ours = _engine(
        model, {"prompt": PROMPT}, {"guidance": 4.0, "strength": strength, "steps": STEPS + 1}, _refs(model, pictures),
        source=encoded_source, mask=to_tensor(mask)[:, :1],
    )
    _assert_same(ours, theirs)


# --- Flux Kontext ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_refs", "negative"), [(0, None), (1, None), (1, "blurry")],
    ids=["kontext-txt2img", "kontext-edit-1-ref", "kontext-edit-1-ref-true-cfg"],
)
def test_kontext_matches_pipeline(n_refs, negative):
    model = flow_model("tiny-kontext")
    pictures = PICTURES[1 : 1 + n_refs]
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=pictures[0] if pictures else None, prompt=PROMPT, negative_prompt=negative, true_cfg_scale=2.0,
            height=64, width=96, max_area=64 * 96, num_inference_steps=STEPS, guidance_scale=3.5,
            generator=_generator(), output_type="pt", _auto_resize=False,
        ).images
    refs = _refs(model, pictures, auto_resize=False)
    ours = _engine(
        model, {"prompt": PROMPT, "negative_prompt": negative}, {"guidance": 3.5, "true_cfg": 2.0, "width": 96, "height": 64}, refs
    )
    _assert_same(ours, theirs)


@pytest.mark.parametrize(
    ("strength", "n_refs", "negative"), [(1.0, 0, None), (0.6, 1, "blurry")],
    ids=["kontext-inpaint-masked", "kontext-inpaint-masked-with-ref-true-cfg"],
)
def test_kontext_masked_edit_matches_inpaint_pipeline(strength, n_refs, negative):
    model = flow_model("tiny-kontext-inpaint")
    source, mask = photo(96, 64), box_mask(96, 64)
    pictures = PICTURES[:n_refs]
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=source, mask_image=mask, image_reference=pictures[0] if pictures else None, prompt=PROMPT,
            negative_prompt=negative, true_cfg_scale=2.0, strength=strength, height=64, width=96, max_area=64 * 96,
            num_inference_steps=STEPS + 1, guidance_scale=3.5, generator=_generator(), output_type="pt", _auto_resize=False,
        ).images
    encoded_source = FlowReference(FlowReference.Params(auto_resize=False)).run(ctx(), model=model, image=to_tensor(source))
    ours = _engine(
        model, {"prompt": PROMPT, "negative_prompt": negative},
        {"guidance": 3.5, "true_cfg": 2.0, "strength": strength, "steps": STEPS + 1},
        _refs(model, pictures, auto_resize=False), source=encoded_source, mask=to_tensor(mask),
    )
    _assert_same(ours, theirs)


# --- Qwen-Image-Edit Plus -------------------------------------------------------------------------


@pytest.fixture
def small_qwen_areas(monkeypatch):
    """The pipeline hard-codes 384² and 1024² for its two reference copies; both sides use small ones."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", QWEN_CONDITION_AREA)
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", QWEN_VAE_AREA)


@pytest.mark.parametrize(
    ("n_refs", "negative"), [(1, None), (3, "blurry")], ids=["qwen-edit-plus-edit-1-ref", "qwen-edit-plus-edit-3-refs-true-cfg"]
)
def test_qwen_edit_plus_matches_pipeline(small_qwen_areas, n_refs, negative):
    model = flow_model("tiny-qwen-edit-plus")
    pictures = PICTURES[:n_refs]
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=pictures, prompt=PROMPT, negative_prompt=negative, true_cfg_scale=4.0, height=64, width=64,
            num_inference_steps=STEPS, generator=_generator(), output_type="pt",
        ).images
    refs = _refs(model, pictures, condition_area=QWEN_CONDITION_AREA, vae_area=QWEN_VAE_AREA)
    ours = _engine(
        model, {"prompt": PROMPT, "negative_prompt": negative}, {"true_cfg": 4.0, "width": 64, "height": 64}, refs, qwen=True
    )
    _assert_same(ours, theirs)
