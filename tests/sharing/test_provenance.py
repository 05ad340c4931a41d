"""Saved images carry how they were made; `run IMAGE.png` reproduces them anywhere; show / extract read it back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest

from editgraph.sharing import provenance
from editgraph.sharing.metadata import AI_SOURCE_TYPE, png_chunks, read_xmp

from .conftest import pixels

REPO = Path(__file__).resolve().parents[2]


def seeded_workflow(photo) -> dict:
    return {
        "format": "editgraph/1",
        "name": "seeded",
        "params": {"image": {"type": "path", "default": str(photo)}, "seed": {"type": "int", "default": "random"}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": 96}},
            "noise": {"type": "sharetest.noise", "inputs": {"image": "small"}, "params": {"seed": "$seed", "amount": 0.3}},
            "model": {"type": "sharetest.model_load", "params": {"model": "fake-sd"}},
            "tint": {"type": "sharetest.tint", "inputs": {"model": "model", "image": "noise"}},
            "save": {"type": "image.save", "inputs": {"image": "tint"}, "params": {"path": "result.png"}},
        },
    }


def make_output(tmp_path, cli, photo_path, doc=None) -> Path:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(doc or seeded_workflow(photo_path)))
    code, _, err = cli("run", wf, "--out", tmp_path / "first", "-q")
    assert code == 0, err
    return tmp_path / "first" / "result.png"


def test_png_copied_to_another_dir_and_fresh_cache_reruns_to_identical_pixels(tmp_path, cli, photo_path):
    out = make_output(tmp_path, cli, photo_path)
    info = provenance.read_file(out)
    seed = info["seeds"]["$seed"]  # the workflow param's default "random", drawn and recorded
    assert isinstance(seed, int) and info["workflow"]["params"]["seed"]["default"] == seed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(out, elsewhere / "shared.png")
    fresh_cache = tmp_path / "fresh-cache"
    # A new process, another working directory, an empty cache: nothing can come from the first run.
    code = "import sys, tests.sharing.testnodes; from editgraph.cli.main import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDITGRAPH_CACHE_DIR": str(fresh_cache)}
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "shared.png", "--out", "again", "--report", "r.json", "--threads", "2", "-q"],
        cwd=elsewhere, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((elsewhere / "r.json").read_text())
    assert {n: r["status"] for n, r in report["nodes"].items()} == dict.fromkeys(["photo", "small", "noise", "model", "tint", "save"], "ran")
    assert report["params"]["seed"] == seed
    again = elsewhere / "again" / "result.png"
    np.testing.assert_array_equal(pixels(again), pixels(out))
    assert pixels(out).shape == (64, 96, 3)
    # and the re-made image carries the same recipe
    assert provenance.read_file(again)["workflow"] == info["workflow"]


def test_provenance_has_resolved_workflow_seeds_models_inputs_version(tmp_path, cli, photo_path):
    out = make_output(tmp_path, cli, photo_path)
    info = provenance.read_file(out)
    from editgraph.nodes.registry import REGISTRY
    from editgraph.version import __version__

    assert info["editgraph"] == __version__ and info["torch_threads"] == 2
    assert info["workflow"]["nodes"]["noise"]["version"] == REGISTRY["sharetest.noise"].version
    assert info["models"] == [
        {"node": "model", "type": "sharetest.model_load", "name": "fake-sd", "content_hash": blake3.blake3(b"fake-sd").hexdigest()}
    ]
    (inp,) = info["inputs"]
    assert inp["node"] == "photo" and inp["path"] == str(photo_path.resolve()) and len(inp["source_token"]) == 64
    assert set(info["keys"]) == {"photo", "small", "noise", "model", "tint", "save"}


def test_literal_relative_input_path_is_made_absolute_in_the_carried_document(tmp_path, cli, photo_path):
    shutil.copy(photo_path, tmp_path / "hero.png")
    doc = seeded_workflow(photo_path)
    doc["params"].pop("image")
    doc["nodes"]["photo"]["params"]["path"] = "hero.png"  # relative to the workflow file
    out = make_output(tmp_path, cli, photo_path, doc)
    carried = provenance.read_file(out)["workflow"]
    assert carried["nodes"]["photo"]["params"]["path"] == str((tmp_path / "hero.png").resolve())


def test_moved_input_is_found_beside_the_image_by_hash(tmp_path, cli, photo_path, monkeypatch):
    shutil.copy(photo_path, tmp_path / "hero.png")
    doc = seeded_workflow(tmp_path / "hero.png")
    out = make_output(tmp_path, cli, photo_path, doc)
    artist_b = tmp_path / "artist_b"
    artist_b.mkdir()
    shutil.copy(out, artist_b / "shared.png")
    shutil.move(tmp_path / "hero.png", artist_b / "hero.png")  # the photo travels with the PNG
    monkeypatch.chdir(artist_b)
    code, _, err = cli("run", "shared.png", "--out", "o", "-q")
    assert code == 0, err
    assert "using" in err and "hero.png" in err
    np.testing.assert_array_equal(pixels(artist_b / "o" / "result.png"), pixels(out))


def test_extract_round_trip_writes_only_the_named_file(tmp_path, cli, photo_path, monkeypatch):
    out = make_output(tmp_path, cli, photo_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, stdout, err = cli("extract", out, "-o", "sub/workflow.json")
    assert code == 0, err
    assert stdout == "" and sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == ["sub", "sub/workflow.json"]
    extracted = json.loads((work / "sub" / "workflow.json").read_text())
    assert extracted == provenance.read_file(out)["workflow"]
    # without -o it goes to stdout
    code, stdout, _ = cli("extract", out)
    assert json.loads(stdout) == extracted
    # the extracted workflow makes the same pixels
    code, _, err = cli("run", "sub/workflow.json", "--out", "o", "-q")
    assert code == 0, err
    np.testing.assert_array_equal(pixels(work / "o" / "result.png"), pixels(out))


def test_show_image_prints_provenance(tmp_path, cli, photo_path):
    out = make_output(tmp_path, cli, photo_path)
    info = provenance.read_file(out)
    code, text, _ = cli("show", out)
    assert code == 0
    assert "made by editgraph 0.1.0" in text and "AI-edit label: yes" in text
    assert f"seed = {info['params']['seed']}" in text
    assert f"model: model (sharetest.model_load) fake-sd  content hash {info['models'][0]['content_hash']}" in text
    assert "noise  sharetest.noise" in text  # the graph follows
    code, raw, _ = cli("show", out, "--format", "json")
    assert json.loads(raw) == info


def test_image_without_provenance_is_refused_clearly(tmp_path, cli, photo_path):
    code, _, err = cli("extract", photo_path, "-o", tmp_path / "w.json")
    assert code == 3 and "carries no editgraph workflow" in err
    assert not (tmp_path / "w.json").exists()


def test_output_is_labelled_ai_edited(tmp_path, cli, photo_path):
    out = make_output(tmp_path, cli, photo_path)
    data = out.read_bytes()
    xmp = read_xmp(data).decode()
    assert f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE_TYPE}"' in xmp
    from PIL import Image

    with Image.open(out) as im:  # a standard reader finds it before decoding any pixels
        assert AI_SOURCE_TYPE in im.info["XML:com.adobe.xmp"]
    assert [c for c, _ in png_chunks(data)].count(b"iTXt") == 2


@pytest.mark.parametrize("suffix", ["jpg", "webp"])
def test_jpeg_and_webp_outputs_carry_a_runnable_workflow_too(tmp_path, cli, photo_path, suffix, monkeypatch):
    doc = seeded_workflow(photo_path)
    doc["nodes"]["save"]["params"]["path"] = f"result.{suffix}"
    doc["nodes"]["noise"]["params"]["seed"] = "random"  # drawn per node this time, not via a workflow param
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(doc))
    assert cli("run", wf, "--out", tmp_path / "first", "-q")[0] == 0
    out = tmp_path / "first" / f"result.{suffix}"
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", out, "--out", "again", "--cache-dir", tmp_path / "fresh", "-q")
    assert code == 0, err
    np.testing.assert_array_equal(pixels(tmp_path / "again" / f"result.{suffix}"), pixels(out))
    seeds = provenance.read_file(out)["seeds"]
    assert sorted(seeds) == ["$seed", "noise.seed"] and provenance.read_file(out)["workflow"]["nodes"]["noise"]["params"]["seed"] == seeds["noise.seed"]
    assert provenance.read_file(tmp_path / "again" / f"result.{suffix}")["seeds"] == {}  # nothing left to draw: it was written in
