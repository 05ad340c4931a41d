"""A malformed node class fails at registration, naming the class and what is wrong."""

from __future__ import annotations

import pytest
from pydantic import ConfigDict

from editgraph.errors import NodeDefinitionError
from editgraph.nodes.registry import REGISTRY, InputPath, Node, NodeParams, load_builtin_nodes, node
from editgraph.values.sockets import Image, Mask


def define(type_name="test.bad", version="1.0.0", **body):
    body.setdefault("__doc__", "Does something to the picture.")
    if "run" not in body:
        def run(self, ctx, image: Image) -> Image:
            return image
        body["run"] = run
    cls = type("BadNode", (Node,), body)
    return node(type_name, version=version)(cls)


def test_well_formed_node_registers_its_sockets():
    def run(self, ctx, image: Image, mask: Mask | None = None) -> Image:
        return image

    cls = define("test.good", run=run)
    assert REGISTRY["test.good"] is cls
    assert [(i.name, i.socket.name, i.optional) for i in cls.inputs.values()] == [("image", "Image", False), ("mask", "Mask", True)]
    assert list(cls.outputs) == ["image"] and not cls.multi_output


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"version": "1.0"}, "version must be semver MAJOR.MINOR.PATCH, got '1.0'"),
        ({"type_name": "Bad Name"}, "type name must be dotted lowercase words"),
        ({"__doc__": None}, "needs a docstring saying what it does to the picture"),
        ({"run": lambda self, image: image}, "run must be declared as run(self, ctx, <inputs>...)"),
    ],
)
def test_malformed_node_fails_naming_the_class(kwargs, why):
    with pytest.raises(NodeDefinitionError) as info:
        define(**kwargs)
    assert "BadNode" in str(info.value) and why in str(info.value)


def test_input_without_socket_annotation():
    def run(self, ctx, image: int) -> Image:
        return image

    with pytest.raises(NodeDefinitionError, match="run\\(\\) input 'image' has no socket type annotation"):
        define(run=run)


def test_return_must_be_a_socket():
    def run(self, ctx, image: Image) -> str:
        return ""

    with pytest.raises(NodeDefinitionError, match="return annotation must be a socket type or a NamedTuple"):
        define(run=run)


def test_params_must_forbid_unknown_fields():
    class Loose(NodeParams):
        model_config = ConfigDict(extra="allow", frozen=True)

    with pytest.raises(NodeDefinitionError, match="Params must keep NodeParams' config"):
        define(Params=Loose)


def test_reading_a_file_requires_a_source_token():
    class P(NodeParams):
        path: InputPath

    with pytest.raises(NodeDefinitionError, match="must define source_token"):
        define(Params=P)


def test_type_names_are_unique():
    load_builtin_nodes()
    with pytest.raises(NodeDefinitionError, match="type already registered by editgraph.nodes.builtin.image.LoadImage"):
        define("image.load")


def test_every_builtin_node_is_documented_and_described():
    """What `editgraph nodes` shows must be complete: a docstring and a description per param."""
    for name, cls in load_builtin_nodes().items():
        if not cls.__module__.startswith("editgraph."):
            continue
        assert (cls.__doc__ or "").strip(), name
        for field_name, f in cls.Params.model_fields.items():
            assert f.description, f"{name}.{field_name} has no description"


def test_optional_input_path_is_still_an_input_path():
    from editgraph.nodes.registry import INPUT_PATH, field_marks

    class P(NodeParams):
        path: InputPath | None = None

    assert field_marks(P, INPUT_PATH) == ("path",)


def test_the_builtin_index_names_the_module_of_every_builtin_node():
    """Binding a workflow imports only the modules of its node types (registry.load_nodes), found
    from their @node lines without importing them: the index must match what importing registers."""
    from editgraph.nodes.registry import BUILTIN_MODULES, builtin_index

    registered = {t: cls.__module__ for t, cls in load_builtin_nodes().items() if cls.__module__ in BUILTIN_MODULES}
    assert builtin_index() == registered
    assert builtin_index()["fill"] == "editgraph.nodes.builtin.fill"


LAZY = r"""
import sys
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.workflows import HERE, find
from editgraph.errors import WorkflowInvalid
graph = bind(load_workflow(find("object-removal")), base_dir=HERE)
print(sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("editgraph.nodes.builtin.")))
try:
    bind(load_workflow({"format": "editgraph/1", "nodes": {"a": {"type": "image.laod"}}}))
except WorkflowInvalid as exc:
    print("image.load" in str(exc), len([m for m in sys.modules if m.startswith("editgraph.nodes.builtin.")]))
"""


def test_binding_imports_only_the_node_modules_a_workflow_uses():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    used, typo = out.stdout.strip().splitlines()
    assert used == "['fill', 'image', 'mask']"
    assert typo == "True 11"  # an unknown type loads every module, so the error can suggest image.load
