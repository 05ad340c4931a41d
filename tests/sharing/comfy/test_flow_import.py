"""ComfyUI's Flux Kontext and Qwen-Image-Edit graphs onto editgraph's flow.* stages: the three shipped
workflows (tests/data/comfy/{kontext-edit,qwen-edit,qwen-edit-plus}.{api,ui}.json, written for this repo) import
alike from both forms, carry ComfyUI's sampler settings as stated in api_flow.py, and run on the
tiny builds; one case per node type the translation adds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.sharing.comfy import import_comfy, read_comfy
from editgraph.sharing.preflight import check_sources

from tests.conftest import ASSETS

DATA = Path(__file__).resolve().parents[2] / "data" / "comfy"

# file -> (tiny model, the nodes ComfyUI's KSampler 31/3 must become: params and inputs, model name)
EXPECTED = {
    "kontext-edit": (
        "tiny-kontext",
        # KSampler cfg 1 with a zeroed negative: no true CFG; FluxGuidance 2.5 is the distilled guidance
        {"steps": 3, "seed": 12, "guidance": 2.5, "true_cfg": 1.0},
        {"model": "model_37", "cond": "text_31", "references": "references_31"},
        {"prompt": "make the cup bright red, keep the saucer and the spoon"},
        {"model": "model_37"},  # Kontext's encoders do not read the references: prompt edits never re-encode them
        "flux1-dev-kontext_fp8_scaled",
    ),
    "qwen-edit-plus": (
        "tiny-qwen-edit-plus",
        # cfg 2.5 against a real (empty) negative prompt: true CFG 2.5; EmptySD3LatentImage gives the size
        {"steps": 3, "seed": 21, "true_cfg": 2.5, "width": 64, "height": 48},
        {"model": "model_37", "cond": "text_3", "references": "references_3"},
        {"prompt": "put the spoon from picture 2 into the cup in picture 1", "negative_prompt": ""},
        {"model": "model_37", "references": "references_3"},  # Qwen's encoder reads the pictures too
        "qwen_image_edit_2509_fp8_e4m3fn",
    ),
    "qwen-edit": (
        "tiny-qwen-edit",
        # the first Qwen-Image-Edit (TextEncodeQwenImageEdit): one picture; cfg 4 against a real negative
        {"steps": 3, "seed": 8, "true_cfg": 4.0, "width": 64, "height": 48},
        {"model": "model_37", "cond": "text_3", "references": "references_3"},
        {"prompt": "make the saucer dark blue", "negative_prompt": "blurry, distorted"},
        {"model": "model_37", "references": "references_3"},
        "qwen_image_edit_fp8_e4m3fn",
    ),
}
SAMPLER = {"kontext-edit": "31", "qwen-edit-plus": "3", "qwen-edit": "3"}


def load(name: str, form: str, **kw):
    return import_comfy(read_comfy(DATA / f"{name}.{form}.json"), name=name, **kw)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_api_and_ui_forms_import_to_the_same_flow_document(name):
    api, ui = load(name, "api"), load(name, "ui")
    assert api.issues == [] and ui.issues == []
    assert api.document == ui.document


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ksampler_settings_become_the_flow_denoise_params(name):
    _, params, inputs, text_params, text_inputs, model_name = EXPECTED[name]
    doc = load(name, "api").document
    sid = SAMPLER[name]
    denoise = doc["nodes"][f"denoise_{sid}"]
    assert denoise["type"] == "flow.denoise"
    assert denoise["params"] == params and denoise["inputs"] == inputs
    assert doc["nodes"][f"text_{sid}"] == {"type": "flow.prompt", "version": "1.0.0", "inputs": text_inputs, "params": text_params}
    assert doc["params"]["model"]["default"] == model_name
    # one model.load for the UNET, text encoder and VAE loaders: a diffusers folder holds all three
    assert [n["type"] for n in doc["nodes"].values()].count("model.load") == 1
    assert doc["nodes"]["decode_8"] == {"type": "flow.decode", "version": "1.0.0", "inputs": {"model": "model_37", "latent": f"denoise_{sid}"}}


def test_kontext_reference_goes_through_the_kontext_resize():
    nodes = load("kontext-edit", "api").document["nodes"]
    assert nodes["reference_image_41"]["params"] == {"auto_resize": True}  # FluxKontextImageScale
    assert nodes["references_31"]["inputs"] == {"ref1": "reference_image_41"}
    assert "encode_31" not in nodes  # the VAEEncode feeding the sampler only gave the size


def test_qwen_plus_pictures_are_references_in_order_encoded_once():
    nodes = load("qwen-edit-plus", "api").document["nodes"]
    # positive and negative TextEncodeQwenImageEditPlus read the same two pictures: two encodes, not four
    refs = {k: v for k, v in nodes.items() if v["type"] == "flow.reference"}
    assert sorted(refs) == ["reference_image_106", "reference_image_78"]
    assert all(r["params"] == {"condition_area": 384 * 384, "vae_area": 1024 * 1024} for r in refs.values())
    assert nodes["references_3"]["inputs"] == {"ref1": "reference_image_78", "ref2": "reference_image_106"}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("comfy-flow-inputs")
    with Image.open(ASSETS / "coffee.png") as im:
        photo = im.convert("RGB").resize((64, 40), Image.Resampling.LANCZOS)
        spoon = im.convert("RGB").crop((380, 120, 560, 300)).resize((32, 32), Image.Resampling.LANCZOS)
    photo.save(folder / "coffee.png")
    spoon.save(folder / "spoon.png")
    return {"coffee.png": str(folder / "coffee.png"), "spoon.png": str(folder / "spoon.png")}


def _tiny_sizes(doc: dict) -> dict:
    """The imported references are encoded at ComfyUI's sizes (Kontext's ~1 MP resolutions, Qwen's
    1024² VAE copy): half a minute each with tiny weights on a CPU. The run lowers only those."""
    doc = copy.deepcopy(doc)
    for spec in doc["nodes"].values():
        if spec["type"] == "flow.reference":
            if "auto_resize" in spec["params"]:
                spec["params"]["auto_resize"] = False
            else:
                spec["params"].update(condition_area=56 * 56, vae_area=64 * 64)
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_imported_flow_workflow_validates_and_runs_on_the_tiny_build(name, pictures, tmp_path):
    model = EXPECTED[name][0]
    doc = _tiny_sizes(load(name, "ui").document)
    sets = {"model": model, **{p: pictures[spec["default"]] for p, spec in doc["params"].items() if spec["type"] == "path"}}
    graph = bind(load_workflow(doc), sets, base_dir=tmp_path)
    assert check_sources(graph) == []
    log = EventLog()
    result = Executor(Cache.default(tmp_path / "cache"), listeners=[log]).run(graph, out_dir=tmp_path / "out")
    assert set(log.ran()) == set(doc["nodes"])
    (written,) = result.written
    assert written.name == f"{ {'kontext-edit': 'kontext'}.get(name, name)}.png"
    with Image.open(written) as im:
        # Kontext: the reference's size cut to a multiple of 16; Qwen: EmptySD3LatentImage's 64x48
        assert im.size == {"kontext-edit": (64, 32), "qwen-edit-plus": (64, 48), "qwen-edit": (64, 48)}[name]
        assert len(set(im.get_flattened_data())) > 1  # a picture, not a flat fill


# --- one case per node type --------------------------------------------------------------------------


def kontext(**change):
    api = json.loads((DATA / "kontext-edit.api.json").read_text())
    for nid, spec in change.items():
        if spec is None:
            api.pop(nid, None)
        else:
            api[nid] = spec
    return api


def test_unet_loader_weight_dtype_fp8_is_an_approximation_to_bfloat16():
    api = kontext()
    api["37"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    strict = import_comfy(copy.deepcopy(api))
    first = strict.issues[0]  # then everything that needed the model
    assert (first.node_id, first.action) == ("37", "left out") and "no fp8" in first.why
    loose = import_comfy(api, partial=True)
    assert loose.document["nodes"]["model_37"]["params"] == {"model": "$model", "dtype": "bfloat16"}


@pytest.mark.parametrize("loader", ["DualCLIPLoader", "VAELoader"])
def test_text_encoder_and_vae_loaders_are_the_one_unets_folder_but_two_unets_are_ambiguous(loader):
    api = kontext()
    assert "'ae.safetensors'" in import_comfy(copy.deepcopy(api)).document["params"]["model"]["description"]
    api["50"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "other.safetensors", "weight_dtype": "default"}}
    got = import_comfy(api)
    nid = {"DualCLIPLoader": "38", "VAELoader": "39"}[loader]
    assert any(i.node_id == nid and "ambiguous" in i.why for i in got.issues)


def test_clip_loader_with_a_checkpoint_and_no_unet_is_still_listed():
    got = import_comfy({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "5": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion", "device": "default"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cup", "clip": ["5", 0]}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 5, "sampler_name": "euler", "scheduler": "normal",
                                                    "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0],
                                                    "latent_image": ["7", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    })
    assert ("5", "CLIPLoader") in {(i.node_id, i.class_type) for i in got.issues}
    assert "a separate file for one part is not supported" in next(i.why for i in got.issues if i.node_id == "5")


def test_reference_latents_chain_in_order_and_without_a_latent_pass_through():
    api = kontext(**{
        "60": {"class_type": "LoadImage", "inputs": {"image": "spoon.png"}},
        "61": {"class_type": "VAEEncode", "inputs": {"pixels": ["60", 0], "vae": ["39", 0]}},
        "62": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["177", 0], "latent": ["61", 0]}},
        "63": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["62", 0]}},
    })
    api["35"]["inputs"]["conditioning"] = ["63", 0]
    nodes = import_comfy(api).document["nodes"]
    assert nodes["references_31"]["inputs"] == {"ref1": "reference_image_41", "ref2": "reference_image_60"}
    assert nodes["reference_image_60"]["params"] == {"auto_resize": False}  # no FluxKontextImageScale on this one


def test_without_flux_kontext_image_scale_the_reference_keeps_its_size():
    api = kontext(**{"42": None})
    api["124"]["inputs"]["pixels"] = ["41", 0]
    assert import_comfy(api).document["nodes"]["reference_image_41"]["params"] == {"auto_resize": False}


def test_flux_kontext_image_scale_into_a_stable_diffusion_vae_is_listed():
    api = kontext(**{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}}})
    api["124"]["inputs"]["vae"] = ["4", 2]
    assert any(i.node_id == "124" and "FluxKontextImageScale" in i.why for i in import_comfy(api).issues)


def test_flux_guidance_absent_is_comfyuis_default_and_a_real_negative_turns_true_cfg_on():
    api = kontext(**{"35": None, "135": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["38", 0]}}})
    api["31"]["inputs"].update(positive=["177", 0], cfg=3.0)
    nodes = import_comfy(api).document["nodes"]
    assert nodes["denoise_31"]["params"] == {"steps": 3, "seed": 12, "guidance": 3.5, "true_cfg": 3.0}
    assert nodes["text_31"]["params"] == {"prompt": "make the cup bright red, keep the saucer and the spoon", "negative_prompt": "blurry"}


def test_conditioning_zero_out_with_cfg_above_one_is_an_approximation():
    api = kontext()
    api["31"]["inputs"]["cfg"] = 2.0
    strict = import_comfy(copy.deepcopy(api))
    assert strict.issues[0].node_id == "31" and "zeroed negative" in strict.issues[0].why
    loose = import_comfy(api, partial=True)
    assert loose.document["nodes"]["denoise_31"]["params"]["true_cfg"] == 1.0
    assert "negative_prompt" not in loose.document["nodes"]["text_31"]["params"]


def test_a_zeroed_positive_prompt_is_listed():
    api = kontext()
    api["31"]["inputs"]["positive"] = ["135", 0]
    assert any(i.node_id == "31" and "positive prompt was zeroed" in i.why for i in import_comfy(api).issues)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("sampler_name", "dpmpp_2m", "FlowMatchEuler"),
    ("scheduler", "karras", "own schedule"),
])
def test_flow_samplers_other_than_euler_simple_are_approximations(key, value, message):
    api = kontext()
    api["31"]["inputs"][key] = value
    assert any(message in i.why for i in import_comfy(copy.deepcopy(api)).issues)
    loose = import_comfy(api, partial=True)
    assert [i.action for i in loose.issues] == ["approximated"] and "denoise_31" in loose.document["nodes"]


def test_a_partial_denoise_without_a_noise_mask_on_a_flow_model_is_listed():
    api = kontext()
    api["31"]["inputs"]["denoise"] = 0.6
    assert any(i.node_id == "31" and "denoise 0.6" in i.why and "without a noise mask" in i.why for i in import_comfy(api).issues)


def _masked(api: dict, image: str) -> dict:
    """KSampler's latent: the picture's VAEEncode under SetLatentNoiseMask (LoadImage's mask), denoise 0.6."""
    api["70"] = {"class_type": "VAEEncode", "inputs": {"pixels": [image, 0], "vae": ["39", 0]}}
    api["71"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["70", 0], "mask": [image, 1]}}
    sampler = next(k for k, v in api.items() if v["class_type"] == "KSampler")
    api[sampler]["inputs"].update(latent_image=["71", 0], denoise=0.6)
    return api


