"""What the executor tells its listeners: the CLI's progress display, tests, later a server.

Every cache decision is an event, so a test asserts exactly what ran and what was reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


@dataclass(frozen=True)
class RunPlanned:
    nodes: tuple[str, ...]  # the nodes the requested outputs need, in run order


# The two events every node sends are NamedTuples: as immutable as a frozen dataclass and built
# in a fifth of its time (0.4 against 2 us: a frozen dataclass sets each field through
# object.__setattr__), which was a fifth of what a cached node costs an identical re-run (issue 16).
class NodeStarted(NamedTuple):
    node_id: str
    node_type: str
    key: str


@dataclass(frozen=True)
class NodeProgress:
    node_id: str
    node_type: str
    step: int
    total: int
    # What the node has so far (a denoise's latents, (B, C, h, w)), for a live preview. Only valid
    # while the listener runs (the node goes on changing it); never stored, compared or printed.
    preview: Any = field(default=None, compare=False, repr=False)


class NodeFinished(NamedTuple):
    """A node is done. The same object is the node's record in the run's result
    (RunResult.records, executor/run.py's NodeRecord): one object a node, not two (issue 16)."""

    node_id: str
    node_type: str
    status: Literal["ran", "cached"]
    seconds: float
    key: str
    nbytes: int = 0  # size of its encoded outputs (0 when cached: nothing was produced)
    again: str | None = None  # why a node reported earlier in this run ran again (its value was gone)
    # paid engine nodes: the CallLog's calls, engine and scores (ran: paid now; cached: saved)
    calls: dict[str, Any] | None = None
    # Did this run give the outputs a disk entry? None: cached, nothing was decided this run.
    persisted: bool | None = None
    # When not persisted: why (per output for multi-output nodes); a persist.Reason, see why_not.
    reason: Any = None

    @property
    def type(self) -> str:
        return self.node_type

    @property
    def why_not(self) -> str | None:
        """Why the outputs got no disk entry, as a sentence (None: they did, or nothing was decided)."""
        from editgraph.executor.persist import reason_text

        return reason_text(self.reason)


@dataclass(frozen=True)
class NodeFailedEvent:
    node_id: str
    node_type: str
    error: str


@dataclass(frozen=True)
class ArtifactWritten:
    node_id: str
    path: str


Event = RunPlanned | NodeStarted | NodeProgress | NodeFinished | NodeFailedEvent | ArtifactWritten


class EventLog(list):
    """A listener that keeps every event; handy in tests and reports."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    def ran(self) -> list[str]:
        return [e.node_id for e in self if isinstance(e, NodeFinished) and e.status == "ran"]

    def cached(self) -> list[str]:
        return [e.node_id for e in self if isinstance(e, NodeFinished) and e.status == "cached"]
