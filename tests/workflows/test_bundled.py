"""Every bundled workflow is a test case: it validates, pins each node at its current version,
describes its params, runs on the tiny models, keeps what it promises to keep, and is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from editgraph import workflows
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.sharing.preflight import check_sources
from editgraph.nodes.registry import load_builtin_nodes
from editgraph.sharing import provenance

# Small, fast settings per workflow, and the output size those settings must give (width, height).
FAST = {
    "inpaint": ({"steps": "2", "working_size": "64"}, (600, 400)),
    "object-removal": ({}, (600, 400)),  # no model: PatchMatch
    "object-removal-refine": ({"model": "tiny-sd", "steps": "4", "working_size": "64"}, (600, 400)),
    "product-variant": ({"steps": "2", "working_size": "64"}, (600, 400)),
    "img2img": ({"steps": "2", "width": "64"}, (64, 40)),
    "outpaint": ({"steps": "2", "width": "64", "overlap": "4"}, (64, 80)),
    "instruct": ({"steps": "2", "width": "64"}, (64, 40)),
    "refine": ({"steps": "4", "width": "64"}, (128, 80)),  # 4 x strength 0.3 leaves one step
    "background-replace": ({"steps": "2"}, (600, 400)),
    "look": ({}, (600, 400)),
    "style-transfer-sd": ({"steps": "2", "width": "64"}, (64, 40)),  # SD + IP-Adapter (tests/workflows/test_ip_adapter_workflow.py)
    # the flow-matching edit families (tests/workflows/test_flow_workflows.py has their batch and cache tests)
    "edit": ({"steps": "2", "width": "96"}, (96, 64)),
    "style-transfer": ({"steps": "2", "width": "96"}, (96, 64)),
    "product-swap": (
        {"steps": "2", "working_size": "128", "out_width": "64"},
        {"product-1x1.png": (64, 64), "product-4x5.png": (64, 80), "product-9x16.png": (64, 128)},
    ),
}
# Where a workflow promises to leave the input untouched: (node whose mask is 0 there, node holding the input).
KEEPS = {
    "inpaint": ("soft", "photo"),
    "object-removal": ("fill.mask", "photo"),
    "object-removal-refine": ("soft", "photo"),
    "product-variant": ("soft", "photo"),
    "background-replace": ("soft", "photo"),
    "outpaint": ("canvas.mask", "canvas.image"),
}


def test_the_library_is_what_the_table_covers():
    assert sorted(workflows.names()) == sorted(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
def test_validates_pins_current_versions_and_describes_params(name):
    wf = load_workflow(workflows.find(name))
    registry = load_builtin_nodes()
    assert wf.description
    for node_id, spec in wf.nodes.items():
        assert spec.version == registry[spec.type].version, f"{name}: node {node_id} pins {spec.type} {spec.version}"
    for pname, spec in wf.params.items():
        assert spec.description, f"{name}: param {pname} has no description"
    used = {v[1:] for n in wf.nodes.values() for v in n.params.values() if isinstance(v, str) and v.startswith("$")}
    assert used == set(wf.params), f"{name}: declared but unused params {set(wf.params) - used}"
    graph = bind(wf, FAST[name][0], base_dir=workflows.HERE)  # a required param (a real model) gets its test value
    # what `editgraph validate NAME` adds: input files exist, models resolve by name (not as files)
    assert check_sources(graph) == [], name


def _run(name, out_dir, cache_dir, **extra):
    sets, _ = FAST[name]
    graph = bind(load_workflow(workflows.find(name)), {**sets, **extra}, base_dir=workflows.HERE)
    log = EventLog()
    result = Executor(Cache.default(cache_dir), listeners=[log]).run(graph, out_dir=out_dir, stamp=provenance.stamp)
    return graph, result, log


# Every bundled workflow that takes an ordinary SD 1.x model runs, unchanged, with an inpainting
# (9-channel) one too (issue 10: they failed after the model loaded).
def _sd_model(name: str) -> bool:
    """Whether the workflow runs an SD 1.x model (tiny-sd) as bundled, or with FAST's settings."""
    spec = load_workflow(workflows.find(name)).params.get("model")
    return spec is not None and FAST[name][0].get("model", spec.default) == "tiny-sd"


INPAINT_MODEL = sorted(n for n in FAST if _sd_model(n))
RUNS = [(n, {}) for n in sorted(FAST)] + [(n, {"model": "tiny-sd-inpaint"}) for n in INPAINT_MODEL]


@pytest.mark.slow
@pytest.mark.parametrize("name,extra", RUNS, ids=[n + ("-" + e["model"] if e else "") for n, e in RUNS])
def test_runs_on_tiny_models_keeps_its_promises_and_is_deterministic(name, extra, tmp_path):
    graph, result, log = _run(name, tmp_path / "a", tmp_path / "cache-a", **extra)
    assert len(log.ran()) == len(graph.nodes)
    sizes = FAST[name][1] if isinstance(FAST[name][1], dict) else None
    if sizes is not None:  # several outputs (product-swap: one per aspect ratio)
        assert sorted(p.name for p in result.written) == sorted(sizes)
        for path in result.written:
            with PILImage.open(path) as img:
                assert img.size == sizes[path.name], path.name
    written = sorted(result.written)[0]
    with PILImage.open(written) as img:
        assert sizes is not None or img.size == FAST[name][1]
        out = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)[None]
    if name in KEEPS:
        mask_ref, keep_ref = KEEPS[name]
        mask = result.value(*mask_ref.split(".")) if "." in mask_ref else result.value(mask_ref)
        kept = result.value(*keep_ref.split(".")) if "." in keep_ref else result.value(keep_ref)
        untouched = (mask == 0).expand_as(kept)[0]
        assert untouched.float().mean() > 0.2  # the promise covers a real part of the picture
        original = (kept[0] * 255).round().to(torch.uint8)
        assert torch.equal(out[0][untouched], original[untouched])
    info = provenance.read(written.read_bytes())
    assert info["workflow"]["name"] == name
    # A second run in a fresh cache (every node runs again) writes byte-identical pixels.
    _, again, _ = _run(name, tmp_path / "b", tmp_path / "cache-b", **extra)
    for first, second in zip(sorted(result.written), sorted(again.written), strict=True):
        a, b = (PILImage.open(p) for p in (first, second))
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name,model,node", [("inpaint", "tiny-ip2p", "denoise"), ("instruct", "tiny-sd", "edit")])
def test_validate_refuses_a_model_kind_the_node_cannot_run(name, model, node):
    wf = load_workflow(workflows.find(name))
    assert node in wf.nodes and wf.nodes[node].inputs["model"] == "model"
    graph = bind(wf, {"model": model}, base_dir=workflows.HERE)
    issues = [(i.path, i.message) for i in check_sources(graph) if i.path.endswith("inputs.model")]
    assert len(issues) == 1 and issues[0][0] == f"nodes.{node}.inputs.model"
    assert f"cannot run model {model!r} from 'model'" in issues[0][1]