def test_a_noise_mask_on_kontext_is_a_masked_edit_of_the_encoded_picture():
    api = _masked(kontext(), "41")
    api["124"]["inputs"]["pixels"] = ["41", 0]  # the reference without FluxKontextImageScale: the same picture, unscaled
    got = import_comfy(api)
    assert got.issues == []
    nodes = got.document["nodes"]
    assert nodes["denoise_31"]["params"] == {"steps": 3, "seed": 12, "guidance": 2.5, "true_cfg": 1.0, "strength": 0.6}
    # the source is the reference's own encode; the model needs no other picture
    assert nodes["denoise_31"]["inputs"] == {"model": "model_37", "cond": "text_31", "source": "reference_image_41", "mask": "alpha_41"}
    assert nodes["alpha_41"]["params"] == {"change": "transparent"}


def test_a_noise_mask_on_qwen_edit_repaints_the_picture_its_prompt_reads():
    api = json.loads((DATA / "qwen-edit.api.json").read_text())
    nodes = import_comfy(_masked(api, "78")).document["nodes"]
    assert nodes["denoise_3"]["inputs"] == {"model": "model_37", "cond": "text_3", "source": "reference_image_78", "mask": "alpha_78"}
    assert nodes["denoise_3"]["params"]["strength"] == 0.6
    assert nodes["text_3"]["inputs"] == {"model": "model_37", "references": "references_3"}
    assert [k for k, v in nodes.items() if v["type"] == "flow.reference"] == ["reference_image_78"]


