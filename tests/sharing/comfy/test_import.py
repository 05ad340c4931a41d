"""`editgraph import comfy`: the shipped ComfyUI workflows (tests/data/comfy, written for this
repo in both formats) import to one document per workflow, with ComfyUI's sampler settings
carried over as stated, validate, and run on the tiny models; unknown custom nodes fail the import
by name, or with --partial are left out and reported."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from editgraph.sharing.comfy import ComfyFormatError, import_comfy, read_comfy
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.sharing.preflight import check_sources

from tests.conftest import ASSETS

DATA = Path(__file__).resolve().parents[2] / "data" / "comfy"

# file -> (the tiny model to run it on, the sampler node, its type, the params ComfyUI's KSampler
# settings must become, the output's size (width, height) on the 64x40 test photo)
EXPECTED = {
    # KSampler steps 4, denoise 0.5: 8 whole-schedule steps, of which int(8 * 0.5) = 4 run
    "img2img": ("tiny-sd", "denoise_3", "denoise",
                {"steps": 8, "cfg": 7.5, "scheduler": "dpm++ 2m", "seed": 42, "strength": 0.5}, (64, 40)),
    "inpaint-model": ("tiny-sd-inpaint", "denoise_3", "denoise",
                      {"steps": 3, "cfg": 6.0, "scheduler": "euler_a", "seed": 7, "strength": 1.0}, (64, 40)),
    # steps 5, denoise 0.75: int(7 * 0.75) = 5 steps run
    "inpaint-noise-mask": ("tiny-sd", "denoise_3", "denoise",
                           {"steps": 7, "cfg": 8.0, "scheduler": "euler", "seed": 3, "strength": 0.75}, (64, 40)),
    "outpaint": ("tiny-sd-inpaint", "denoise_3", "denoise",
                 {"steps": 3, "cfg": 5.0, "scheduler": "ddim", "seed": 11, "strength": 1.0}, (96, 56)),
    "instruct": ("tiny-ip2p", "instruct_3", "instruct",
                 {"steps": 3, "cfg": 7.0, "scheduler": "euler", "seed": 5, "image_cfg": 1.0}, (64, 40)),
}
# where the inputs of each sampler come from (an inpainting model needs mask and pixels)
SAMPLER_INPUTS = {
    "img2img": {"model": "model_4", "cond": "text_3", "latent": "encode_3"},
    "inpaint-model": {"model": "model_4", "cond": "text_3", "latent": "encode_3", "mask": "grow_13", "image": "image_10"},
    "inpaint-noise-mask": {"model": "model_4", "cond": "text_3", "latent": "encode_3", "mask": "alpha_10", "image": "image_10"},
    "outpaint": {"model": "model_4", "cond": "text_3", "latent": "encode_3", "mask": "grow_13", "image": "pad_11.image"},
    "instruct": {"model": "model_4", "cond": "text_3", "latent": "encode_3"},
}
PAIRS = [*EXPECTED, "inpaint-noise-mask-group", "outpaint-subgraph"]


def load(name: str, form: str, **kw):
    return import_comfy(read_comfy(DATA / f"{name}.{form}.json"), name=name, **kw)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    """A 64x40 copy of the bundled photo, and one whose spoon is transparent (ComfyUI's LoadImage
    mask: 1 - alpha)."""
    folder = tmp_path_factory.mktemp("comfy-inputs")
    with Image.open(ASSETS / "coffee.png") as im, Image.open(ASSETS / "coffee-spoon-mask.png") as m:
        small = im.convert("RGB").resize((64, 40), Image.Resampling.LANCZOS)
        spoon = m.convert("L").resize((64, 40), Image.Resampling.BILINEAR)
    small.save(folder / "coffee.png")
    hole = small.copy()
    hole.putalpha(spoon.point(lambda v: 0 if v >= 128 else 255))
    hole.save(folder / "coffee-spoon-hole.png")
    return {"coffee.png": str(folder / "coffee.png"), "coffee-spoon-hole.png": str(folder / "coffee-spoon-hole.png")}


@pytest.mark.parametrize("name", PAIRS)
def test_api_and_ui_forms_import_to_the_same_document(name):
    api, ui = load(name, "api"), load(name, "ui")
    assert (api.source_format, ui.source_format) == ("api", "ui")
    assert api.issues == [] and ui.issues == []
    assert api.document == ui.document


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ksampler_settings_become_the_sampler_params(name):
    _, node_id, node_type, params, _ = EXPECTED[name]
    doc = load(name, "api").document
    node = doc["nodes"][node_id]
    assert node["type"] == node_type
    assert node["params"] == params
    assert node["inputs"] == SAMPLER_INPUTS[name]
    samplers = [n for n in doc["nodes"].values() if n["type"] in ("denoise", "instruct")]
    assert len(samplers) == 1
    # the checkpoint's file name is the model name the local registry resolves
    assert doc["params"]["model"]["default"] == {
        "img2img": "v1-5-pruned-emaonly", "inpaint-model": "sd-v1-5-inpainting", "inpaint-noise-mask": "v1-5-pruned-emaonly",
        "outpaint": "512-inpainting-ema", "instruct": "instruct-pix2pix-00-22000",
    }[name]


def _bind(doc: dict, photos: dict[str, str], model: str, tmp_path: Path):
    sets = {"model": model, "image": photos[doc["params"]["image"]["default"]]}
    return bind(load_workflow(doc), sets, base_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_imported_workflow_validates_and_runs_on_the_tiny_models(name, photos, tmp_path):
    model, node_id, _, _, size = EXPECTED[name]
    doc = load(name, "ui").document
    graph = _bind(doc, photos, model, tmp_path)
    assert check_sources(graph) == []
    log = EventLog()
    result = Executor(Cache.default(tmp_path / "cache"), listeners=[log]).run(graph, out_dir=tmp_path / "out")
    assert set(log.ran()) == set(doc["nodes"])
    (written,) = result.written
    assert written.name == doc["nodes"]["save_9"]["params"]["path"]  # SaveImage's filename_prefix
    with Image.open(written) as im:
        assert im.size == size
    if name == "inpaint-noise-mask":
        # ImageCompositeMasked through LoadImage's mask: the opaque (kept) pixels are the photo's
        with Image.open(photos["coffee-spoon-hole.png"]) as src:
            rgba = np.asarray(src)
        kept = rgba[..., 3] == 255
        assert np.array_equal(np.asarray(Image.open(written).convert("RGB"))[kept], rgba[..., :3][kept])


def test_a_randomized_seed_is_drawn_at_run_time_and_recorded(photos, tmp_path):
    ui = json.loads((DATA / "img2img.ui.json").read_text())
    for node in ui["nodes"]:
        if node["type"] == "PrimitiveNode":
            node["widgets_values"][1] = "randomize"
    doc = import_comfy(ui, name="img2img").document
    assert doc["nodes"]["denoise_3"]["params"]["seed"] == "random"
    graph = _bind(doc, photos, "tiny-sd", tmp_path)
    assert list(graph.seeds) == ["denoise_3.seed"] and isinstance(graph.seeds["denoise_3.seed"], int)


def test_the_prompt_chunk_of_a_comfyui_png_imports_like_the_api_file(tmp_path):
    info = PngInfo()
    info.add_text("prompt", (DATA / "img2img.api.json").read_text())
    info.add_text("workflow", (DATA / "img2img.ui.json").read_text())
    Image.new("RGB", (8, 8)).save(tmp_path / "ComfyUI_00001_.png", pnginfo=info)
    got = import_comfy(read_comfy(tmp_path / "ComfyUI_00001_.png"), name="img2img")
    assert got.source_format == "api"
    assert got.document == load("img2img", "api").document


def test_an_unknown_custom_node_fails_the_import_naming_it(cli, tmp_path):
    code, out, err = cli("import", "comfy", DATA / "custom-node.api.json", "-o", tmp_path / "x.json")
    assert code == 3
    assert "UltimateSDUpscale" in err and "'30'" in err and "unknown node type" in err
    assert "WAS_Image_Sharpen" in err and "--partial" in err
    assert not (tmp_path / "x.json").exists()


def test_partial_imports_the_rest_and_says_what_was_left_out(cli, tmp_path):
    code, out, err = cli("import", "comfy", DATA / "custom-node.api.json", "-o", tmp_path / "x.json", "--partial")
    assert code == 0
    assert "bypassed: node 30 (UltimateSDUpscale)" in err
    assert "bypassed: node 31 (WAS_Image_Sharpen)" in err
    assert "2 ComfyUI nodes left out" in err
    doc = json.loads((tmp_path / "x.json").read_text())
    # the upscaler passed the decoded picture through: everything else of img2img is there
    assert doc["nodes"]["save_9"]["inputs"] == {"image": "decode_8"}
    assert doc["nodes"]["save_32"]["inputs"] == {"image": "decode_8"}
    assert doc["nodes"]["denoise_3"] == load("img2img", "api").document["nodes"]["denoise_3"]


def test_partial_leaves_out_what_nothing_can_stand_in_for():
    api = json.loads((DATA / "img2img.api.json").read_text())
    api["8"] = {"class_type": "MyLatentToImage", "inputs": {"samples": ["3", 0], "strength": 2}}
    got = import_comfy(api, name="x", partial=True)
    assert [(i.node_id, i.class_type, i.action) for i in got.issues] == [("8", "MyLatentToImage", "left out"), ("9", "SaveImage", "left out")]
    assert "save_9" not in got.document["nodes"]


def test_the_import_command_writes_a_document_that_runs(cli, tmp_path, photos):
    code, out, err = cli("import", "comfy", DATA / "img2img.ui.json")
    assert code == 0
    doc = json.loads(out)
    assert doc == load("img2img", "api").document
    assert "ComfyUI ui format" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["3"]["inputs"].update(scheduler="karras"), "scheduler 'karras' has no editgraph equivalent"),
        (lambda p: p["3"]["inputs"].update(sampler_name="dpmpp_sde"), "sampler 'dpmpp_sde' has no editgraph equivalent"),
        (lambda p: p["11"]["inputs"].update(upscale_method="lanczos"), "upscale_method 'lanczos' becomes bicubic"),
    ],
)
def test_settings_without_an_equivalent_fail_or_are_approximated_with_partial(change, message):
    api = json.loads((DATA / "img2img.api.json").read_text())
    change(api)
    strict = import_comfy(copy.deepcopy(api), name="x")
    assert any(message in i.why and i.action == "left out" for i in strict.issues)
    loose = import_comfy(api, name="x", partial=True)
    assert [i.action for i in loose.issues] == ["approximated"] and message in loose.issues[0].why
    assert "denoise_3" in loose.document["nodes"]


def test_not_a_comfyui_file_says_what_was_expected(tmp_path):
    with pytest.raises(ComfyFormatError, match="UI format .* or the API format"):
        import_comfy({"format": "editgraph/1", "nodes": {}})
    broken = json.loads((DATA / "img2img.ui.json").read_text())
    broken["links"] = broken["links"][1:]
    with pytest.raises(ComfyFormatError, match="link 1 is referenced but not defined"):
        import_comfy(broken)
    with pytest.raises(ComfyFormatError, match="malformed ComfyUI workflow"):
        import_comfy({"3": {"class_type": "VAEDecode", "inputs": ["not", "a", "dict"]},
                      "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}}})
