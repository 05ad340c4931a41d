"""The run report: one builder for the CLI, the Python API, batches and the server.

`run_report()` describes one run (each node's status, seconds and key, whether its outputs were
stored on disk and why not, the params and seeds, the files written, the device);
`environment()` is the part every report shares.
"""

from __future__ import annotations

from typing import Any


def environment(device: Any = None, offload: str = "none", uses_torch: bool = True) -> dict[str, Any]:
    """What decides bit-identity besides the workflow: torch's thread count and the device; and
    the CPU offload mode, which does not (recorded so a slow run on a small card explains itself).
    uses_torch False (no node of the run takes torch tensors): the thread count is None."""
    from editgraph.executor.devices import torch_threads
    from editgraph.version import __version__

    return {
        "torch_threads": torch_threads(uses_torch),
        "device": str(device) if device is not None else "cpu",
        "offload": offload,
        "editgraph": __version__,
    }


def node_report(record) -> dict[str, Any]:
    """A node's line: status, seconds, key; for a node that ran, whether its outputs got a disk
    entry (`persisted`) and, if not, why (`why_not`)."""
    line: dict[str, Any] = {
        "type": record.type, "status": record.status, "seconds": round(record.seconds, 6), "key": record.key,
        # engine nodes: the engine, cost (paid now, or saved when cached), calls, scores
        **{k: v for k, v in (record.calls or {}).items() if v or k == "cost_usd"},
    }
    if record.persisted is not None:
        line["persisted"] = record.persisted
        if record.why_not:
            line["why_not"] = record.why_not
    return line


def run_report(label: str, graph, result, seconds: float) -> dict[str, Any]:
    """The report of one run: `result` (an executor RunResult) says which nodes ran, what was
    written, and the device, offload mode and torch use the environment lines record."""
    nodes = {nid: node_report(r) for nid, r in result.records.items()}
    return {
        "workflow": label,
        "name": graph.workflow.name,
        "params": graph.params,
        "seeds": graph.seeds,
        "nodes": nodes,
        "outputs": [str(p) for p in result.written],
        "seconds": round(seconds, 6),
        **environment(result.device, result.offload, result.uses_torch),
    }
