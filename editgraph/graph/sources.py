"""What a workflow reads (input files, models), checked before anything runs: by `validate`,
and by the executor at the start of every run, so a missing file or a model whose files differ
from the hash the workflow pins is refused before the first node, never after a long denoise."""

from __future__ import annotations

from editgraph.errors import Issue
from editgraph.graph.document import param_ref
from editgraph.nodes.registry import INPUT_PATH, Node, field_marks


def _reads(cls: type[Node]) -> bool:
    """Whether the class has anything to check: its own check_sources, InputPath params, a size its
    params plan (planned_size) or the model kinds it can run (model_kinds)."""
    return (
        cls.check_sources.__func__ is not Node.check_sources.__func__
        or cls.planned_size.__func__ is not Node.planned_size.__func__
        or cls.model_kinds is not None
        or bool(field_marks(cls.Params, INPUT_PATH))
    )


_KINDS = {
    "base": "an ordinary (4-channel) model",
    "inpaint": "an inpainting (9-channel) model",
    "instruct": "an InstructPix2Pix (8-channel) model: use the `instruct` node",
    "flow": "a flow-matching edit model (Flux 2, Flux Kontext, Qwen-Image-Edit): use the flow.* nodes",
}

_SHORT = {"base": "ordinary", "inpaint": "inpainting", "instruct": "InstructPix2Pix",
          "flow": "flow-matching edit (Flux 2, Flux Kontext, Qwen-Image-Edit)"}


def _model_source(graph, ref: str) -> tuple[str, list[str]]:
    """The node a model input comes from, looking through nodes that wrap a model (model.lora:
    Node.wraps_model) to the one that loads it; and the wrapping nodes passed on the way."""
    via: list[str] = []
    src = graph.nodes[ref]
    while src.cls.wraps_model and src.cls.wraps_model in src.inputs and ref not in via:
        via.append(ref)
        ref = src.inputs[src.cls.wraps_model][0]
        src = graph.nodes[ref]
    return ref, via


def _model_wiring(graph, nid: str, node) -> list[Issue]:
    """A model wired into a node that cannot run its kind (Node.model_kinds), where the model's
    kind is known from its source node's params (Node.model_kind), also through LoRA nodes."""
    kinds = node.cls.model_kinds
    ref = node.inputs.get("model")
    if kinds is None or ref is None:
        return []
    origin, via = _model_source(graph, ref[0])
    src = graph.nodes[origin]
    facts = src.cls.model_kind(src.params)
    if facts is None or facts[1] in kinds:
        return []
    name, kind = facts
    takes = " or ".join(sorted(_SHORT.get(k, k) for k in kinds))
    through = "".join(f" through '{v}' ({graph.nodes[v].type})" for v in reversed(via))
    return [Issue(
        f"nodes.{nid}.inputs.model",
        f"{node.type} cannot run model {name!r} from '{origin}'{through}, {_KINDS.get(kind, kind)}; it takes {takes} models",
        nid, node.type,
    )]


def check_sources(graph, *, deep: bool = True, settings=None) -> list[Issue]:
    """Every node's Node.check_sources, as Issues with JSON paths, in document order (the order an
    author reads them in), and every picture size a node's params ask for (Node.planned_size)
    against the pixel budget. deep=False checks only that input files exist (run does the rest as
    nodes load)."""
    from editgraph.ops.budget import pixels_problem
    from editgraph.settings import Settings

    settings = settings or Settings.from_env()
    issues: list[Issue] = []
    # Only nodes that read something can have a problem; which those are is fixed per graph, so
    # re-runs of a large graph check its few readers, not every node.
    readers = graph.derived.get("sources.readers")
    if readers is None:
        readers = graph.derived["sources.readers"] = [nid for nid in graph.workflow.nodes if _reads(graph.nodes[nid].cls)]
    for nid in readers:
        node = graph.nodes[nid]
        raw = graph.workflow.nodes[nid].params
        if any(not hasattr(node.params, f) for f in node.cls.Params.model_fields):
            continue  # a required $param still to be set (validate before --set): nothing to look for yet
        for fname, problem in node.cls.check_sources(node.params, deep=deep, settings=settings):
            bound = param_ref(raw.get(fname))
            via = f" (from ${bound})" if bound is not None else ""
            issues.append(Issue(f"nodes.{nid}.params.{fname}", f"{problem}{via}", nid, node.type))
        issues += _model_wiring(graph, nid, node)
        size = node.cls.planned_size(node.params, frozenset(node.inputs))
        problem = pixels_problem(size[0], size[1], settings) if size is not None else None
        if problem is not None:
            issues.append(Issue(f"nodes.{nid}.params", f"its output would be at least {problem.replace(' is over', ', over', 1)}", nid, node.type))
    return issues
