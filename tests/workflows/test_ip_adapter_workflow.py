"""style-transfer-sd (SD + IP-Adapter) through the executor: each stage is cached on its own, the
style reference is encoded once per picture (keyed by its content), `scale` reruns only the
denoise and what follows, and a run whose reference encode is cached never reads the image encoder."""

from __future__ import annotations

import shutil

import pytest

from editgraph import workflows
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.models import cache as model_cache
from editgraph.models import ip_adapter
from editgraph.sharing import provenance

AFTER_DENOISE = {"denoise", "pixels", "save"}


def _run(tmp_path, cache: Cache, **sets):
    values = {"steps": "2", "width": "64", **sets}
    graph = bind(load_workflow(workflows.find("style-transfer-sd")), values, base_dir=workflows.HERE)
    log = EventLog()
    result = Executor(cache, listeners=[log]).run(graph, out_dir=tmp_path / "out", stamp=provenance.stamp)
    return set(log.ran()), result


@pytest.mark.slow
def test_stages_cache_apart_and_a_cached_encode_never_loads_the_image_encoder(tmp_path):
    cache = Cache.default(tmp_path / "cache")
    first, result = _run(tmp_path, cache)
    assert {"style", "text", "latent", "denoise"} <= first
    plain = result.value("denoise").samples
    # the saved picture names the adapter's files next to the model's
    info = provenance.read(result.written[0].read_bytes())
    adapter = {(m["node"], m["name"], m["content_hash"]) for m in info["models"]}
    assert ("adapter", "tiny-ip-adapter", result.value("adapter").content_hash) in adapter

    # the scale enters the denoise's key only
    ran, result = _run(tmp_path, cache, scale="0.2")
    assert ran == AFTER_DENOISE
    assert not (result.value("denoise").samples == plain).all()

    # the same style picture under another name: its bytes are the key, nothing reruns
    copy = tmp_path / "same-style.png"
    shutil.copy(workflows.HERE / "assets" / "chelsea.png", copy)
    ran, _ = _run(tmp_path, cache, style=str(copy))
    assert ran <= {"look"}  # at most the file read; never the encode

    # another style picture: its encode reruns, the prompt and photo encodes do not
    ran, _ = _run(tmp_path, cache, style=str(workflows.HERE / "assets" / "coffee.png"))
    assert "style" in ran and AFTER_DENOISE <= ran and not ran & {"text", "latent"}

    # a fresh process (models dropped), everything cached but the denoise: the adapter weights are
    # read, the CLIP image encoder is not
    model_cache.release_all()
    ip_adapter.LOADS.clear()
    ran, _ = _run(tmp_path, Cache.default(tmp_path / "cache"), seed="9")
    assert ran == AFTER_DENOISE | {"model", "adapter"}  # handles live in memory only: they reopen
    assert [part for _, part in ip_adapter.LOADS] == ["weights"]


@pytest.mark.slow
def test_the_workflow_runs_on_sdxl_with_the_sdxl_adapter(tmp_path):
    ran, result = _run(
        tmp_path, Cache.default(tmp_path / "cache"), model="tiny-sdxl", weight="sdxl_models/ip-adapter_sdxl.safetensors"
    )
    assert {"style", "denoise", "save"} <= ran
    assert result.value("style").embeds.shape == (1, 48)  # the SDXL adapter's own image encoder
    assert tuple(result.value("pixels").shape) == (1, 3, 40, 64)
