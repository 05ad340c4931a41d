"""What a run would cost, without running or calling anything.

Walk the nodes the targets need in order, computing content keys the way the executor does
while every input's fingerprint is known from the cache: a paid node whose key the cache holds is
free this time (and counted as saved); one whose key cannot be known yet (something upstream
must run first) or is missing will be paid, at its estimate (Node.estimate_cost: the price table
applied to params and which inputs are connected, sources assumed 1024x1024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from editgraph.executor.plan import node_key
from editgraph.graph.validate import BoundGraph


@dataclass(frozen=True)
class NodeCost:
    node: str
    type: str
    engine: str
    usd: float
    cached: bool  # the cache holds this node's result: it will cost nothing


@dataclass(frozen=True)
class Estimate:
    nodes: tuple[NodeCost, ...]

    @property
    def to_spend(self) -> float:
        return round(sum(n.usd for n in self.nodes if not n.cached), 6)

    @property
    def cached(self) -> float:
        return round(sum(n.usd for n in self.nodes if n.cached), 6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimated_usd": self.to_spend,
            "cached_usd": self.cached,
            "nodes": [n.__dict__ for n in self.nodes],
        }


def needed(graph: BoundGraph, targets: list[str] | None = None) -> list[str]:
    return graph.upstream(targets if targets is not None else graph.sinks(), include_roots=True)


def estimate(graph: BoundGraph, cache: Any, targets: list[str] | None = None) -> Estimate:
    fps: dict[tuple[str, str], str] = {}
    rows = []
    for nid in needed(graph, targets):
        node = graph.nodes[nid]
        hit = None
        if all(ref in fps for ref in node.inputs.values()):
            try:
                key = node_key(node, {name: fps[ref] for name, ref in node.inputs.items()})
            except Exception:  # a missing input file: the run will say so; nothing is known past it
                key = None
            if key is not None and node.cls.deterministic and cache is not None:
                hit = cache.lookup(key)
                if hit is not None and hit.keys() == node.cls.outputs.keys():
                    for out, fp in hit.items():
                        fps[(nid, out)] = fp
                else:
                    hit = None
        cost = node.cls.estimate_cost(node.params, frozenset(node.inputs))
        if cost is not None:
            engine, usd = cost
            rows.append(NodeCost(nid, node.type, engine, round(usd, 6), hit is not None))
    return Estimate(tuple(rows))
