"""Big models' components go as soon as no node left in the run needs them (opt-in), and a run
whose prompt encode comes from the cache never reads the text encoder."""

from __future__ import annotations

import pytest

from editgraph import workflows
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog, NodeStarted
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.models import cache as model_cache
from editgraph.models import flow_loader
from editgraph.models.loader import load_model

SETS = {"steps": "1", "width": "96"}


def _edit_graph(**sets):
    return bind(load_workflow(workflows.find("edit")), {**SETS, **sets}, base_dir=workflows.HERE)


@pytest.mark.slow
def test_components_are_released_after_their_last_use(tmp_path):
    model_cache.release_all()
    held: dict[str, list[str]] = {}

    def watch(event):  # what is held as each node starts, i.e. after the previous one's release
        if isinstance(event, NodeStarted):
            held[event.node_id] = load_model("tiny-flux2-klein").loaded_components()

    log = EventLog()
    Executor(Cache.default(tmp_path / "cache"), listeners=[log, watch], free_components=True).run(_edit_graph())
    # the references are encoded first (VAE), the prompt next (text encoder), then the denoise
    # (transformer) and the decode (VAE again): each is dropped once nothing later needs it
    order = log.ran()
    assert order.index("ref2") < order.index("text") < order.index("denoise") < order.index("pixels") < order.index("save")
    assert held["text"] == ["vae"]  # the references' VAE stays: the decode will need it
    assert held["denoise"] == ["vae"]  # the text encoder went with the prompt encode
    assert held["pixels"] == ["vae"]  # the transformer went with the denoise
    assert held["save"] == []


@pytest.mark.slow
def test_a_run_with_its_prompt_encode_cached_never_reads_the_text_encoder(tmp_path):
    Executor(Cache.default(tmp_path / "cache")).run(_edit_graph(seed="1"))
    model_cache.release_all()  # as in a new process: no model held, a fresh memory tier, the same disk
    before = len(flow_loader.LOADS)
    log = EventLog()
    # a new seed: the encodes come from the disk tier, only the denoise and the decode run
    Executor(Cache.default(tmp_path / "cache"), listeners=[log]).run(_edit_graph(seed="2"))
    assert sorted(log.ran()) == ["denoise", "model", "pixels", "save"]
    assert {comp for _, comp in flow_loader.LOADS[before:]} == {"transformer", "vae"}


def test_without_the_option_nothing_is_released(tmp_path):
    # the default keeps components between runs: a batch's rows would otherwise re-read weights
    assert Executor(Cache.default(tmp_path / "c")).free_components is False
