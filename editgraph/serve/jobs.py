"""From what a client sends to a graph the worker can run, and what the page needs to draw a form.

prepare() is the one gate every submission passes, at submit time and again in the worker (a job
may wait across a restart): the document is loaded and bound by the same code as `editgraph run`,
`upload:` references become the stored files, every file it would read must lie inside the
server's folders, and every input file must exist. Problems come back as WorkflowInvalid with JSON
paths, before the job is queued.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editgraph.errors import Issue, WorkflowInvalid
from editgraph.graph.document import Workflow, load_workflow, param_ref
from editgraph.serve import uploads
from editgraph.serve.config import ServeConfig
from editgraph.serve.security import check_paths


@dataclass(frozen=True)
class Submission:
    label: str  # a library name, or the document's own name
    document: dict[str, Any]  # with any node-level "random" seed replaced by its draw
    base_dir: str  # where the document's relative paths resolve
    params: dict[str, Any]  # the client's params, uploads resolved, "random" seeds drawn


def find_workflow(name: str, config: ServeConfig) -> tuple[dict[str, Any], Path]:
    """A bundled workflow by name (the server's library): (document, its folder)."""
    from editgraph import workflows

    path = workflows.find(name)
    if path is None:
        raise WorkflowInvalid([Issue("workflow", f"no bundled workflow {name!r}; this server has: {', '.join(workflows.names())}")])
    return load_workflow(path).to_dict(), path.parent


def submission(body_workflow: Any, params: dict[str, Any], config: ServeConfig) -> Submission:
    """Check a submission and fix what must not change between now and the run (seeds)."""
    if isinstance(body_workflow, str):
        document, base = find_workflow(body_workflow, config)
        label = body_workflow
    elif isinstance(body_workflow, dict):
        document, base = body_workflow, config.uploads_dir.resolve()
        label = str(body_workflow.get("name") or "workflow")
    else:
        raise WorkflowInvalid([Issue("workflow", f"expected a bundled workflow name or a workflow document, got {type(body_workflow).__name__}")])
    if not isinstance(params, dict):
        raise WorkflowInvalid([Issue("params", f"expected an object of param name -> value, got {type(params).__name__}")])
    params = resolve_uploads(params, config)
    graph = prepare(document, str(base), params, config, label)
    document = copy.deepcopy(document)
    for where, seed in graph.seeds.items():  # a re-run after a crash must draw the same noise
        if where.startswith("$"):
            params[where[1:]] = seed
        else:
            nid, fname = where.rsplit(".", 1)
            document["nodes"][nid]["params"][fname] = seed
    return Submission(label, document, str(base), params)


def resolve_uploads(params: dict[str, Any], config: ServeConfig) -> dict[str, Any]:
    out, issues = {}, []
    for name, value in params.items():
        if uploads.is_ref(value):
            try:
                value = str(uploads.resolve(value, config.uploads_dir))
            except uploads.UploadRefused as exc:
                issues.append(Issue(f"params.{name}", str(exc)))
        out[name] = value
    if issues:
        raise WorkflowInvalid(issues)
    return out


def prepare(document: dict[str, Any], base_dir: str, params: dict[str, Any], config: ServeConfig, label: str | None = None):
    """A BoundGraph ready to run, or WorkflowInvalid naming every problem."""
    from editgraph.graph.validate import bind
    from editgraph.graph.sources import check_sources

    workflow = load_workflow(document)
    base = Path(base_dir)
    graph = bind(workflow, params, base_dir=base, cwd=base, source=label)
    problems = check_paths(graph, config.read_roots())
    if problems:  # before check_sources: never say whether a file outside exists
        raise WorkflowInvalid(problems, label)
    problems = check_sources(graph, deep=False)  # input files exist; models are checked as they load
    if problems:
        raise WorkflowInvalid(problems, label)
    return graph


# --- describing workflows for the page ----------------------------------------------------------


def describe(workflow: Workflow) -> dict[str, Any]:
    """The typed params with the widget each wants, and the graph laid out in layers."""
    from editgraph.graph import render

    return {
        "name": workflow.name,
        "description": workflow.description,
        "params": [_param(name, spec, workflow) for name, spec in workflow.params.items()],
        "nodes": [{"id": nid, "type": spec.type} for nid, spec in workflow.nodes.items()],
        "edges": [{"from": src, "to": dst, "input": name} for src, dst, name, _ in render.edges(workflow)],
        "layers": render.layers(workflow),
    }


def _param(name: str, spec, workflow: Workflow) -> dict[str, Any]:
    from editgraph.nodes.registry import SEED, field_marks, load_builtin_nodes

    registry = load_builtin_nodes()
    bound = [(nid, n.type, f) for nid, n in workflow.nodes.items() for f, raw in n.params.items() if param_ref(raw) == name]
    is_seed = any(f in field_marks(registry[t].Params, SEED) for _, t, f in bound if t in registry)
    reads = {t for _, t, _ in bound}
    if spec.type == "path":
        widget = "mask" if "mask.load" in reads else "image" if "image.load" in reads else "file"
    elif spec.type == "int" and is_seed:
        widget = "seed"
    elif spec.type in ("int", "float"):
        widget = "slider" if spec.minimum is not None and spec.maximum is not None else "number"
    elif spec.type == "enum":
        widget = "select"
    elif spec.type == "bool":
        widget = "checkbox"
    else:
        widget = "text"
    out = {"name": name, "type": spec.type, "widget": widget, "description": spec.description, "required": spec.required}
    if not spec.required:
        out["default"] = spec.default
    for key in ("minimum", "maximum", "choices"):
        if getattr(spec, key) is not None:
            out[key] = getattr(spec, key)
    return out
