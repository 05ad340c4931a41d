"""The workflow document, format `editgraph/1`: what runs, what is shared, what a PNG carries.

    {"format": "editgraph/1", "name": ..., "description": ...,
     "params": {"seed": {"type": "int", "default": 0, "description": ...}},
     "nodes":  {"photo": {"type": "image.load", "params": {"path": "$image"}},
                "small": {"type": "image.resize", "inputs": {"image": "photo"}, ...}}}

An input is "node_id" (the node's primary output) or "node_id.output_name"; "$name" as a whole
param value binds a workflow param ("$$..." is a literal string starting with "$").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from editgraph.errors import Issue, WorkflowInvalid

FORMAT = "editgraph/1"
READABLE_FORMATS = (FORMAT,)

ParamType = Literal["int", "float", "bool", "string", "path", "enum"]


class ParamSpec(BaseModel):
    """A workflow parameter: what a user may change with --set without editing the graph."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ParamType = Field(description="int, float, bool, string, path (a file to read) or enum")
    description: str = Field("", description="shown by `editgraph show` and in errors")
    default: Any = Field(None, description="used when a run does not set the param; absent = required")
    minimum: float | None = Field(None, description="int/float: smallest allowed value")
    maximum: float | None = Field(None, description="int/float: largest allowed value")
    choices: list[str] | None = Field(None, description="enum: the allowed values")

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class NodeSpec(BaseModel):
    """One node: its type, its params (literal values or "$param"), and where its inputs come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="a registered node type, e.g. 'mask.feather'")
    version: str | None = Field(None, description="the node type's version this was written for; a different major version is refused")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="input name -> 'node' or 'node.output'")
    note: str | None = Field(None, description="free text for people reading the workflow")


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_url: str | None = Field(None, alias="$schema", description="for editors: the JSON Schema")
    format: str = Field(FORMAT, description=f"document format; this version reads {', '.join(READABLE_FORMATS)}")
    name: str = ""
    description: str = ""
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    nodes: dict[str, NodeSpec]

    def to_dict(self) -> dict[str, Any]:
        """The document as written: only the fields that were set, so load -> save -> load is identity."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        from editgraph.atomic import write_atomic

        write_atomic(Path(path), self.to_json().encode())


def param_ref(raw: Any) -> str | None:
    """The workflow param a raw node param value binds ("$name" -> "name"), or None for a literal
    (including "$$...", an escaped string that starts with "$")."""
    if isinstance(raw, str) and raw.startswith("$") and not raw.startswith("$$"):
        return raw[1:]
    return None


def load_workflow(source: str | Path | dict[str, Any], *, text: bool = False) -> Workflow:
    """Load a document from a file path, a JSON string (text=True) or a dict.

    Raises WorkflowInvalid listing every structural problem (bad JSON, unknown fields, wrong
    format); graph-level checks (node types, params, sockets, cycles) live in validate.py.
    """
    label = None
    if isinstance(source, dict):
        data = source
    else:
        if text:
            raw = str(source)
        else:
            label = str(source)
            try:
                raw = Path(source).read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not an error
            except (OSError, UnicodeDecodeError) as exc:
                raise WorkflowInvalid([Issue("", f"cannot read workflow file: {exc}")], label) from None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WorkflowInvalid(
                [Issue("", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")], label
            ) from None
        except RecursionError:
            raise WorkflowInvalid([Issue("", "not a workflow: JSON nested too deeply")], label) from None
    if not isinstance(data, dict):
        raise WorkflowInvalid([Issue("", f"a workflow must be a JSON object, got {type(data).__name__}")], label)
    fmt = data.get("format", FORMAT)
    if fmt not in READABLE_FORMATS:
        raise WorkflowInvalid(
            [Issue("format", f"unknown or newer format {fmt!r}; this version of editgraph reads {', '.join(READABLE_FORMATS)}")],
            label,
        )
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise WorkflowInvalid(issues_from_pydantic(exc, prefix=(), nodes=data.get("nodes")), label) from None


def issues_from_pydantic(exc: ValidationError, prefix: tuple, nodes: Any = None) -> list[Issue]:
    """Turn pydantic errors into Issues with dotted JSON paths, node id/type and the value received."""
    issues = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        node_id = node_type = None
        if len(loc) >= 2 and loc[0] == "nodes":
            node_id = str(loc[1])
            if isinstance(nodes, dict) and isinstance(nodes.get(node_id), dict):
                t = nodes[node_id].get("type")
                node_type = t if isinstance(t, str) else None
        msg = describe_pydantic_error(err)
        issues.append(Issue(".".join(str(p) for p in loc), msg, node_id, node_type))
    return issues


def describe_pydantic_error(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field (value {_short(err.get('input'))})"
    msg = err["msg"].removeprefix("Value error, ")  # a validator's own ValueError says it all
    return f"{msg[0].lower()}{msg[1:]}, got {_short(err.get('input'))}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
