"""Bind a workflow's params and check the whole graph before anything runs.

bind() turns a Workflow into a BoundGraph the executor can run: every node's type resolved,
params validated by the node's own pydantic model, "$param" references and --set values
substituted, "random" seeds drawn, inputs resolved to (node, output) pairs, nodes in topological
order. Every problem is collected (each check is one small function) and raised together as
WorkflowInvalid, so an author fixes them in one pass.
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from editgraph.collector import collector_paused
from editgraph.errors import Issue, WorkflowInvalid
from editgraph.graph import topology
from editgraph.graph.document import ParamSpec, Workflow, describe_pydantic_error, param_ref
from editgraph.nodes.registry import INPUT_PATH, SEED, Node, NodeParams, field_marks, load_nodes

# Tracked objects parsing and binding make per node and keep (a no-op chain's: ~11): the
# collector waits for them (collector_paused's `expect`).
BOUND_PER_NODE = 15
_UNBOUND = object()  # a required workflow param with no value yet (validate without --set)
_SEED_RANGE = 2**32  # seeds drawn at run time fit a torch.Generator and every peer's UI


@dataclass(frozen=True)
class BoundNode:
    id: str
    cls: type[Node]
    params: NodeParams
    inputs: dict[str, tuple[str, str]]  # input name -> (source node id, output name)

    @property
    def type(self) -> str:
        return self.cls.type


@dataclass
class BoundGraph:
    workflow: Workflow
    nodes: dict[str, BoundNode]  # topological order
    params: dict[str, Any]  # resolved workflow params (drawn seeds included)
    seeds: dict[str, int] = field(default_factory=dict)  # "node.field" or "$param" -> seed drawn at bind time
    unbound: list[str] = field(default_factory=list)  # required params left without a value
    # What higher layers derive from the graph once and reuse on every run of it (the executor's
    # plan: order, consumers, key prefixes). The graph is never changed after bind().
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def upstream(self, roots: Iterable[str], *, include_roots: bool = False) -> list[str]:
        """The nodes the roots depend on (and the roots, if asked), in run order."""
        roots = list(roots)
        seen = topology.ancestors(roots, lambda nid: (src for src, _ in self.nodes[nid].inputs.values()))
        if include_roots:
            seen.update(roots)
        return [nid for nid in self.nodes if nid in seen]

    def sinks(self) -> list[str]:
        """The nodes no other node consumes (a run's default targets), in run order."""
        consumed = {src for node in self.nodes.values() for src, _ in node.inputs.values()}
        return [nid for nid in self.nodes if nid not in consumed]

    def resolved_document(self) -> dict[str, Any]:
        """The workflow with every param default set to the value used and every drawn seed written
        in: running it again reproduces this run exactly."""
        doc = self.workflow.to_dict()
        for name, value in self.params.items():
            doc["params"][name]["default"] = value
        for node_id, node in self.nodes.items():
            doc["nodes"][node_id]["version"] = node.cls.version
        for where, seed in self.seeds.items():
            if where.startswith("$"):
                continue  # a workflow param's draw: its default above already holds it
            node_id, fname = where.rsplit(".", 1)
            doc["nodes"][node_id].setdefault("params", {})[fname] = seed
        return doc


def bind(
    workflow: Workflow,
    overrides: dict[str, Any] | None = None,
    *,
    base_dir: Path | None = None,
    cwd: Path | None = None,
    require_values: bool = True,
    rng: random.Random | None = None,
    source: str | None = None,
) -> BoundGraph:
    """Validate and bind. `overrides` are --set values (strings are parsed by the param's type;
    relative paths resolve against `cwd`); relative paths in the document resolve against `base_dir`."""
    # a node's params and inputs live on: young collections would only rescan them
    with collector_paused(expect=BOUND_PER_NODE * len(workflow.nodes)):
        return _bind(workflow, overrides, base_dir, cwd, require_values, rng, source)


def _bind(workflow: Workflow, overrides: dict[str, Any] | None, base_dir: Path | None, cwd: Path | None,
          require_values: bool, rng: random.Random | None, source: str | None) -> BoundGraph:
    registry = load_nodes(spec.type for spec in workflow.nodes.values())
    base_dir = (base_dir or Path.cwd()).resolve()
    cwd = (cwd or Path.cwd()).resolve()
    rng = rng or random.SystemRandom()
    issues: list[Issue] = []

    issues += _check_param_specs(workflow.params)
    seeds: dict[str, int] = {}  # "node.field" (or "$param") -> seed drawn now
    values, unbound = _resolve_workflow_params(workflow.params, overrides or {}, base_dir, cwd, rng, _non_seed_params(workflow, registry), seeds, issues)
    if unbound and require_values:
        for name in unbound:
            spec = workflow.params[name]
            issues.append(Issue(f"params.{name}", f"required {spec.type} param has no value; set it with --set {name}=..."))

    classes: dict[str, type[Node]] = {}
    for node_id, spec in workflow.nodes.items():
        issues += _check_node_id(node_id)
        cls = registry.get(spec.type)
        if cls is None:
            issues.append(_unknown_type(node_id, spec.type, registry))
        else:
            classes[node_id] = cls
            issues += _check_version(node_id, cls, spec.version)

    bound_params: dict[str, NodeParams] = {}
    for node_id, cls in classes.items():
        params = _bind_params(node_id, cls, workflow, values, base_dir, rng, seeds, issues)
        if params is not None:
            bound_params[node_id] = params

    inputs = {nid: _resolve_inputs(nid, cls, workflow, classes, issues) for nid, cls in classes.items()}
    order = _topological_order(workflow, inputs, issues)

    if issues:
        raise WorkflowInvalid(issues, source)
    nodes = {nid: BoundNode(nid, classes[nid], bound_params[nid], inputs[nid]) for nid in order}
    return BoundGraph(workflow, nodes, {k: v for k, v in values.items() if v is not _UNBOUND}, seeds, unbound)


def validate(workflow: Workflow, overrides: dict[str, Any] | None = None, **kw: Any) -> list[Issue]:
    """Every problem in the workflow, or [] (required params may stay unset)."""
    try:
        bind(workflow, overrides, require_values=False, rng=random.Random(0), **kw)
    except WorkflowInvalid as exc:
        return exc.issues
    return []


# --- workflow params -------------------------------------------------------------------------


def _check_param_specs(specs: dict[str, ParamSpec]) -> list[Issue]:
    issues = []
    for name, spec in specs.items():
        path = f"params.{name}"
        if not name.isidentifier():
            issues.append(Issue(path, f"param names must be identifiers (letters, digits, _), got {name!r}"))
        if spec.type == "enum" and not spec.choices:
            issues.append(Issue(f"{path}.choices", "an enum param needs a non-empty list of choices"))
        if spec.type not in ("int", "float") and (spec.minimum is not None or spec.maximum is not None):
            issues.append(Issue(path, f"minimum/maximum apply to int and float params, not {spec.type}"))
        if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
            issues.append(Issue(path, f"minimum {spec.minimum} is greater than maximum {spec.maximum}"))
        if not spec.required:
            try:
                _coerce(spec, spec.default, from_text=False)
            except ValueError as exc:
                issues.append(Issue(f"{path}.default", str(exc)))
    return issues


def _coerce(spec: ParamSpec, value: Any, *, from_text: bool) -> Any:
    """A workflow param value of the declared type, or ValueError saying what was allowed."""
    t = spec.type
    if t == "int":
        if value == "random":
            return value  # a seed drawn at bind time
        if from_text and isinstance(value, str):
            try:
                value = int(value, 10)
            except ValueError:
                raise ValueError(f"expected an integer (or 'random' for a seed), got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
    elif t == "float":
        if from_text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
    elif t == "bool":
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"expected true or false, got {value!r}")
            value = lowered in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
    elif t in ("string", "path"):
        if not isinstance(value, str):
            raise ValueError(f"expected a {'path' if t == 'path' else 'string'}, got {value!r}")
        if t == "path" and (not value or "\x00" in value):
            raise ValueError(f"expected a path, got {value!r}")
    elif t == "enum":
        if value not in (spec.choices or []):
            raise ValueError(f"expected one of {spec.choices}, got {value!r}")
    if t in ("int", "float"):
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(f"must be ≥ {spec.minimum:g}, got {value!r}")
        if spec.maximum is not None and value > spec.maximum:
            raise ValueError(f"must be ≤ {spec.maximum:g}, got {value!r}")
    return value


def _non_seed_params(workflow: Workflow, registry: dict[str, type[Node]]) -> dict[str, str]:
    """Workflow params bound to a field that is not a seed: {param: "node.field"}. "random" is
    refused for these (it would draw a number the field's bounds never meant)."""
    found: dict[str, str] = {}
    for node_id, spec in workflow.nodes.items():
        cls = registry.get(spec.type)
        seed_fields = set(field_marks(cls.Params, SEED)) if cls else set()
        for fname, raw in spec.params.items():
            pname = param_ref(raw)
            if pname is not None and fname not in seed_fields:
                found.setdefault(pname, f"{node_id}.{fname}")
    return found


def _resolve_workflow_params(specs, overrides, base_dir, cwd, rng, non_seed, seeds, issues):
    values: dict[str, Any] = {}
    unbound = []
    for name in overrides:
        if name not in specs:
            close = difflib.get_close_matches(name, list(specs), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            allowed = ", ".join(specs) or "(none)"
            issues.append(Issue(f"--set {name}", f"unknown workflow param; {hint}this workflow's params: {allowed}"))
    for name, spec in specs.items():
        if name in overrides:
            raw, from_text, base = overrides[name], isinstance(overrides[name], str), cwd
        elif not spec.required:
            raw, from_text, base = spec.default, False, base_dir
        else:
            values[name] = _UNBOUND
            unbound.append(name)
            continue
        where = f"--set {name}" if name in overrides else f"params.{name}.default"
        try:
            value = _coerce(spec, raw, from_text=from_text)
        except ValueError as exc:
            if name in overrides:  # a bad default is already reported by _check_param_specs
                issues.append(Issue(where, f"{spec.type} param: {exc}"))
            values[name] = _UNBOUND
            continue
        if value == "random":
            if name in non_seed:
                issues.append(Issue(where, f"int param: 'random' is only for seeds, and ${name} sets {non_seed[name]}, which is not one"))
                values[name] = _UNBOUND
                continue
            low = int(spec.minimum) if spec.minimum is not None else 0
            high = int(spec.maximum) if spec.maximum is not None else _SEED_RANGE - 1
            value = seeds[f"${name}"] = rng.randint(low, high)  # within the param's own bounds
        if spec.type == "path":
            value = str((base / value).resolve()) if not Path(value).is_absolute() else value
        values[name] = value
    return values, unbound


# --- nodes -----------------------------------------------------------------------------------


def _check_node_id(node_id: str) -> list[Issue]:
    if node_id.replace("_", "a").replace("-", "a").isalnum() and not node_id[0].isdigit():
        return []
    return [Issue(f"nodes.{node_id}", f"node ids are letters, digits, '_' and '-' (no dots), starting with a letter; got {node_id!r}", node_id)]


def _unknown_type(node_id: str, type_name: str, registry: dict[str, type[Node]]) -> Issue:
    close = difflib.get_close_matches(type_name, list(registry), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; run `editgraph nodes` for the list"
    return Issue(f"nodes.{node_id}.type", f"unknown node type {type_name!r}{hint}", node_id, type_name)


def _check_version(node_id: str, cls: type[Node], wanted: str | None) -> list[Issue]:
    """A workflow pinned to another major version of a node would not reproduce its pixels."""
    if wanted is None or wanted.split(".")[0] == cls.version.split(".")[0]:
        return []
    return [
        Issue(
            f"nodes.{node_id}.version",
            f"written for {cls.type} {wanted}; this editgraph has {cls.version}, a different major version whose output differs",
            node_id,
            cls.type,
        )
    ]


def _bind_params(node_id, cls, workflow, values, base_dir, rng, seeds, issues) -> NodeParams | None:
    spec = workflow.nodes[node_id]
    data: dict[str, Any] = {}
    bound_from: dict[str, str] = {}
    skipped: set[str] = set()
    path_fields = set(field_marks(cls.Params, INPUT_PATH))
    for fname, raw in spec.params.items():
        pname = param_ref(raw)
        if isinstance(raw, str) and raw.startswith("$$"):
            data[fname] = raw[1:]
        elif pname is not None:
            if pname not in workflow.params:
                close = difflib.get_close_matches(pname, list(workflow.params), n=3)
                hint = f"; did you mean {', '.join('$' + c for c in close)}?" if close else ""
                issues.append(Issue(f"nodes.{node_id}.params.{fname}", f"unknown workflow param {raw!r}{hint}", node_id, cls.type))
                skipped.add(fname)
            elif values.get(pname, _UNBOUND) is _UNBOUND:
                skipped.add(fname)
            else:
                data[fname] = values[pname]
                bound_from[fname] = pname
        elif fname in path_fields and isinstance(raw, str) and "\x00" in raw:
            issues.append(Issue(f"nodes.{node_id}.params.{fname}", f"expected a path, got {raw!r}", node_id, cls.type))
            skipped.add(fname)
        elif fname in path_fields and isinstance(raw, str) and raw and not Path(raw).is_absolute():
            data[fname] = str((base_dir / raw).resolve())
        else:
            data[fname] = raw
    try:
        params = cls.Params.model_validate(data)
    except ValidationError as exc:
        reported = len(issues)
        for err in exc.errors(include_url=False):
            fname = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "missing" and fname in skipped:
                continue
            path = ".".join(str(p) for p in (f"nodes.{node_id}.params", *err["loc"]))
            msg = describe_pydantic_error(err)
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(cls.Params.model_fields) or "(none)"
                close = difflib.get_close_matches(fname, list(cls.Params.model_fields), n=1)
                msg += (f"; did you mean {close[0]!r}?" if close else "") + f" {cls.type} params: {allowed}"
            if fname in bound_from:
                msg += f" (from ${bound_from[fname]})"
            issues.append(Issue(path, msg, node_id, cls.type))
        if len(issues) == reported:  # only unbound required params: valid as a recipe, not runnable
            return cls.Params.model_construct(**data)
        return None
    draws = {f: rng.randrange(_SEED_RANGE) for f in field_marks(cls.Params, SEED) if getattr(params, f) == "random"}
    if draws:
        for fname, seed in draws.items():
            seeds[f"{node_id}.{fname}"] = seed
        params = params.model_copy(update=draws)
    return params


def _resolve_inputs(node_id, cls, workflow, classes, issues) -> dict[str, tuple[str, str]]:
    spec = workflow.nodes[node_id]
    resolved: dict[str, tuple[str, str]] = {}
    for name, ref in spec.inputs.items():
        path = f"nodes.{node_id}.inputs.{name}"
        want = cls.inputs.get(name)
        if want is None:
            allowed = ", ".join(f"{i.name}: {i.socket}" for i in cls.inputs.values()) or "(none)"
            issues.append(Issue(path, f"{cls.type} has no input {name!r}; its inputs: {allowed}", node_id, cls.type))
            continue
        src_id, _, out_name = ref.partition(".")
        if src_id not in workflow.nodes:
            close = difflib.get_close_matches(src_id, list(workflow.nodes), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            issues.append(Issue(path, f"reference {ref!r} names no node in this workflow{hint}", node_id, cls.type))
            continue
        src_cls = classes.get(src_id)
        if src_cls is None:
            continue  # its unknown type is already reported
        if not out_name:
            out_name = next(iter(src_cls.outputs))
        got = src_cls.outputs.get(out_name)
        if got is None:
            outs = ", ".join(f"{n}: {s}" for n, s in src_cls.outputs.items())
            issues.append(Issue(path, f"node '{src_id}' ({src_cls.type}) has no output {out_name!r}; its outputs: {outs}", node_id, cls.type))
            continue
        if got != want.socket:
            issues.append(
                Issue(path, f"socket type mismatch: '{ref}' gives {got.name}, input {name!r} takes {want.socket.name}", node_id, cls.type)
            )
            continue
        resolved[name] = (src_id, out_name)
    for name, inp in cls.inputs.items():
        if not inp.optional and name not in spec.inputs:
            issues.append(Issue(f"nodes.{node_id}.inputs", f"missing required input {name!r} ({inp.socket.name})", node_id, cls.type))
    return resolved


def _topological_order(workflow, inputs, issues) -> list[str]:
    """Nodes in run order, or [] with every cycle reported. Cycles are looked for over every
    reference the document makes to an existing node, so one through a node of unknown type or
    through an edge rejected above (a type mismatch, a missing output) is reported too."""
    # (source, target) -> the input name of the first reference that makes that edge
    referenced: dict[tuple[str, str], str] = {}
    for nid, spec in workflow.nodes.items():
        for name, ref in spec.inputs.items():
            src = ref.partition(".")[0]
            if src in workflow.nodes:
                referenced.setdefault((src, nid), name)
    for cycle in topology.cycles(workflow.nodes, referenced):
        # starts at its smallest id (topology.cycles); the path names the edge leaving that node
        src, dst = cycle[0], cycle[1 % len(cycle)]
        chain = " -> ".join(cycle + [cycle[0]])
        issues.append(Issue(f"nodes.{dst}.inputs.{referenced[(src, dst)]}", f"cycle: {chain}", dst, workflow.nodes[dst].type))
    if issues:
        return []
    edges = [(src, nid) for nid, ins in inputs.items() for src, _ in ins.values()]
    # Sorted among equals so the order, and so event order, is the same every run.
    return topology.order(workflow.nodes, edges) or []
