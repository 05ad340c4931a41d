"""JSON Schema of the workflow document, with each registered node type's params, for editors.

A file that says `"$schema": "<path>/editgraph.schema.json"` gets completion of node types and
their params, and squiggles under misspelled ones, in any editor that speaks JSON Schema.
"""

from __future__ import annotations

from typing import Any

from editgraph.graph.document import FORMAT, Workflow
from editgraph.nodes.registry import load_builtin_nodes

_BINDING = {"type": "string", "pattern": r"^\$[A-Za-z_][A-Za-z0-9_]*$", "description": "a workflow param: $name"}
_REFERENCE = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_]*)?$", "description": "'node' or 'node.output'"}


def workflow_schema() -> dict[str, Any]:
    schema = Workflow.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    variants = []
    for type_name, cls in sorted(load_builtin_nodes().items()):
        params = cls.Params.model_json_schema()
        props = {}
        for name, prop in params.get("properties", {}).items():
            props[name] = {"anyOf": [prop, _BINDING], **{k: prop[k] for k in ("description", "default") if k in prop}}
        defs.update(params.pop("$defs", {}))
        ident = "node_" + type_name.replace(".", "_")
        defs[ident] = {
            "type": "object",
            "description": (cls.__doc__ or "").strip().splitlines()[0],
            "properties": {
                "type": {"const": type_name},
                "version": {"type": "string", "description": f"written for {type_name} {cls.version}; another major version is refused"},
                "params": {"type": "object", "properties": props, "additionalProperties": False},
                "inputs": {
                    "type": "object",
                    "properties": {n: {**_REFERENCE, "description": f"{i.socket.name}{' (optional)' if i.optional else ''}"} for n, i in cls.inputs.items()},
                    "additionalProperties": False,
                },
                "note": {"type": "string"},
            },
            "required": ["type"],
            "additionalProperties": False,
        }
        variants.append({"$ref": f"#/$defs/{ident}"})
    schema["properties"]["nodes"] = {"type": "object", "additionalProperties": {"oneOf": variants}}
    schema["properties"]["format"] = {"const": FORMAT}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "editgraph workflow"
    return schema
