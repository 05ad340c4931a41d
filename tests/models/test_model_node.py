"""The model.load node in a workflow: keyed by the model's file contents, cached across runs,
paths relative to the workflow file, and clear errors."""

from __future__ import annotations

import os
import shutil

import pytest

from editgraph.errors import EditgraphError
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.models.handle import DiffusionModel
from editgraph.models.loader import model_hash
from editgraph.nodes.registry import BUILTIN_MODULES, load_builtin_nodes


def _run(tmp_path, params, log=None):
    doc = {"format": "editgraph/1", "nodes": {"m": {"type": "model.load", "params": params}}}
    graph = bind(load_workflow(doc), {}, base_dir=tmp_path)
    return Executor(Cache.default(tmp_path / "cache"), listeners=[log] if log is not None else []).run(graph)


def test_model_load_is_registered_with_one_model_output():
    assert "editgraph.nodes.builtin.model" in BUILTIN_MODULES
    cls = load_builtin_nodes()["model.load"]
    assert cls.inputs == {} and list(cls.outputs) == ["model"] and cls.outputs["model"].name == "Model"
    assert cls.deterministic and (cls.__doc__ or "").strip()


def test_a_named_model_loads_and_is_keyed_by_its_files(tmp_path):
    log = EventLog()
    result = _run(tmp_path, {"model": "tiny-sd"}, log)
    model = result.value("m")
    assert isinstance(model, DiffusionModel) and model.name == "tiny-sd" and model.kind == "base"
    assert result.fingerprints[("m", "model")] == f"model:{model.content_hash}"
    assert log.ran() == ["m"]
    # A second run with the same cache finds the key: nothing loads.
    again = EventLog()
    second = _run(tmp_path, {"model": "tiny-sd"}, again)
    assert again.cached() == ["m"] and again.ran() == []
    assert second.records["m"].key == result.records["m"].key


def test_a_path_is_relative_to_the_workflow_and_edits_change_the_key(tmp_path, tiny_dirs):
    target = tmp_path / "models" / "mine"
    shutil.copytree(tiny_dirs["tiny-sd-inpaint"], target)
    first = _run(tmp_path, {"model": "models/mine"})
    model = first.value("m")
    assert model.path == str(target) and model.kind == "inpaint"
    assert model.content_hash == model_hash(tiny_dirs["tiny-sd-inpaint"])

    weights = target / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    log = EventLog()
    second = _run(tmp_path, {"model": "models/mine"}, log)
    assert log.ran() == ["m"]
    assert second.records["m"].key != first.records["m"].key
    assert second.fingerprints[("m", "model")] != first.fingerprints[("m", "model")]


def test_half_precision_gets_its_own_fingerprint(tmp_path):
    full = _run(tmp_path, {"model": "tiny-sd"})
    half = _run(tmp_path, {"model": "tiny-sd", "dtype": "float16"})
    content_hash = full.value("m").content_hash
    assert half.fingerprints[("m", "model")] == f"model:{content_hash}:float16"
    assert half.value("m").unet.dtype.__repr__() == "torch.float16"


def test_a_missing_model_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(EditgraphError, match=f"model '{tmp_path}/models/sd15' not found: nothing at {tmp_path}/models/sd15"):
        _run(tmp_path, {"model": "models/sd15"})
    with pytest.raises(EditgraphError, match="dtype"):
        _run(tmp_path, {"model": "tiny-sd", "dtype": "int8"})
