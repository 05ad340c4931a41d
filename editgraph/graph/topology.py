"""Order and cycles of a graph given as node ids and (source, target) edges. One helper for
validation, rendering and planning; no networkx (its import alone costs `validate` ~0.4 s).

Every result is deterministic: among nodes free at the same time the smallest id comes first,
and a cycle is reported starting at its smallest node id.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


def _adjacency(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> tuple[list[str], dict[str, list[str]]]:
    ids = list(dict.fromkeys(nodes))
    succ: dict[str, list[str]] = {n: [] for n in ids}
    for src, dst in edges:
        if src in succ and dst in succ:
            succ[src].append(dst)
    for targets in succ.values():
        targets.sort()
    return ids, succ


def order(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """Sources first, smallest id first among equals (Kahn's algorithm on a heap); None if cyclic."""
    ids, succ = _adjacency(nodes, edges)
    indegree = dict.fromkeys(ids, 0)
    for targets in succ.values():
        for t in targets:
            indegree[t] += 1
    ready = [n for n in ids if indegree[n] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        n = heapq.heappop(ready)
        out.append(n)
        for t in succ[n]:
            indegree[t] -= 1
            if indegree[t] == 0:
                heapq.heappush(ready, t)
    return out if len(out) == len(ids) else None


def generations(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]] | None:
    """Nodes by depth: each layer's nodes depend only on earlier layers; None if cyclic."""
    ids, succ = _adjacency(nodes, edges)
    indegree = dict.fromkeys(ids, 0)
    for targets in succ.values():
        for t in targets:
            indegree[t] += 1
    layer = sorted(n for n in ids if indegree[n] == 0)
    out, seen = [], 0
    while layer:
        out.append(layer)
        seen += len(layer)
        nxt = []
        for n in layer:
            for t in succ[n]:
                indegree[t] -= 1
                if indegree[t] == 0:
                    nxt.append(t)
        layer = sorted(nxt)
    return out if seen == len(ids) else None


def strongly_connected(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's components (iterative: a 100,000-node chain must not hit the recursion limit),
    each sorted, listed by smallest member."""
    ids, succ = _adjacency(nodes, edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for root in ids:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            targets = succ[node]
            while i < len(targets):
                t = targets[i]
                i += 1
                if t not in index:
                    work.append((node, i))
                    work.append((t, 0))
                    recurse = True
                    break
                if t in on_stack:
                    low[node] = min(low[node], index[t])
            if recurse:
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                comps.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(comps, key=lambda c: c[0])


def cycles(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """One cycle per cyclic component (a node on no cycle is in none), each starting at the
    component's smallest id and following the smallest next id that stays on a cycle:
    [a, b, c] means a -> b -> c -> a."""
    edges = list(edges)
    ids, succ = _adjacency(nodes, edges)
    out = []
    for comp in strongly_connected(ids, edges):
        members = set(comp)
        start = comp[0]
        if len(comp) == 1 and start not in succ[start]:
            continue
        # Breadth-first from start inside the component back to start: the shortest cycle
        # through the smallest id, ties broken by id order (successors are sorted).
        parent: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for n in frontier:
                for t in succ[n]:
                    if t not in members:
                        continue
                    if t == start:
                        found = n
                        break
                    if t not in parent:
                        parent[t] = n
                        nxt.append(t)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(parent[path[-1]])
        out.append(path[::-1])
    return out


def ancestors(roots: Iterable[str], parents: Callable[[str], Iterable[str]]) -> set[str]:
    """Every node the roots depend on, transitively (iterative: deep chains are fine); the roots
    themselves only where one depends on another."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        for src in parents(stack.pop()):
            if src not in seen:
                seen.add(src)
                stack.append(src)
    return seen
