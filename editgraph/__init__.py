"""editgraph: image edits as JSON graphs of typed nodes, with every intermediate result cached."""

__version__ = "0.1.0"
