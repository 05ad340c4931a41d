"""A typed builder for `editgraph/1` documents: a typo fails at the line that makes it.

    g = Graph("warm-photo", description="Warm a photo and save it.")
    image = g.param("image", "path", description="photo to edit")
    photo = g.add("image.load", path=image)
    warm = g.add("grade", image=photo, temperature=0.4)
    g.add("image.save", image=warm, path="warm.png")
    g.document()  # the same JSON a person would write; editgraph.run(g) runs it

`add` checks, as it is called: the node type exists; each keyword is one of its inputs or params;
an input gets a node (or `node.out("name")`) whose output socket type fits; a literal param value
passes the param's own validation (bounds, choices). Workflow params (`g.param`) bind as "$name".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from editgraph.errors import EditgraphError
from editgraph.graph.document import FORMAT


class BuildError(EditgraphError):
    """A node, input or param the builder cannot accept; says which and what was allowed."""


@dataclass(frozen=True)
class Param:
    """A workflow param, bound into node params as "$name"."""

    name: str

    @property
    def ref(self) -> str:
        return f"${self.name}"


@dataclass(frozen=True)
class Output:
    """One output of a node: what an input is wired to."""

    node_id: str
    output: str
    socket: Any  # SocketType

    @property
    def ref(self) -> str:
        return self.node_id if self.output == "" else f"{self.node_id}.{self.output}"


@dataclass(frozen=True)
class NodeHandle:
    """What Graph.add returns: wire it into later nodes, or pick a named output with .out()."""

    node_id: str
    node_type: str
    outputs: dict[str, Any]  # name -> SocketType, primary first

    def out(self, name: str) -> Output:
        if name not in self.outputs:
            raise BuildError(f"node '{self.node_id}' ({self.node_type}) has no output {name!r}; outputs: {list(self.outputs)}")
        return Output(self.node_id, name, self.outputs[name])

    def primary(self) -> Output:
        first = next(iter(self.outputs))
        return Output(self.node_id, "", self.outputs[first])


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class Graph:
    def __init__(self, name: str = "", description: str = ""):
        from editgraph.nodes.registry import load_builtin_nodes

        self.name = name
        self.description = description
        self._registry = load_builtin_nodes()
        self._params: dict[str, dict[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}

    def param(self, name: str, type: str, *, default: Any = ..., description: str = "", **bounds: Any) -> Param:
        """A workflow param (type int, float, bool, string, path or enum; bounds minimum, maximum,
        choices). Without a default it is required when the workflow runs."""
        from editgraph.graph.document import ParamSpec

        spec: dict[str, Any] = {"type": type, "description": description, **bounds}
        if default is not ...:
            spec["default"] = default
        try:
            ParamSpec.model_validate(spec)
        except ValidationError as exc:
            raise BuildError(f"param {name!r}: {exc.errors()[0]['msg']} (got {spec})") from None
        if name in self._params:
            raise BuildError(f"param {name!r} is defined twice")
        self._params[name] = {k: v for k, v in spec.items() if v != "" or k != "description"}
        return Param(name)

    def add(self, node_type: str, /, node_id: str | None = None, **fields: Any) -> NodeHandle:
        """Add a node; keywords are its inputs (a NodeHandle or Output) and params (values or Params)."""
        cls = self._registry.get(node_type)
        if cls is None:
            raise BuildError(f"unknown node type {node_type!r}{_suggest(node_type, self._registry)}")
        node_id = node_id or self._fresh_id(node_type)
        if node_id in self._nodes:
            raise BuildError(f"node id {node_id!r} is already used")
        where = f"node '{node_id}' ({node_type})"
        inputs: dict[str, str] = {}
        params: dict[str, Any] = {}
        fields_of = cls.Params.model_fields
        for key, value in fields.items():
            if key in cls.inputs:
                inputs[key] = self._wire(where, key, cls.inputs[key].socket, value)
            elif key in fields_of:
                params[key] = self._param_value(where, key, fields_of[key], value)
            else:
                allowed = [*cls.inputs, *fields_of]
                raise BuildError(f"{where}: no input or param {key!r}{_suggest(key, allowed)}; it takes inputs {list(cls.inputs)} and params {list(fields_of)}")
        missing = [n for n, spec in cls.inputs.items() if not spec.optional and n not in inputs]
        if missing:
            raise BuildError(f"{where}: input(s) {missing} must be connected")
        required = [n for n, f in fields_of.items() if f.is_required() and n not in params]
        if required:
            raise BuildError(f"{where}: param(s) {required} have no default and must be given")
        entry: dict[str, Any] = {"type": node_type}
        if params:
            entry["params"] = params
        if inputs:
            entry["inputs"] = inputs
        self._nodes[node_id] = entry
        return NodeHandle(node_id, node_type, dict(cls.outputs))

    def node(self, node_id: str) -> NodeHandle:
        """The handle of a node added earlier, by its id."""
        if node_id not in self._nodes:
            raise BuildError(f"no node {node_id!r} in this graph{_suggest(node_id, self._nodes)}")
        node_type = self._nodes[node_id]["type"]
        return NodeHandle(node_id, node_type, dict(self._registry[node_type].outputs))

    def document(self) -> dict[str, Any]:
        """The `editgraph/1` document: what validate, run and a saved PNG all take."""
        doc: dict[str, Any] = {"format": FORMAT, "name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["params"] = {k: dict(v) for k, v in self._params.items()}
        doc["nodes"] = {k: {f: (dict(v) if isinstance(v, dict) else v) for f, v in n.items()} for k, n in self._nodes.items()}
        return doc

    # --- checks ----------------------------------------------------------------------------------

    def _fresh_id(self, node_type: str) -> str:
        """'mask.feather' -> 'mask_feather', then 'mask_feather_2' ..."""
        stem, n = node_type.replace(".", "_"), 1
        candidate = stem
        while candidate in self._nodes:
            n += 1
            candidate = f"{stem}_{n}"
        return candidate

    def _wire(self, where: str, name: str, wanted: Any, value: Any) -> str:
        if isinstance(value, NodeHandle):
            value = value.primary()
        if not isinstance(value, Output):
            raise BuildError(f"{where}: input {name!r} takes a node (what Graph.add returned) or node.out(...), got {value!r}")
        if value.node_id not in self._nodes:
            raise BuildError(f"{where}: input {name!r} is wired to {value.node_id!r}, which is not in this graph")
        if value.socket != wanted:
            raise BuildError(f"{where}: input {name!r} takes {wanted}, but {value.ref!r} gives {value.socket}")
        return value.ref

    def _param_value(self, where: str, key: str, field: Any, value: Any) -> Any:
        if isinstance(value, Param):
            if value.name not in self._params:
                raise BuildError(f"{where}: param {key!r} binds ${value.name}, which was not declared with Graph.param")
            return value.ref
        if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
            raise BuildError(f"{where}: param {key!r}: use g.param({value[1:]!r}, ...) to bind a workflow param")
        try:
            TypeAdapter(field.annotation if not field.metadata else _annotated(field)).validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BuildError(f"{where}: param {key!r} = {value!r}: {err['msg']}") from None
        return list(value) if isinstance(value, tuple) else value


def _annotated(field: Any) -> Any:
    from typing import Annotated

    return Annotated[(field.annotation, *field.metadata)]