@pytest.mark.slow
def test_an_imported_qwen_masked_edit_runs_on_the_inpaint_build(tmp_path):
    with Image.open(ASSETS / "coffee.png") as im, Image.open(ASSETS / "coffee-spoon-mask.png") as m:
        photo = im.convert("RGB").resize((64, 40), Image.Resampling.LANCZOS)
        spoon = m.convert("L").resize((64, 40), Image.Resampling.BILINEAR)
    photo.putalpha(spoon.point(lambda v: 0 if v >= 128 else 255))  # ComfyUI's mask: the transparent spoon
    photo.save(tmp_path / "hole.png")
    doc = _tiny_sizes(import_comfy(_masked(json.loads((DATA / "qwen-edit.api.json").read_text()), "78")).document)
    graph = bind(load_workflow(doc), {"model": "tiny-qwen-edit-inpaint", "image": str(tmp_path / "hole.png")}, base_dir=tmp_path)
    log = EventLog()
    result = Executor(Cache.default(tmp_path / "cache"), listeners=[log]).run(graph, out_dir=tmp_path / "out")
    assert "denoise_3" in log.ran()
    with Image.open(result.written[0]) as im:
        assert im.size == (96, 64)  # the source's VAE copy (64² area at 64:40, in multiples of 32)


def qwen(**change):
    api = json.loads((DATA / "qwen-edit-plus.api.json").read_text())
    api.update(change)
    return api


