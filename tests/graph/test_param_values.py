"""Workflow param declarations and the values given for them: each mistake is one Issue at its
JSON path saying what was given and what is allowed (validate() collects them; nothing raises)."""

from __future__ import annotations

import pytest

from editgraph import workflows
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind, validate


def _document(**params) -> dict:
    return {
        "format": "editgraph/1", "name": "t",
        "params": {"img": {"type": "path", "default": "assets/coffee.png"}, **params},
        "nodes": {"photo": {"type": "image.load", "params": {"path": "$img"}},
                  "save": {"type": "image.save", "inputs": {"image": "photo"}, "params": {"path": "out.png"}}},
    }


def _issues(document: dict, overrides: dict | None = None) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in validate(load_workflow(document), overrides, base_dir=workflows.HERE)]


def test_bad_declarations_are_each_named():
    doc = _document(**{"bad name": {"type": "int", "default": 1}, "r": {"type": "int", "default": 5, "minimum": 9, "maximum": 2}})
    doc["nodes"]["1st"] = doc["nodes"].pop("photo")
    doc["nodes"]["save"]["inputs"]["image"] = "1st"
    assert _issues(doc) == [
        ("params.bad name", "param names must be identifiers (letters, digits, _), got 'bad name'"),
        ("params.r", "minimum 9.0 is greater than maximum 2.0"),
        ("params.r.default", "must be ≥ 9, got 5"),
        ("nodes.1st", "node ids are letters, digits, '_' and '-' (no dots), starting with a letter; got '1st'"),
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"f": "abc"}, "float param: expected a number, got 'abc'"),
        ({"f": True}, "float param: expected a number, got True"),
        ({"b": "maybe"}, "bool param: expected true or false, got 'maybe'"),
        ({"b": 3}, "bool param: expected true or false, got 3"),
        ({"e": "c"}, "enum param: expected one of ['a', 'b'], got 'c'"),
    ],
)
def test_a_value_of_the_wrong_kind_names_the_param_and_what_was_given(override, message):
    doc = _document(f={"type": "float", "default": 1.0}, b={"type": "bool", "default": False}, e={"type": "enum", "choices": ["a", "b"], "default": "a"})
    assert _issues(doc, override) == [(f"--set {next(iter(override))}", message)]


def test_text_values_are_read_as_their_declared_type_and_a_double_dollar_is_a_literal_dollar():
    doc = _document(f={"type": "float", "default": 1.0}, b={"type": "bool", "default": False})
    doc["nodes"]["save"]["params"]["path"] = "$$cost.png"  # "$$" escapes a value that starts with "$"
    graph = bind(load_workflow(doc), {"f": "2.5", "b": "yes"}, base_dir=workflows.HERE)
    assert graph.params["f"] == 2.5 and graph.params["b"] is True
    assert graph.nodes["save"].params.path == "$cost.png"
