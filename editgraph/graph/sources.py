"""What a workflow reads (input files, models), checked before anything runs: by `validate`,
and by the executor at the start of every run, so a missing file or a model whose files differ
from the hash the workflow pins is refused before the first node, never after a long denoise."""

from __future__ import annotations

from editgraph.errors import Issue
from editgraph.graph.document import param_ref


def check_sources(graph, *, deep: bool = True, settings=None) -> list[Issue]:
    """Every node's Node.check_sources, as Issues with JSON paths, in document order (the order an
    author reads them in). deep=False checks only that input files exist (run does the rest as
    nodes load)."""
    issues: list[Issue] = []
    for nid in graph.workflow.nodes:
        node = graph.nodes[nid]
        raw = graph.workflow.nodes[nid].params
        if any(not hasattr(node.params, f) for f in node.cls.Params.model_fields):
            continue  # a required $param still to be set (validate before --set): nothing to look for yet
        for fname, problem in node.cls.check_sources(node.params, deep=deep, settings=settings):
            bound = param_ref(raw.get(fname))
            via = f" (from ${bound})" if bound is not None else ""
            issues.append(Issue(f"nodes.{nid}.params.{fname}", f"{problem}{via}", nid, node.type))
    return issues
