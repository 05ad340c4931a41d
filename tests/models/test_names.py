"""Model references that travel: names resolve per machine; a pinned hash that differs is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from editgraph.executor.cache import Cache
from editgraph.executor.run import Executor
from editgraph.errors import WorkflowInvalid
from editgraph.settings import Settings
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.models.errors import ModelError
from editgraph.models.loader import ensure_tiny, model_hash, resolve


@pytest.fixture
def shop_model(tmp_path, monkeypatch):
    """A copy of tiny-sd registered on this 'machine' as "shop-sd"."""
    src = ensure_tiny("tiny-sd")
    shelf = tmp_path / "models"
    shutil.copytree(src, shelf / "shop-sd")
    monkeypatch.setenv("EDITGRAPH_MODELS", str(shelf))
    monkeypatch.setenv("EDITGRAPH_MODELS_FILE", str(tmp_path / "none.json"))
    return shelf / "shop-sd"


def workflow(tmp_path, pinned: str = ""):
    params = {"model": "shop-sd", **({"hash": pinned} if pinned else {})}
    return load_workflow({"nodes": {"m": {"type": "model.load", "params": params}}}), tmp_path / "elsewhere"


def test_names_resolve_through_the_folder_registry_and_the_json_file(tmp_path, shop_model, monkeypatch):
    assert resolve(tmp_path / "wf" / "shop-sd") == shop_model
    (tmp_path / "models.json").write_text(json.dumps({"house": "models/shop-sd"}))
    monkeypatch.setenv("EDITGRAPH_MODELS_FILE", str(tmp_path / "models.json"))
    assert resolve("house") == shop_model.resolve()


def test_unknown_name_lists_what_is_registered(tmp_path, shop_model):
    with pytest.raises(ModelError) as info:
        resolve(tmp_path / "wf" / "sd15")
    msg = str(info.value)
    assert "not found" in msg and "no model registered as 'sd15'" in msg and "registered here: shop-sd" in msg and "EDITGRAPH_MODELS" in msg


def test_pinned_hash_that_differs_names_both_and_can_be_overridden(tmp_path, shop_model, monkeypatch):
    right = model_hash(shop_model)
    wf, base = workflow(tmp_path, pinned=right[:16])
    Executor(Cache.default(tmp_path / "c")).run(bind(wf, base_dir=base))  # matches: runs
    wrong = "0123456789abcdef" * 4
    wf, base = workflow(tmp_path, pinned=wrong)
    with pytest.raises(WorkflowInvalid) as info:  # refused before any node runs
        Executor(Cache.default(tmp_path / "c")).run(bind(wf, base_dir=base))
    msg = str(info.value)
    assert "node 'm' (model.load)" in msg and f"expected content hash {wrong}, found {right}" in msg
    allow = Settings.from_env().with_options(allow_model_mismatch=True)
    result = Executor(Cache.default(tmp_path / "c"), settings=allow).run(bind(wf, base_dir=base))
    assert result.fingerprints[("m", "model")] == f"model:{right}"
