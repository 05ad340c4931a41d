"""The shipped ComfyUI workflow with LoRAs (tests/data/comfy/lora-img2img.*.json: LoraLoader at
model 0.8 / clip 0.6, then LoraLoaderModelOnly at 0.5) imports from both forms to one document,
and runs on the tiny SD model with tiny LoRAs found by name in the model registry."""

from __future__ import annotations

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


def load(form: str):
    return import_comfy(read_comfy(DATA / f"lora-img2img.{form}.json"), name="lora-img2img")


def test_api_and_ui_forms_import_to_the_same_document():
    api, ui = load("api"), load("ui")
    assert api.issues == [] and ui.issues == []
    assert api.document == ui.document


def test_the_loras_become_model_lora_nodes_wired_as_comfyui_wires_them():
    doc = load("api").document
    nodes = doc["nodes"]
    loras = {n: (s["inputs"]["model"], s["params"]) for n, s in nodes.items() if s["type"] == "model.lora"}
    assert loras == {
        "lora_30": ("model_4", {"lora": "$lora", "scale": 0.8}),  # LoraLoader's MODEL side
        "lora_clip_30": ("model_4", {"lora": "$lora", "scale": 0.6}),  # ... and its CLIP side
        "lora_31": ("lora_30", {"lora": "$lora_2", "scale": 0.5}),  # LoraLoaderModelOnly after it
    }
    assert nodes["text_3"]["inputs"] == {"model": "lora_clip_30"}
    assert nodes["denoise_3"]["inputs"] == {"model": "lora_31", "cond": "text_3", "latent": "encode_3"}
    # KSampler steps 4, denoise 0.5: 8 whole-schedule steps, of which int(8 * 0.5) = 4 run
    assert nodes["denoise_3"]["params"] == {"steps": 8, "cfg": 7.5, "scheduler": "dpm++ 2m", "seed": 42, "strength": 0.5}
    assert {p: doc["params"][p]["default"] for p in ("lora", "lora_2")} == {"lora": "oil-paint", "lora_2": "detail"}


@pytest.mark.slow
def test_it_runs_on_the_tiny_model_with_loras_found_by_name(tmp_path, monkeypatch):
    from editgraph.models.loader import load_model
    from editgraph.testing.tinylora import write_diffusers_lora, write_kohya_sd_lora

    folder = tmp_path / "loras"
    model = load_model("tiny-sd")
    write_kohya_sd_lora(model, folder / "oil-paint.safetensors", seed=11)
    write_diffusers_lora(model, "unet", folder / "detail.safetensors", seed=12)
    monkeypatch.setenv("EDITGRAPH_MODELS", str(folder))
    with Image.open(ASSETS / "coffee.png") as im:
        im.convert("RGB").resize((64, 40), Image.Resampling.LANCZOS).save(tmp_path / "coffee.png")
    doc = load("ui").document
    graph = bind(load_workflow(doc), {"model": "tiny-sd", "image": str(tmp_path / "coffee.png")}, base_dir=tmp_path)
    assert check_sources(graph) == []
    log = EventLog()
    result = Executor(Cache.default(tmp_path / "cache"), listeners=[log]).run(graph, out_dir=tmp_path / "out")
    assert set(log.ran()) == set(doc["nodes"])
    (written,) = result.written
    assert written.name == "lora-img2img.png"
    with Image.open(written) as im:
        assert im.size == (64, 40)
