"""Errors that reach the user. Each one says where (JSON path, node id and type) and what was wrong."""

from __future__ import annotations

from dataclasses import dataclass


class EditgraphError(Exception):
    """Base class: anything editgraph raises on purpose."""


@dataclass(frozen=True)
class Issue:
    """One problem in a workflow document, located by its JSON path."""

    path: str  # e.g. "nodes.soft.params.radius"
    message: str  # says the value received and what was allowed
    node_id: str | None = None
    node_type: str | None = None

    def __str__(self) -> str:
        where = self.path or "<document>"
        if self.node_id is not None:
            who = f"node '{self.node_id}'" + (f" ({self.node_type})" if self.node_type else "")
            return f"{where} [{who}]: {self.message}"
        return f"{where}: {self.message}"


class WorkflowInvalid(EditgraphError):
    """The document cannot run. Carries every problem found, not only the first."""

    def __init__(self, issues: list[Issue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        n = len(self.issues)
        lines = [f"{head}workflow is invalid ({n} problem{'s' if n != 1 else ''}):"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))


class NodeDefinitionError(EditgraphError):
    """A node class is malformed; raised at import/registration time."""


class NodeFailed(EditgraphError):
    """A node raised while running. Everything computed before it stays cached."""

    def __init__(self, node_id: str, node_type: str, cause: BaseException):
        self.node_id = node_id
        self.node_type = node_type
        self.cause = cause
        super().__init__(f"node '{node_id}' ({node_type}) failed: {type(cause).__name__}: {cause}")


class NodeError(EditgraphError):
    """Raised by a node's run() for bad input it can only see at run time (sizes, file contents)."""


class Cancelled(EditgraphError):
    """The run was cancelled cooperatively between steps."""
