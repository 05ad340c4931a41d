"""The error every model problem raises (also importable as editgraph.models.loader.ModelError)."""

from __future__ import annotations

from editgraph.errors import NodeError


class ModelError(NodeError):
    """A model is missing, incomplete or unreadable. The message names the path and what is wrong."""
