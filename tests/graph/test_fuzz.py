"""Thousands of malformed documents: validation answers each with WorkflowInvalid, never another exception."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editgraph.errors import WorkflowInvalid
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind

VALID = {
    "format": "editgraph/1",
    "name": "fuzz",
    "params": {"image": {"type": "path", "default": "a.png"}, "w": {"type": "int", "default": 64, "minimum": 1}},
    "nodes": {
        "photo": {"type": "image.load", "params": {"path": "$image"}},
        "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": "$w", "filter": "area"}},
        "mix": {"type": "image.composite", "inputs": {"base": "photo", "overlay": "small", "mask": "photo.alpha"}},
        "save": {"type": "image.save", "inputs": {"image": "mix"}, "params": {"path": "o.png"}},
    },
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["$image", "$w", "$nope", "$$x", "photo", "photo.alpha", "photo.nope", "image.load", "editgraph/1", "-1", "../x.png"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

KEYS = ["format", "name", "params", "nodes", "type", "inputs", "default", "minimum", "choices", "path", "width", "image", "base", "overlay", "mask", "filter", "photo", "small", "mix", "save"]


def _check(data) -> None:
    try:
        workflow = load_workflow(data) if isinstance(data, dict) else load_workflow(json.dumps(data), text=True)
        bind(workflow, require_values=False)
    except WorkflowInvalid as exc:
        assert exc.issues and all(isinstance(str(i), str) for i in exc.issues)


@pytest.mark.slow  # thousands of examples: over 5 s
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_random_json_only_ever_fails_validation(data):
    _check(data)


@st.composite
def mutated(draw):
    """A valid document with a few random edits at random depths: the malformations people make."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        node = doc
        path = []
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            path.append(key)
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete" and node:
            node.pop(draw(st.sampled_from(sorted(node))))
        elif action == "set" and node:
            node[draw(st.sampled_from(sorted(node)))] = draw(json_values)
        else:
            node[draw(st.sampled_from(KEYS))] = draw(json_values)
    return doc


@pytest.mark.slow  # thousands of examples: over 5 s
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated(), st.dictionaries(st.sampled_from(["image", "w", "x"]), st.text(max_size=6), max_size=2))
def test_mutated_documents_and_sets_only_ever_fail_validation(doc, sets):
    try:
        bind(load_workflow(doc), sets, require_values=False)
    except WorkflowInvalid as exc:
        assert exc.issues