def test_text_encode_qwen_image_edit_reads_its_picture_at_one_megapixel():
    nodes = load("qwen-edit", "api").document["nodes"]
    assert nodes["reference_image_78"]["params"] == {"condition_area": 1024 * 1024, "vae_area": 1024 * 1024}
    assert nodes["references_3"]["inputs"] == {"ref1": "reference_image_78"}
    assert [k for k, v in nodes.items() if v["type"] == "flow.reference"] == ["reference_image_78"]  # once for both prompts


def test_qwen_pictures_without_a_vae_or_with_a_gap_are_listed():
    api = qwen()
    del api["111"]["inputs"]["vae"]
    assert any(i.node_id == "111" and "without a VAE" in i.why for i in import_comfy(api).issues)
    api = qwen()
    api["111"]["inputs"]["image3"] = api["111"]["inputs"].pop("image2")
    assert any(i.node_id == "111" and "gap" in i.why for i in import_comfy(api).issues)


def test_qwen_negative_reading_other_pictures_is_listed():
    api = qwen()
    del api["110"]["inputs"]["image2"]
    assert any(i.node_id == "3" and "other pictures" in i.why for i in import_comfy(api).issues)


def test_cfg_norm_at_one_passes_the_model_and_otherwise_is_an_approximation():
    api = qwen()
    api["75"]["inputs"]["strength"] = 0.8
    assert any(i.node_id == "75" and "strength 0.8" in i.why for i in import_comfy(copy.deepcopy(api)).issues)
    assert import_comfy(api, partial=True).document["nodes"]["denoise_3"]["inputs"]["model"] == "model_37"


