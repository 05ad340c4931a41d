"""The run report: one builder for the CLI, the Python API, batches and the server.

`run_report()` describes one run (each node's status, seconds and key, the params and seeds, the
files written, the device); `environment()` is the part every report shares.
"""

from __future__ import annotations

from typing import Any


def environment(device: Any = None) -> dict[str, Any]:
    """What decides bit-identity besides the workflow: torch's thread count and the device."""
    import torch

    from editgraph.version import __version__

    return {
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
        "editgraph": __version__,
    }


def run_report(label: str, graph, result, seconds: float, device: Any = None) -> dict[str, Any]:
    nodes = {
        nid: {
            "type": r.type, "status": r.status, "seconds": round(r.seconds, 6), "key": r.key,
            # engine nodes: the engine, cost (paid now, or saved when cached), calls, scores
            **{k: v for k, v in (r.calls or {}).items() if v or k == "cost_usd"},
        }
        for nid, r in result.records.items()
    }
    return {
        "workflow": label,
        "name": graph.workflow.name,
        "params": graph.params,
        "seeds": graph.seeds,
        "nodes": nodes,
        "outputs": [str(p) for p in result.written],
        "seconds": round(seconds, 6),
        **environment(device),
    }
