"""The public Python API: the README's example runs as written and makes the CLI's bytes; the
builder refuses typos on the line that makes them; options are passed, not put in os.environ."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import editgraph
from editgraph.graph.builder import BuildError

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "editgraph" / "workflows" / "assets"


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_example_runs_and_matches_the_cli_bytes(tmp_path, monkeypatch):
    shutil.copy(ASSETS / "coffee.png", tmp_path / "photo.png")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    api = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert api.returncode == 0, api.stderr
    assert "\nran\n" in api.stdout and (tmp_path / "out" / "look.png").is_file() and (tmp_path / "out" / "warm.png").is_file()
    cli = subprocess.run([sys.executable, "-m", "editgraph.cli.main", "run", "look", "--set", "match_strength=0.8", "--out", "cli", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "cli" / "look.png").read_bytes() == (tmp_path / "out" / "look.png").read_bytes()


def test_run_returns_written_files_report_and_values(tmp_path):
    result = editgraph.run("look", {"match_strength": 0.25}, out=tmp_path / "o", cache=tmp_path / "c", device="cpu")
    assert [p.name for p in result.written] == ["look.png"]
    assert result.report["device"] == "cpu" and result.report["params"]["match_strength"] == 0.25
    assert set(result.ran) == set(result.report["nodes"])
    image = result.value("matched")
    assert tuple(image.shape) == (1, 3, 400, 600)
    again = editgraph.run("look", {"match_strength": 0.25}, out=tmp_path / "o2", cache=tmp_path / "c")
    assert again.ran == [] and (tmp_path / "o2" / "look.png").read_bytes() == result.written[0].read_bytes()


def test_cache_false_neither_reads_nor_writes(tmp_path):
    editgraph.run("look", out=tmp_path / "o", cache=tmp_path / "c")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "c").rglob("*"))
    result = editgraph.run("look", out=tmp_path / "o2", cache=False)
    assert set(result.ran) == set(result.report["nodes"])  # nothing read
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "c").rglob("*")) == before


def test_builder_document_runs_like_the_same_json(tmp_path):
    g = editgraph.Graph("warm")
    photo = g.add("image.load", path=str(ASSETS / "coffee.png"), node_id="photo")
    g.add("image.save", image=g.add("grade", image=photo, temperature=0.5), path="w.png")
    doc = g.document()
    assert doc == {
        "format": "editgraph/1", "name": "warm", "params": {},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": str(ASSETS / "coffee.png")}},
            "grade": {"type": "grade", "params": {"temperature": 0.5}, "inputs": {"image": "photo"}},
            "image_save": {"type": "image.save", "params": {"path": "w.png"}, "inputs": {"image": "grade"}},
        },
    }
    a = editgraph.run(g, out=tmp_path / "a", cache=False).written[0].read_bytes()
    b = editgraph.run(doc, out=tmp_path / "b", cache=False).written[0].read_bytes()
    assert a == b


@pytest.mark.parametrize("build, message", [
    (lambda g, p: g.add("mask.feathr", mask=p), "unknown node type 'mask.feathr'; did you mean 'mask.feather'"),
    (lambda g, p: g.add("grade", image=p, temprature=0.2), "no input or param 'temprature'; did you mean 'temperature'?"),
    (lambda g, p: g.add("mask.feather", mask=p), "input 'mask' takes Mask, but 'photo' gives Image"),
    (lambda g, p: g.add("grade", image=p, exposure=99), "param 'exposure' = 99: Input should be less than or equal to 16"),
    (lambda g, p: g.add("grade"), "input(s) ['image'] must be connected"),
    (lambda g, p: g.add("grade", image=p.out("nope")), "has no output 'nope'"),
])
def test_builder_fails_at_the_line_with_the_node_and_what_was_allowed(build, message):
    g = editgraph.Graph("t")
    photo = g.add("image.load", path="x.png", node_id="photo")
    with pytest.raises(BuildError) as err:
        build(g, photo)
    assert message in str(err.value)


def test_allow_model_mismatch_is_an_option_not_an_environment_variable(tmp_path):
    from editgraph.cli.main import main

    wf = {"format": "editgraph/1", "name": "m", "params": {}, "nodes": {
        "model": {"type": "model.load", "params": {"model": "tiny-sd", "hash": "0123456789abcdef0123"}}}}
    path = tmp_path / "m.json"
    path.write_text(__import__("json").dumps(wf))
    assert main(["validate", str(path), "--allow-model-mismatch"]) == 0
    assert "EDITGRAPH_ALLOW_MODEL_MISMATCH" not in os.environ


def test_devices_are_named_or_picked_and_bad_names_are_refused():
    import torch

    from editgraph.errors import EditgraphError
    from editgraph.executor.devices import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(EditgraphError, match="must be cpu, cuda, cuda:N, mps or auto, got 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EditgraphError, match="no CUDA device"):
            pick_device("cuda:0")
