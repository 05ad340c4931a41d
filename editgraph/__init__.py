"""editgraph: image edits as JSON graphs of typed nodes, with every intermediate result cached.

The public API (imported on first use, so `import editgraph` stays cheap):

    open_workflow(source)          a file, a bundled name, an image editgraph wrote, a dict, a Graph
    run(workflow, params, out=...) -> Result (written files, report, values)
    Graph                          the typed builder of editgraph/1 documents
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from editgraph.version import __version__

if TYPE_CHECKING:
    from editgraph.api import Result, Workflow, open_workflow, run
    from editgraph.graph.builder import Graph

__all__ = ["__version__", "open_workflow", "run", "Workflow", "Result", "Graph"]

_LAZY = {
    "open_workflow": "editgraph.api",
    "run": "editgraph.api",
    "Workflow": "editgraph.api",
    "Result": "editgraph.api",
    "Graph": "editgraph.graph.builder",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'editgraph' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
