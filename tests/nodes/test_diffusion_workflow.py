"""A real edit through the executor: load -> model.load -> prompt.encode -> vae.encode -> denoise ->
vae.decode -> image.resize -> image.save, asserting which nodes ran, across runs and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from editgraph.sharing import provenance
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog, NodeProgress
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind

from .diffusion_support import tiny_path

REPO = Path(__file__).resolve().parents[2]


def edit_workflow(model_dir: Path) -> dict:
    return {
        "format": "editgraph/1",
        "name": "img2img",
        "params": {
            "image": {"type": "path"},
            "prompt": {"type": "string", "default": "a red cup on a wooden table"},
            "seed": {"type": "int", "default": 7},
            "out_width": {"type": "int", "default": 96},
        },
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "small": {"type": "image.resize", "inputs": {"image": "photo.image"}, "params": {"width": 96, "height": 64}},
            "model": {"type": "model.load", "params": {"model": str(model_dir)}},
            "text": {"type": "prompt.encode", "inputs": {"model": "model"}, "params": {"prompt": "$prompt"}},
            "latent": {"type": "vae.encode", "inputs": {"model": "model", "image": "small"}},
            "denoise": {
                "type": "denoise",
                "inputs": {"model": "model", "cond": "text", "latent": "latent"},
                "params": {"steps": 4, "cfg": 6.0, "strength": 0.6, "seed": "$seed", "scheduler": "euler_a"},
            },
            "pixels": {"type": "vae.decode", "inputs": {"model": "model", "latent": "denoise"}},
            "after": {"type": "image.resize", "inputs": {"image": "pixels"}, "params": {"width": "$out_width"}},
            "save": {"type": "image.save", "inputs": {"image": "after"}, "params": {"path": "edit.png"}},
        },
    }


def _run(doc, values, cache, out_dir, log=None):
    graph = bind(load_workflow(doc), values, base_dir=REPO)
    listeners = [log] if log is not None else []
    return Executor(cache, listeners=listeners).run(graph, out_dir=out_dir, stamp=provenance.stamp)


def _cli(wf: Path, sets: list[str], cache_dir: Path, out: Path, report: Path) -> dict:
    cmd = [sys.executable, "-m", "editgraph.cli.main", "run", str(wf), "--out", str(out), "--report", str(report),
           "--cache-dir", str(cache_dir), "--threads", "2", "-q"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", EDITGRAPH_CACHE_DIR=str(cache_dir))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.slow
def test_changes_after_denoise_and_prompt_rerun_only_what_they_feed(tmp_path, photo_path):
    doc = edit_workflow(tiny_path("tiny-sd"))
    cache = Cache.default(tmp_path / "cache")
    everything = {"photo", "small", "model", "text", "latent", "denoise", "pixels", "after", "save"}

    log = EventLog()
    first = _run(doc, {"image": str(photo_path)}, cache, tmp_path / "o1", log)
    assert set(first.ran()) == everything
    steps = [e for e in log if isinstance(e, NodeProgress) and e.node_id == "denoise"]
    assert [(e.step, e.total) for e in steps] == [(1, 2), (2, 2)]  # int(4 * 0.6) = 2 steps run
    saved = (tmp_path / "o1" / "edit.png").read_bytes()
    assert provenance.read(saved)["params"]["seed"] == 7  # the seed used travels with the picture

    # a change after the denoise: only the resize and the save run
    second = _run(doc, {"image": str(photo_path), "out_width": 80}, cache, tmp_path / "o2")
    assert set(second.ran()) == {"after", "save"}
    assert second.value("after").shape == (1, 3, 53, 80)

    # a new prompt: the text, the denoise and all after it run; the photo's latent is reused
    third = _run(doc, {"image": str(photo_path), "prompt": "a blue cup"}, cache, tmp_path / "o3")
    assert set(third.ran()) == {"text", "denoise", "pixels", "after", "save"}
    assert (tmp_path / "o3" / "edit.png").read_bytes() != saved

    # back to the first prompt: everything is in the cache, and the bytes are the first run's
    fourth = _run(doc, {"image": str(photo_path)}, cache, tmp_path / "o4")
    assert fourth.ran() == []
    assert (tmp_path / "o4" / "edit.png").read_bytes() == saved


@pytest.mark.slow
def test_second_process_reuses_everything_and_two_processes_agree(tmp_path, photo_path):
    wf = tmp_path / "edit.json"
    wf.write_text(json.dumps(edit_workflow(tiny_path("tiny-sd"))))
    sets = [f"image={photo_path}"]
    shared = tmp_path / "shared-cache"

    one = _cli(wf, sets, shared, tmp_path / "a", tmp_path / "a.json")
    assert {n for n, r in one["nodes"].items() if r["status"] == "ran"} >= {"text", "latent", "denoise", "pixels", "save"}
    again = _cli(wf, sets, shared, tmp_path / "b", tmp_path / "b.json")
    assert {n: r["status"] for n, r in again["nodes"].items() if r["status"] != "cached"} == {}
    assert (tmp_path / "b" / "edit.png").read_bytes() == (tmp_path / "a" / "edit.png").read_bytes()

    # a fresh process with an empty cache computes everything again, to the same bytes
    fresh = _cli(wf, sets, tmp_path / "other-cache", tmp_path / "c", tmp_path / "c.json")
    assert fresh["nodes"]["denoise"]["status"] == "ran"
    assert (tmp_path / "c" / "edit.png").read_bytes() == (tmp_path / "a" / "edit.png").read_bytes()

    # and so does this process
    _run(json.loads(wf.read_text()), {"image": str(photo_path)}, Cache.default(tmp_path / "mine"), tmp_path / "d")
    assert (tmp_path / "d" / "edit.png").read_bytes() == (tmp_path / "a" / "edit.png").read_bytes()


@pytest.mark.slow
def test_random_seed_is_drawn_before_keying_and_recorded(tmp_path, photo_path):
    doc = edit_workflow(tiny_path("tiny-sd"))
    doc["nodes"]["denoise"]["params"]["seed"] = "random"
    graph = bind(load_workflow(doc), {"image": str(photo_path)}, base_dir=REPO)
    seed = graph.seeds["denoise.seed"]
    assert isinstance(seed, int) and graph.nodes["denoise"].params.seed == seed
    Executor(Cache.default(tmp_path / "cache")).run(graph, out_dir=tmp_path / "o", stamp=provenance.stamp)
    meta = provenance.read((tmp_path / "o" / "edit.png").read_bytes())
    assert meta["seeds"] == {"denoise.seed": seed}
    assert meta["workflow"]["nodes"]["denoise"]["params"]["seed"] == seed


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["tiny-sd-inpaint", "tiny-sd"])
def test_inpaint_workflow_keeps_every_pixel_outside_the_mask(tmp_path, photo_path, model_name):
    import numpy as np
    from PIL import Image as PILImage

    from editgraph.ops.imaging import to_uint8

    # The photo at 240x160 keeps the test quick; the mask travels as a PNG's alpha (image.load's
    # `alpha` output is a Mask): 255 = change.
    width, height = 240, 160
    alpha = np.zeros((height, width), np.uint8)
    alpha[48:112, 80:168] = 255
    rgba = np.dstack([np.full((height, width, 3), 255, np.uint8), alpha])
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "mask.png")
    doc = {
        "format": "editgraph/1",
        "name": "inpaint",
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": str(photo_path)}},
            "small": {"type": "image.resize", "inputs": {"image": "photo.image"}, "params": {"width": width, "height": height}},
            "region": {"type": "image.load", "params": {"path": str(tmp_path / "mask.png")}},
            "model": {"type": "model.load", "params": {"model": str(tiny_path(model_name))}},
            "text": {"type": "prompt.encode", "inputs": {"model": "model"}, "params": {"prompt": "an empty wooden table"}},
            "latent": {"type": "vae.encode", "inputs": {"model": "model", "image": "small"}},
            "denoise": {
                "type": "denoise",
                "inputs": {"model": "model", "cond": "text", "latent": "latent", "mask": "region.alpha", "image": "small"},
                "params": {"steps": 3, "cfg": 7.0, "strength": 1.0, "seed": 0, "scheduler": "dpm++ 2m"},
            },
            "pixels": {"type": "vae.decode", "inputs": {"model": "model", "latent": "denoise"}},
            "result": {"type": "image.composite", "inputs": {"base": "small", "overlay": "pixels", "mask": "region.alpha"}},
            "save": {"type": "image.save", "inputs": {"image": "result"}, "params": {"path": "inpainted.png"}},
        },
    }
    result = _run(doc, {}, Cache.default(tmp_path / "cache"), tmp_path / "out")
    original = to_uint8(result.value("small"))[0]
    with PILImage.open(tmp_path / "out" / "inpainted.png") as pil:
        saved = np.asarray(pil.convert("RGB"))
    outside = alpha == 0
    assert saved.shape == original.shape == (height, width, 3)
    assert np.array_equal(saved[outside], original[outside])
    assert np.abs(saved[~outside].astype(int) - original[~outside]).mean() > 5  # the region was repainted
