"""The first Qwen-Image-Edit (QwenImageEditPipeline) and its inpaint pipeline
(QwenImageEditInpaintPipeline) as flow.* stages equal the pipelines bit for bit on the tiny builds,
same seed: an edit of one picture (with and without true CFG) and a masked edit (full and partial
strength). Both pipelines size the picture to ~1024² inline (calculate_dimensions(1024 * 1024, ...));
the tests lower that area on both sides, as the Plus tests lower its module constants."""

from __future__ import annotations

import pytest
import torch

from editgraph.errors import NodeError
from editgraph.nodes.builtin.flow import FlowDecode, FlowDenoise, FlowPrompt, FlowReference, FlowReferences

from .flow_support import QWEN_VAE_AREA, assert_same, box_mask, ctx, flow_model, generator, photo, pipeline_for, to_tensor

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]

PROMPT, SEED, STEPS = "make the cup red", 3, 2


@pytest.fixture
def small_area(monkeypatch):
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as inpaint

    for module in (edit, inpaint):
        original = module.calculate_dimensions
        monkeypatch.setattr(module, "calculate_dimensions", lambda area, ratio, _f=original: _f(QWEN_VAE_AREA, ratio))


def _source(model, picture):
    ref = FlowReference(FlowReference.Params(vae_area=QWEN_VAE_AREA)).run(ctx(), model=model, image=to_tensor(picture))
    return ref, FlowReferences(FlowReferences.Params()).run(ctx(), ref1=ref)


def _generator():
    return generator(SEED)


_same = assert_same


@pytest.mark.parametrize("negative", [None, "blurry"], ids=["qwen-edit-1-ref", "qwen-edit-1-ref-true-cfg"])
def test_qwen_edit_matches_pipeline(small_area, negative):
    model = flow_model("tiny-qwen-edit")
    picture = photo(96, 64, (100, 50, 400, 250))
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=picture, prompt=PROMPT, negative_prompt=negative, true_cfg_scale=4.0, height=64, width=64,
            num_inference_steps=STEPS, generator=_generator(), output_type="pt",
        ).images
    _, refs = _source(model, picture)
    c = ctx()
    cond = FlowPrompt(FlowPrompt.Params(prompt=PROMPT, negative_prompt=negative)).run(c, model=model, references=refs)
    latent = FlowDenoise(FlowDenoise.Params(seed=SEED, steps=STEPS, true_cfg=4.0, width=64, height=64)).run(
        c, model=model, cond=cond, references=refs
    )
    _same(FlowDecode(FlowDecode.Params()).run(c, model=model, latent=latent), theirs)


@pytest.mark.parametrize(
    ("strength", "negative"), [(1.0, None), (0.6, "blurry")], ids=["qwen-edit-inpaint-masked", "qwen-edit-inpaint-masked-true-cfg"]
)
def test_qwen_edit_masked_edit_matches_inpaint_pipeline(small_area, strength, negative):
    model = flow_model("tiny-qwen-edit-inpaint")
    picture, mask = photo(96, 64), box_mask(96, 64)
    with torch.inference_mode():
        theirs = pipeline_for(model)(
            image=picture, mask_image=mask, prompt=PROMPT, negative_prompt=negative, true_cfg_scale=4.0, strength=strength,
            num_inference_steps=STEPS + 1, generator=_generator(), output_type="pt",
        ).images
    source, refs = _source(model, picture)
    c = ctx()
    cond = FlowPrompt(FlowPrompt.Params(prompt=PROMPT, negative_prompt=negative)).run(c, model=model, references=refs)
    latent = FlowDenoise(FlowDenoise.Params(seed=SEED, steps=STEPS + 1, true_cfg=4.0, strength=strength)).run(
        c, model=model, cond=cond, source=source, mask=to_tensor(mask)
    )
    _same(FlowDecode(FlowDecode.Params()).run(c, model=model, latent=latent), theirs)
    # the same encoded source again: the posterior is drawn with the seed, not cached as a sample
    again = FlowDenoise(FlowDenoise.Params(seed=SEED, steps=STEPS + 1, true_cfg=4.0, strength=strength)).run(
        c, model=model, cond=cond, source=source, mask=to_tensor(mask)
    )
    assert torch.equal(again.samples, latent.samples)


def test_qwen_edit_takes_one_picture_and_plus_has_no_masked_edit(small_area):
    model = flow_model("tiny-qwen-edit")
    pictures = [photo(64, 64), photo(64, 64, (0, 0, 300, 300))]
    refs = FlowReferences(FlowReferences.Params()).run(
        ctx(), **{f"ref{i + 1}": _source(model, p)[0] for i, p in enumerate(pictures)}
    )
    with pytest.raises(NodeError, match="exactly one picture"):
        FlowPrompt(FlowPrompt.Params(prompt=PROMPT)).run(ctx(), model=model, references=refs)
    plus = flow_model("tiny-qwen-edit-plus")
    source, refs = _source(plus, photo(64, 64))
    cond = FlowPrompt(FlowPrompt.Params(prompt=PROMPT)).run(ctx(), model=plus, references=refs)
    with pytest.raises(NodeError, match="masked edits run on Qwen-Image-Edit"):
        FlowDenoise(FlowDenoise.Params(strength=0.5)).run(ctx(), model=plus, cond=cond, source=source, mask=to_tensor(box_mask(64, 64))[:, :1])
