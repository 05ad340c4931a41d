"""The base of the nodes that read one picture file (image.load, mask.load).

It sits in the node API, not in a built-in node module, so neither node's module imports the
other's; nodes/versions.py follows a node's base classes into their own module, so a change here
changes both nodes' code hashes.
"""

from __future__ import annotations

from editgraph.nodes.registry import Node, NodeParams


class PictureFile(Node):
    """A node that reads one picture file, its `path` param: keyed by the file's content, and
    checked before any run (the file exists, its size and header are within the budgets; nothing
    is decoded). image.load and mask.load."""

    @classmethod
    def source_token(cls, params: NodeParams) -> str:
        from editgraph.ops.imaging import file_hash

        return file_hash(params.path)

    @classmethod
    def check_sources(cls, params, *, deep=True, settings=None):
        from editgraph.ops.budget import image_problem
        from editgraph.settings import Settings

        problems = super().check_sources(params, deep=deep, settings=settings)
        path = getattr(params, "path", None)  # unset while a required $param has no value yet
        if problems or not isinstance(path, str) or not path:
            return problems
        problem = image_problem(path, settings or Settings.from_env())
        return [("path", problem)] if problem else []
