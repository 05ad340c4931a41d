"""editgraph: image edits as JSON graphs of typed nodes, with every intermediate result cached."""

from editgraph.version import __version__

__all__ = ["__version__"]
