"""Every validation error: one small workflow each, message checked; all problems reported at once."""

from __future__ import annotations

import json
import random

import pytest

from editgraph.errors import WorkflowInvalid
from editgraph.graph.document import Workflow, load_workflow
from editgraph.graph.validate import bind, validate
from editgraph.nodes.registry import Node, NodeParams, Seed, node
from editgraph.values.sockets import Image


@node("test.seeded", version="1.0.0")
class Seeded(Node):
    """Passes the image through; has a seed param."""

    class Params(NodeParams):
        seed: Seed = 0

    def run(self, ctx, image: Image) -> Image:
        return image


def doc(nodes, params=None, **extra):
    return {"format": "editgraph/1", "name": "t", "params": params or {}, "nodes": nodes, **extra}


LOAD = {"type": "image.load", "params": {"path": "photo.png"}}


def problems(d, overrides=None, **kw):
    with pytest.raises(WorkflowInvalid) as info:
        bind(load_workflow(d), overrides, **kw)
    return [str(i) for i in info.value.issues]


def test_unknown_node_type_suggests_close_names():
    (msg,) = problems(doc({"a": {"type": "image.lod", "params": {"path": "x"}}}))
    assert msg.startswith("nodes.a.type [node 'a' (image.lod)]: unknown node type 'image.lod'")
    assert "did you mean 'image.load'" in msg


