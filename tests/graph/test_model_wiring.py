"""Validation refuses a model wired into a node that cannot run its kind, before anything loads:
SD models into the flow.* stages and flow-matching models into SD's denoise, also when LoRA nodes
(model.lora, which wrap the model they take) stand between model.load and the stage."""

from __future__ import annotations

import sys

import pytest

from editgraph.graph.document import Workflow
from editgraph.graph.validate import bind
from editgraph.sharing.preflight import check_sources

FLOW = ("text", "denoise", "pixels")


def _doc(model: str, loras: int, stages: str, lora_file: str) -> dict:
    """model.load -> model.lora x `loras` -> the flow stages ("flow") or SD's ("sd")."""
    nodes: dict = {"model": {"type": "model.load", "params": {"model": model}}}
    feed = "model"
    for i in range(loras):
        nodes[f"lora{i}"] = {"type": "model.lora", "inputs": {"model": feed}, "params": {"lora": lora_file, "scale": 0.5}}
        feed = f"lora{i}"
    if stages == "flow":
        nodes |= {
            "text": {"type": "flow.prompt", "inputs": {"model": feed}, "params": {"prompt": "a red cup"}},
            "denoise": {"type": "flow.denoise", "inputs": {"model": feed, "cond": "text"}, "params": {"width": 64, "height": 64}},
            "pixels": {"type": "flow.decode", "inputs": {"model": feed, "latent": "denoise"}},
        }
    else:
        nodes |= {
            "text": {"type": "prompt.encode", "inputs": {"model": feed}, "params": {"prompt": "a red cup"}},
            "empty": {"type": "latent.empty", "inputs": {"model": feed}, "params": {"width": 64, "height": 64}},
            "denoise": {"type": "denoise", "inputs": {"model": feed, "cond": "text", "latent": "empty"}},
        }
    return {"format": "editgraph/1", "name": "wiring", "nodes": nodes}


def _wiring_issues(doc: dict, tmp_path) -> dict[str, str]:
    """{JSON path: message} of the model-wiring issues validation finds (the LoRA file's own check
    is not what these tests are about)."""
    graph = bind(Workflow.model_validate(doc), {}, base_dir=tmp_path)
    return {i.path: i.message for i in check_sources(graph) if i.path.endswith(".inputs.model")}


@pytest.fixture
def lora_file(tmp_path) -> str:
    path = tmp_path / "style.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # validation reads nothing of it here
    return str(path)


@pytest.mark.parametrize("loras", [0, 1, 2], ids=["direct", "through-1-lora", "through-2-loras"])
def test_an_sd_model_into_the_flow_stages_is_refused_at_validate(loras, tmp_path, lora_file):
    issues = _wiring_issues(_doc("tiny-sd", loras, "flow", lora_file), tmp_path)
    assert sorted(issues) == sorted(f"nodes.{n}.inputs.model" for n in FLOW)
    through = "".join(f" through 'lora{i}' (model.lora)" for i in range(loras))  # in the order the model flows
    for node, message in issues.items():
        assert f"cannot run model 'tiny-sd' from 'model'{through}, an ordinary (4-channel) model" in message, node
        assert "it takes flow-matching edit (Flux 2, Flux Kontext, Qwen-Image-Edit) models" in message


@pytest.mark.parametrize("loras", [0, 1], ids=["direct", "through-1-lora"])
def test_a_flow_model_into_sd_denoise_is_refused_at_validate(loras, tmp_path, lora_file):
    issues = _wiring_issues(_doc("tiny-kontext", loras, "sd", lora_file), tmp_path)
    assert list(issues) == ["nodes.denoise.inputs.model"]
    assert "cannot run model 'tiny-kontext' from 'model'" in issues["nodes.denoise.inputs.model"]
    assert "a flow-matching edit model (Flux 2, Flux Kontext, Qwen-Image-Edit): use the flow.* nodes" in issues["nodes.denoise.inputs.model"]


@pytest.mark.parametrize("model", ["tiny-flux2-klein", "tiny-kontext-inpaint", "tiny-qwen-edit-plus"])
def test_flow_models_through_loras_into_the_flow_stages_validate(model, tmp_path, lora_file):
    assert _wiring_issues(_doc(model, 2, "flow", lora_file), tmp_path) == {}


def test_a_flow_folder_is_told_by_its_model_index_without_torch(tmp_path, cli):
    """A diffusers folder (not a built-in name) whose model_index.json names a flow pipeline is a
    flow model; `editgraph validate` says so without importing torch."""
    import json

    folder = tmp_path / "my-kontext"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline"}))
    doc = _doc(str(folder), 1, "sd", "style.safetensors")
    (tmp_path / "style.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    before = "torch" in sys.modules
    code, out, err = cli("validate", tmp_path / "wf.json")
    assert code != 0
    assert "nodes.denoise.inputs.model" in out + err
    assert "denoise cannot run model 'my-kontext' from 'model' through 'lora0' (model.lora)" in out + err
    if not before:  # in a process that has not imported torch yet, validation does not either
        assert "torch" not in sys.modules
