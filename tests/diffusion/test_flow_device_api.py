"""The flow families run through the public API (`editgraph.run(..., device=...)`) and the CLI
(`editgraph run --device ...`) with the device named explicitly, and give the diffusers pipeline's
pixels bit for bit on that device (the CPU here; `pytest --device cuda` on a GPU machine, see
bench/gpu_check.py). The model.load node puts the weights on the run's device and every flow stage
computes there (tests/diffusion/test_flow_devices.py checks the placement tensor by tensor).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import editgraph
from editgraph.ops.imaging import to_uint8

from .flow_support import QWEN_CONDITION_AREA, QWEN_VAE_AREA, assert_same, box_mask, device, flow_model, generator, photo, pipeline_for

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]

PROMPT, SEED, STEPS = "replace the cup with the product in picture 2", 3, 2


def _doc(model: str, pictures: list[str], *, denoise: dict, reference: dict | None = None, negative: str | None = None,
         source: str | None = None, mask: str | None = None) -> dict:
    """image.load x N -> flow.reference x N -> flow.references; flow.prompt; flow.denoise (masked when
    `source` and `mask` are given); flow.decode; image.save."""
    nodes: dict = {"model": {"type": "model.load", "params": {"model": model}}}
    for i, path in enumerate(pictures, 1):
        nodes[f"pic{i}"] = {"type": "image.load", "params": {"path": path}}
        nodes[f"ref{i}"] = {"type": "flow.reference", "inputs": {"model": "model", "image": f"pic{i}"}, "params": reference or {}}
    denoise_inputs = {"model": "model", "cond": "text"}
    if pictures:
        nodes["refs"] = {"type": "flow.references", "inputs": {f"ref{i}": f"ref{i}" for i in range(1, len(pictures) + 1)}}
        denoise_inputs["references"] = "refs"
    if source is not None:
        nodes["photo"] = {"type": "image.load", "params": {"path": source}}
        nodes["source"] = {"type": "flow.reference", "inputs": {"model": "model", "image": "photo"}, "params": reference or {}}
        nodes["region"] = {"type": "mask.load", "params": {"path": mask}}
        denoise_inputs.update(source="source", mask="region")
    text = {"prompt": PROMPT} if negative is None else {"prompt": PROMPT, "negative_prompt": negative}
    nodes["text"] = {"type": "flow.prompt", "inputs": {"model": "model"}, "params": text}
    if model.startswith("tiny-qwen") and pictures:  # Qwen-Image-Edit reads the instruction with the pictures
        nodes["text"]["inputs"]["references"] = "refs"
    nodes["denoise"] = {"type": "flow.denoise", "inputs": denoise_inputs, "params": {"seed": SEED, "steps": STEPS, **denoise}}
    nodes["pixels"] = {"type": "flow.decode", "inputs": {"model": "model", "latent": "denoise"}}
    nodes["save"] = {"type": "image.save", "inputs": {"image": "pixels"}, "params": {"path": "out.png"}}
    return {"format": "editgraph/1", "name": "device-check", "nodes": nodes}


def _save(tmp_path, name: str, picture: PILImage.Image) -> str:
    path = tmp_path / name
    picture.save(path)
    return str(path)


def _run(doc: dict, tmp_path) -> torch.Tensor:
    result = editgraph.run(doc, out=tmp_path / "out", cache=False, device=str(device()))
    assert result.report["device"] == str(device())
    return result.value("pixels")


def test_kontext_edit_through_the_api_with_a_named_device_matches_the_pipeline(tmp_path):
    picture = photo(96, 64, (100, 50, 400, 250))
    doc = _doc("tiny-kontext", [_save(tmp_path, "ref.png", picture)], reference={"auto_resize": False}, negative="blurry",
               denoise={"guidance": 3.5, "true_cfg": 2.0, "width": 96, "height": 64})
    ours = _run(doc, tmp_path)
    with torch.inference_mode():
        theirs = pipeline_for(flow_model("tiny-kontext"))(
            image=picture, prompt=PROMPT, negative_prompt="blurry", true_cfg_scale=2.0, height=64, width=96, max_area=64 * 96,
            num_inference_steps=STEPS, guidance_scale=3.5, generator=generator(SEED), output_type="pt", _auto_resize=False,
        ).images
    assert ours.device.type == "cpu"  # pixels leave flow.decode on the CPU, where the pixel nodes run
    assert_same(ours, theirs)


def test_flux2_klein_masked_edit_through_the_api_with_a_named_device_matches_the_inpaint_pipeline(tmp_path):
    source, mask, reference = photo(64, 64), box_mask(64, 64), photo(96, 64, (100, 50, 400, 250))
    doc = _doc("tiny-flux2-klein-inpaint", [_save(tmp_path, "ref.png", reference)], source=_save(tmp_path, "src.png", source),
               mask=_save(tmp_path, "mask.png", mask), denoise={"guidance": 4.0, "strength": 0.6, "steps": STEPS + 1})
    ours = _run(doc, tmp_path)
    with torch.inference_mode():
        theirs = pipeline_for(flow_model("tiny-flux2-klein-inpaint"))(
            image=source, mask_image=mask, image_reference=reference, prompt=PROMPT, strength=0.6,
            num_inference_steps=STEPS + 1, guidance_scale=4.0, generator=generator(SEED), output_type="pt",
        ).images
    assert_same(ours, theirs)


def test_flux2_dev_edit_through_the_api_with_a_named_device_matches_the_pipeline(tmp_path):
    picture = photo(64, 80, (200, 0, 500, 400))
    doc = _doc("tiny-flux2", [_save(tmp_path, "ref.png", picture)], denoise={"guidance": 4.0, "width": 64, "height": 64})
    ours = _run(doc, tmp_path)
    with torch.inference_mode():
        theirs = pipeline_for(flow_model("tiny-flux2"))(
            image=[picture], prompt=PROMPT, height=64, width=64, num_inference_steps=STEPS, guidance_scale=4.0,
            generator=generator(SEED), output_type="pt",
        ).images
    assert_same(ours, theirs)


def test_qwen_edit_plus_through_the_api_with_a_named_device_matches_the_pipeline(tmp_path, monkeypatch):
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", QWEN_CONDITION_AREA)  # the pipeline's constants, lowered
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", QWEN_VAE_AREA)  # as the engine's params are below
    pictures = [photo(64, 64), photo(96, 64, (100, 50, 400, 250))]
    doc = _doc("tiny-qwen-edit-plus", [_save(tmp_path, f"ref{i}.png", p) for i, p in enumerate(pictures)], negative="blurry",
               reference={"condition_area": QWEN_CONDITION_AREA, "vae_area": QWEN_VAE_AREA},
               denoise={"true_cfg": 4.0, "width": 64, "height": 64})
    ours = _run(doc, tmp_path)
    with torch.inference_mode():
        theirs = pipeline_for(flow_model("tiny-qwen-edit-plus"))(
            image=pictures, prompt=PROMPT, negative_prompt="blurry", true_cfg_scale=4.0, height=64, width=64,
            num_inference_steps=STEPS, generator=generator(SEED), output_type="pt",
        ).images
    assert_same(ours, theirs)


def test_the_cli_with_a_named_device_saves_the_pipelines_pixels(tmp_path, cli):
    import json

    source, mask = photo(96, 64), box_mask(96, 64)
    doc = _doc("tiny-kontext-inpaint", [], source=_save(tmp_path, "src.png", source), mask=_save(tmp_path, "mask.png", mask),
               reference={"auto_resize": False}, denoise={"guidance": 3.5, "strength": 0.6, "steps": STEPS + 1})
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    code, _, err = cli("run", tmp_path / "wf.json", "--device", str(device()), "--out", tmp_path / "out", "--no-cache",
                       "--report", tmp_path / "report.json", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "report.json").read_text())["device"] == str(device())
    with torch.inference_mode():
        theirs = pipeline_for(flow_model("tiny-kontext-inpaint"))(
            image=source, mask_image=mask, prompt=PROMPT, strength=0.6, height=64, width=96, max_area=64 * 96,
            num_inference_steps=STEPS + 1, guidance_scale=3.5, generator=generator(SEED), output_type="pt", _auto_resize=False,
        ).images
    saved = np.asarray(PILImage.open(tmp_path / "out" / "out.png").convert("RGB"))
    assert np.array_equal(saved, to_uint8(theirs.cpu())[0])