def test_unknown_param_names_allowed_ones():
    (msg,) = problems(doc({"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"widht": 5}}}))
    assert msg.startswith("nodes.r.params.widht [node 'r' (image.resize)]: unknown field (value 5)")
    assert "did you mean 'width'?" in msg and "image.resize params: width, height, multiple_of, filter" in msg


def test_invalid_param_value_says_what_was_allowed_and_received():
    (msg,) = problems(doc({"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"width": -2}}}))
    assert msg == "nodes.r.params.width [node 'r' (image.resize)]: input should be greater than or equal to 0, got -2"


def test_nan_param_is_refused():
    (msg,) = problems(doc({"a": LOAD, "g": {"type": "grade", "inputs": {"image": "a"}, "params": {"exposure": float("nan")}}}))
    assert msg == "nodes.g.params.exposure [node 'g' (grade)]: input should be a finite number, got nan"


def test_invalid_enum_value_lists_choices():
    (msg,) = problems(doc({"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"width": 8, "filter": "lanczos9"}}}))
    assert "nodes.r.params.filter" in msg and "'bicubic', 'bilinear', 'nearest' or 'area'" in msg and "got 'lanczos9'" in msg


def test_missing_required_input():
    (msg,) = problems(doc({"a": LOAD, "c": {"type": "image.composite", "inputs": {"base": "a"}}}))
    assert msg == "nodes.c.inputs [node 'c' (image.composite)]: missing required input 'overlay' (Image)"


def test_missing_required_param():
    (msg,) = problems(doc({"a": {"type": "image.load"}}))
    assert msg == "nodes.a.params.path [node 'a' (image.load)]: required field is missing"


def test_reference_to_unknown_node_and_output():
    msgs = problems(doc({"photo": LOAD, "c": {"type": "image.composite", "inputs": {"base": "phot", "overlay": "photo.mask"}}}))
    assert msgs[0] == "nodes.c.inputs.base [node 'c' (image.composite)]: reference 'phot' names no node in this workflow; did you mean 'photo'?"
    assert msgs[1] == (
        "nodes.c.inputs.overlay [node 'c' (image.composite)]: node 'photo' (image.load) has no output 'mask'; "
        "its outputs: image: Image, alpha: Mask"
    )


def test_unknown_input_name():
    (msg,) = problems(doc({"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a", "img": "a"}, "params": {"width": 8}}}))
    assert msg == "nodes.r.inputs.img [node 'r' (image.resize)]: image.resize has no input 'img'; its inputs: image: Image"


def test_socket_type_mismatch_names_both_types():
    (msg,) = problems(doc({"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a.alpha"}, "params": {"width": 8}}}))
    assert msg == "nodes.r.inputs.image [node 'r' (image.resize)]: socket type mismatch: 'a.alpha' gives Mask, input 'image' takes Image"


def test_cycle_lists_its_nodes_in_order():
    r = lambda src: {"type": "image.resize", "inputs": {"image": src}, "params": {"width": 8}}  # noqa: E731
    (msg,) = problems(doc({"a": r("c"), "b": r("a"), "c": r("b"), "ok": LOAD}))
    assert msg == "nodes.b.inputs.image [node 'b' (image.resize)]: cycle: a -> b -> c -> a"


def test_every_cycle_is_reported_even_through_unknown_types_and_rejected_edges():
    """Issue 10, defect 7: one issue per cycle, starting at its smallest id, whatever the order of
    the document, with the JSON path of the edge that leaves that node."""
    r = lambda src: {"type": "image.resize", "inputs": {"image": src}, "params": {"width": 8}}  # noqa: E731
    nodes = {
        "z": r("y"), "y": {"type": "no.such.type", "inputs": {"image": "z"}},  # through an unknown type
        "m": r("n.alpha"), "n": {"type": "image.load", "inputs": {}, "params": {"path": "p.png"}},  # not a cycle
        "q": r("p.alpha"), "p": {"type": "mask.invert", "inputs": {"mask": "q"}},  # through a rejected edge
        "s": r("s"),  # onto itself
    }
    for _ in range(3):
        items = list(nodes.items())
        random.shuffle(items)
        got = [m for m in problems(doc(dict(items))) if "cycle" in m]
        assert got == [
            "nodes.q.inputs.image [node 'q' (image.resize)]: cycle: p -> q -> p",
            "nodes.s.inputs.image [node 's' (image.resize)]: cycle: s -> s",
            "nodes.z.inputs.image [node 'z' (image.resize)]: cycle: y -> z -> y",
        ]


def test_unknown_dollar_param():
    (msg,) = problems(doc({"a": {"type": "image.load", "params": {"path": "$imgae"}}}, {"image": {"type": "path", "default": "x.png"}}))
    assert msg == "nodes.a.params.path [node 'a' (image.load)]: unknown workflow param '$imgae'; did you mean $image?"


def test_set_unknown_name_and_wrong_type():
    d = doc({"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"width": "$width"}}}, {"width": {"type": "int", "default": 8}})
    msgs = problems(d, {"wdth": "3", "width": "wide"})
    assert msgs[0] == "--set wdth: unknown workflow param; did you mean width? this workflow's params: width"
    assert msgs[1] == "--set width: int param: expected an integer (or 'random' for a seed), got 'wide'"


def test_set_value_out_of_bounds_and_bound_param_checked_by_node():
    d = doc(
        {"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"width": "$w"}}},
        {"w": {"type": "int", "default": 8, "maximum": 100}},
    )
    assert problems(d, {"w": "500"}) == ["--set w: int param: must be ≤ 100, got 500"]
    d["params"]["w"] = {"type": "int", "default": 8}
    (msg,) = problems(d, {"w": "-4"})
    assert msg == "nodes.r.params.width [node 'r' (image.resize)]: input should be greater than or equal to 0, got -4 (from $w)"


def test_required_param_without_value_when_running():
    d = doc({"a": {"type": "image.load", "params": {"path": "$image"}}}, {"image": {"type": "path", "description": "photo"}})
    (msg,) = problems(d)
    assert msg == "params.image: required path param has no value; set it with --set image=..."
    assert validate(load_workflow(d)) == []  # a reusable recipe is valid without its inputs


def test_every_problem_is_reported_at_once():
    d = doc(
        {
            "a": {"type": "image.lod"},
            "b": {"type": "image.resize", "inputs": {"image": "zzz"}, "params": {"width": -1}},
            "c": {"type": "image.save", "inputs": {"image": "b"}, "params": {"path": "../escape.png"}},
        }
    )
    msgs = problems(d)
    assert len(msgs) == 4
    assert [m.split(" ")[0] for m in msgs] == ["nodes.a.type", "nodes.b.params.width", "nodes.c.params.path", "nodes.b.inputs.image"]
    assert "must be a relative path inside the output folder" in msgs[2]


def test_format_unknown_or_newer_is_refused():
    with pytest.raises(WorkflowInvalid) as info:
        load_workflow(doc({"a": LOAD}, format="editgraph/2"))
    assert "unknown or newer format 'editgraph/2'; this version of editgraph reads editgraph/1" in str(info.value)


def test_bad_json_names_line_and_column():
    with pytest.raises(WorkflowInvalid) as info:
        load_workflow('{"nodes": {\n  "a": }', text=True)
    assert "not valid JSON: Expecting value at line 2 column 8" in str(info.value)


def test_unknown_document_field_is_an_error():
    with pytest.raises(WorkflowInvalid) as info:
        load_workflow(doc({"a": {**LOAD, "parmas": {}}}))
    assert "nodes.a.parmas [node 'a' (image.load)]: unknown field" in str(info.value)


def test_param_spec_checks():
    d = doc({"a": LOAD}, {"k": {"type": "enum"}, "n": {"type": "int", "default": 5, "minimum": 10}, "s": {"type": "string", "minimum": 1}})
    msgs = problems(d)
    assert "params.k.choices: an enum param needs a non-empty list of choices" in msgs
    assert "params.n.default: must be ≥ 10, got 5" in msgs
    assert "params.s: minimum/maximum apply to int and float params, not string" in msgs


def test_load_save_load_is_identity(tmp_path):
    d = doc(
        {"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"width": "$w"}, "note": "why"}},
        {"w": {"type": "int", "default": 8, "description": "width"}},
        description="x",
    )
    d["$schema"] = "./editgraph.schema.json"
    wf = load_workflow(d)
    wf.save(tmp_path / "w.json")
    again = load_workflow(tmp_path / "w.json")
    assert again == wf
    assert json.loads((tmp_path / "w.json").read_text()) == d
    assert load_workflow(again.to_json(), text=True).to_dict() == d


def test_seed_random_is_drawn_before_keying_and_recorded():
    d = doc({"a": LOAD, "s": {"type": "test.seeded", "inputs": {"image": "a"}, "params": {"seed": "random"}}})
    g = bind(load_workflow(d), base_dir=None, rng=random.Random(7))
    seed = g.nodes["s"].params.seed
    assert isinstance(seed, int) and g.seeds == {"s.seed": seed}
    assert g.resolved_document()["nodes"]["s"]["params"]["seed"] == seed
    d["params"] = {"seed": {"type": "int", "default": 3}}
    d["nodes"]["s"]["params"]["seed"] = "$seed"
    g = bind(load_workflow(d), {"seed": "random"}, rng=random.Random(7))
    assert g.params["seed"] == g.nodes["s"].params.seed and isinstance(g.params["seed"], int)
    assert g.resolved_document()["params"]["seed"]["default"] == g.params["seed"]


def test_workflow_model_is_frozen():
    wf = load_workflow(doc({"a": LOAD}))
    assert isinstance(wf, Workflow)
    with pytest.raises(Exception):
        wf.name = "x"


def test_major_version_mismatch_is_refused_minor_is_accepted():
    from editgraph.nodes.registry import load_builtin_nodes

    have = load_builtin_nodes()["image.load"].version
    major = int(have.split(".")[0])
    d = doc({"a": {**LOAD, "version": f"{major + 1}.0.0"}})
    (msg,) = problems(d)
    assert msg == (f"nodes.a.version [node 'a' (image.load)]: written for image.load {major + 1}.0.0; this editgraph has {have}, "
                   "a different major version whose output differs")
    d["nodes"]["a"]["version"] = f"{major}.99.3"
    assert validate(load_workflow(d)) == []


def test_resolved_document_pins_node_versions():
    g = bind(load_workflow(doc({"a": LOAD})))
    from editgraph.nodes.registry import load_builtin_nodes

    assert g.resolved_document()["nodes"]["a"]["version"] == load_builtin_nodes()["image.load"].version


def test_nul_in_a_path_is_a_validation_error_not_a_crash():
    d = doc({"a": {"type": "image.load", "params": {"path": "$image"}}, "b": {"type": "image.load", "params": {"path": "x\x00y"}}},
            {"image": {"type": "path", "default": "a.png"}})
    msgs = problems(d, {"image": "\x00"})
    assert msgs == ["--set image: path param: expected a path, got '\\x00'", "nodes.b.params.path [node 'b' (image.load)]: expected a path, got 'x\\x00y'"]


def test_random_is_only_for_seeds_and_every_draw_is_recorded():
    wf = {
        "format": "editgraph/1",
        "params": {"seed": {"type": "int", "default": "random", "minimum": 5, "maximum": 9}, "width": {"type": "int", "default": 8}},
        "nodes": {"a": LOAD, "r": {"type": "image.resize", "inputs": {"image": "a"}, "params": {"width": "$width"}}},
    }
    graph = bind(load_workflow(wf))
    assert graph.seeds == {"$seed": graph.params["seed"]} and 5 <= graph.params["seed"] <= 9  # the param's own bounds
    with pytest.raises(WorkflowInvalid) as err:
        bind(load_workflow(wf), {"width": "random"})
    assert [str(i) for i in err.value.issues] == ["--set width: int param: 'random' is only for seeds, and $width sets r.width, which is not one"]


def test_a_bad_default_is_reported_once():
    wf = {"format": "editgraph/1", "params": {"amt": {"type": "float", "default": 5, "maximum": 1}}, "nodes": {"a": LOAD}}
    assert problems(wf) == ["params.amt.default: must be ≤ 1, got 5.0"]


@pytest.mark.parametrize("bad", [2**64, -1])
def test_a_seed_torch_cannot_take_is_refused_before_running(bad):
    wf = doc({"a": LOAD, "s": {"type": "test.seeded", "inputs": {"image": "a"}, "params": {"seed": bad}}})
    assert problems(wf) == [
        f"nodes.s.params.seed [node 's' (test.seeded)]: a seed is 'random' or an integer from 0 to {2**64 - 1}, got {bad}"
    ]