def test_model_sampling_aura_flow_shift_is_an_approximation():
    api = qwen(**{"76": {"class_type": "ModelSamplingAuraFlow", "inputs": {"shift": 3.1, "model": ["37", 0]}}})
    api["75"]["inputs"]["model"] = ["76", 0]
    strict = import_comfy(copy.deepcopy(api))
    assert strict.issues[0].node_id == "76" and "fixed shift (3.1)" in strict.issues[0].why
    assert import_comfy(api, partial=True).document["nodes"]["denoise_3"]["params"]["steps"] == 3


def test_empty_sd3_latent_batch_above_one_is_listed():
    api = qwen()
    api["112"]["inputs"]["batch_size"] = 2
    assert any(i.node_id == "3" and "batch_size 2" in i.why for i in import_comfy(api).issues)


def test_image_scale_by_becomes_image_scale():
    api = json.loads((DATA / "img2img.api.json").read_text())
    api["11"] = {"class_type": "ImageScaleBy", "inputs": {"upscale_method": "bilinear", "scale_by": 0.5, "image": ["10", 0]}}
    got = import_comfy(api)
    assert got.issues == []
    assert got.document["nodes"]["scale_11"] == {"type": "image.scale", "version": "1.0.1", "inputs": {"image": "image_10"},
                                                 "params": {"factor": 0.5, "filter": "bilinear"}}


@pytest.mark.parametrize(("inputs", "params"), [
    ({"upscale_method": "area", "megapixels": 1.0}, {"megapixels": 1.0, "filter": "area"}),
    ({"upscale_method": "bilinear", "megapixels": 0.5, "resolution_steps": 16}, {"megapixels": 0.5, "filter": "bilinear", "multiple_of": 16}),
])
def test_image_scale_to_total_pixels_becomes_image_scale_by_megapixels(inputs, params):
    api = json.loads((DATA / "img2img.api.json").read_text())
    api["11"] = {"class_type": "ImageScaleToTotalPixels", "inputs": {**inputs, "image": ["10", 0]}}
    got = import_comfy(api)
    assert got.issues == []
    assert got.document["nodes"]["scale_11"]["params"] == params
