"""`validate` checks input files; `show` draws a workflow as text, Mermaid, DOT and PNG, with run statuses."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image
from pydantic import Field

from editgraph.graph.document import load_workflow
from editgraph.graph.render import STATUS_COLOURS, layers, to_text
from editgraph.graph.validate import bind
from editgraph.nodes.registry import InputPath, Node, NodeParams, node
from editgraph.values.sockets import Image as ImageSocket
from editgraph.sharing.preflight import check_sources


@node("sharetest.checked", version="1.0.0")
class Checked(Node):
    """Reads a file and, like a model node, checks more than its existence."""

    class Params(NodeParams):
        path: InputPath = Field(description="file")
        model: str = Field("ok", description="'ok' resolves; anything else does not")

    @classmethod
    def source_token(cls, params) -> str:
        return "x"

    @classmethod
    def check_sources(cls, params, *, deep=True, settings=None) -> list[tuple[str, str]]:
        return [] if params.model == "ok" else [("model", f"model {params.model!r} not found in the model folders")]

    def run(self, ctx) -> ImageSocket:
        raise AssertionError("never run in these tests")


def two_inputs(tmp_path) -> dict:
    return {
        "params": {"image": {"type": "path", "default": "missing-hero.png"}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "logo": {"type": "image.load", "params": {"path": "logos/brand.png"}},
            "mix": {"type": "image.composite", "inputs": {"base": "photo", "overlay": "logo"}},
            "save": {"type": "image.save", "inputs": {"image": "mix"}},
        },
    }


def test_validate_reports_each_missing_input_file(tmp_path, cli):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(two_inputs(tmp_path)))
    issues = check_sources(bind(load_workflow(wf), base_dir=tmp_path))
    assert [(i.path, i.node_id, i.node_type) for i in issues] == [
        ("nodes.photo.params.path", "photo", "image.load"),
        ("nodes.logo.params.path", "logo", "image.load"),
    ]
    assert issues[0].message == f"input file not found: {tmp_path / 'missing-hero.png'} (from $image)"
    assert issues[1].message == f"input file not found: {tmp_path / 'logos' / 'brand.png'}"
    code, _, err = cli("validate", wf)
    assert code == 3 and "2 problems" in err and "node 'logo' (image.load)" in err


def test_validate_passes_when_files_exist_and_skips_unset_params(tmp_path, cli, photo_path):
    doc = two_inputs(tmp_path)
    doc["params"]["image"] = {"type": "path"}  # required, unset: nothing to look for yet
    doc["nodes"]["logo"]["params"]["path"] = str(photo_path)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(doc))
    code, out, _ = cli("validate", wf)
    assert code == 0 and "params to set when running: image" in out
    code, _, err = cli("validate", wf, "--set", "image=nope.png")
    assert code == 3 and "nope.png" in err


def test_node_classes_may_add_source_checks(tmp_path, photo_path):
    doc = {"nodes": {"a": {"type": "sharetest.checked", "params": {"path": str(photo_path), "model": "sd99"}}}}
    (issue,) = check_sources(bind(load_workflow(doc)))
    assert (issue.path, issue.node_id, issue.message) == ("nodes.a.params.model", "a", "model 'sd99' not found in the model folders")


def diamond() -> dict:
    return {
        "name": "diamond",
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "x.png"}},
            "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": 32}},
            "big": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": 64}},
            "mix": {"type": "image.composite", "inputs": {"base": "small", "overlay": "big", "mask": "photo.alpha"}, "params": {"resize_overlay": True}},
            "save": {"type": "image.save", "inputs": {"image": "mix"}},
        },
    }


STATUS = {"photo": "cached", "small": "cached", "big": "ran", "mix": "ran", "save": "failed"}


def test_layers_follow_topological_generations():
    assert layers(load_workflow(diamond())) == [["photo"], ["big", "small"], ["mix"], ["save"]]


def test_text_lists_types_params_edges_and_status():
    text = to_text(load_workflow(diamond()), STATUS)
    assert "  big    image.resize  [ran]" in text and "  photo  image.load  [cached]" in text
    assert "<- mask: photo.alpha" in text and "width = 32" in text and "-> small.image, big.image, mix.mask (from alpha)" in text


def test_mermaid_and_dot_name_every_node_type_edge_and_status(tmp_path, cli):
    wf = tmp_path / "d.json"
    wf.write_text(json.dumps(diamond()))
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"nodes": {n: {"status": s} for n, s in STATUS.items()}}))
    code, mermaid, _ = cli("show", wf, "--format", "mermaid", "--report", report)
    assert code == 0 and mermaid.startswith("flowchart TD\n")
    assert 'n_mix["mix<br/><i>image.composite</i><br/>ran"]' in mermaid
    assert "n_photo -->|alpha → mask| n_mix" in mermaid and "class n_big,n_mix ran" in mermaid
    code, dot, _ = cli("show", wf, "--format", "dot", "--report", report)
    assert dot.startswith('digraph "diamond" {') and dot.rstrip().endswith("}")
    assert '"save" [label="save\\nimage.save\\nfailed"' in dot
    assert len(re.findall(r'^  "\w+" -> "\w+"', dot, re.M)) == 6 and '"photo" -> "mix" [label="alpha -> mask"]' in dot


def test_png_picture_has_a_box_per_node_coloured_by_status(tmp_path, cli):
    wf = tmp_path / "d.json"
    wf.write_text(json.dumps(diamond()))
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"nodes": {n: {"status": s} for n, s in STATUS.items()}}))
    code, _, err = cli("show", wf, "--format", "png")
    assert code == 2 and "needs -o" in err
    code, _, _ = cli("show", wf, "--format", "png", "-o", tmp_path / "g.png", "--report", report)
    assert code == 0
    with Image.open(tmp_path / "g.png") as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 4 * 50 and arr.shape[1] > 2 * 80  # four rows, two boxes side by side

    def count(colour: str) -> int:
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return int((arr == rgb).all(-1).sum())

    # fills: 2 cached boxes, 2 ran boxes, 1 failed box (each a few thousand pixels)
    assert count(STATUS_COLOURS["cached"]) > 2000 and count(STATUS_COLOURS["ran"]) > 2000 and count(STATUS_COLOURS["failed"]) > 1000


def test_show_uses_statuses_from_a_real_run_report(tmp_path, cli, photo_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("run", "look", "-q", "--report", "r1.json")[0] == 0
    assert cli("run", "look", "-q", "--report", "r2.json", "--set", "match_strength=0.2")[0] == 0
    code, text, _ = cli("show", "look", "--report", "r2.json")
    assert "graded   grade  [cached]" in text and "matched  grade.match  [ran]" in text, text


def test_a_workflow_pointing_at_the_exported_schema_validates_both_ways(tmp_path, cli, photo_path):
    import jsonschema

    assert cli("schema", "-o", tmp_path / "editgraph.schema.json")[0] == 0
    schema = json.loads((tmp_path / "editgraph.schema.json").read_text())
    doc = {"$schema": "./editgraph.schema.json", **two_inputs(tmp_path)}
    doc["params"]["image"]["default"] = str(photo_path)
    doc["nodes"]["logo"]["params"]["path"] = str(photo_path)
    jsonschema.validate(doc, schema)
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    code, out, err = cli("validate", tmp_path / "wf.json")
    assert code == 0, err
    assert out.strip().endswith("valid (4 nodes)")
