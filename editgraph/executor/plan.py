"""A run's plan, derived once per bound graph and targets (run.py's pass walks it): the steps in
order, each with what its content key needs precomputed, where each output is last used, and the
groups of steps whose keys are known together.

A node's key is H(format, type, version, key params, source token, sorted input fingerprints):
what the node is and what it consumes, never its id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import blake3

from editgraph.errors import EditgraphError
from editgraph.graph.document import FORMAT
from editgraph.graph.validate import BoundGraph, BoundNode
from editgraph.nodes.registry import Node
from editgraph.values.sockets import fingerprint_for

Ref = tuple[str, str]  # (node id, output name)


def node_key(node: BoundNode, input_fps: dict[str, str]) -> str:
    """The content key: what the node is and what it consumes; never its id.

    blake3 of the fields joined by NUL, which none of them can hold (type and version are
    validated names, params are JSON, which escapes NUL, the rest are hex digests and input names).
    """
    return _key(_key_prefix(node), f"{_source(node)}\0{_inputs_text(sorted(input_fps.items()), node.cls.model_components)}")


def _inputs_text(pairs: Iterable[tuple[str, str]], uses: dict[str, Any]) -> str:
    """The key's name=fingerprint pairs, in key order; a model input whose node says which of its
    components it uses is keyed by those components' fingerprint only."""
    return ",".join([f"{name}={fingerprint_for(fp, uses[name]) if name in uses else fp}" for name, fp in pairs])


def _key_prefix(node: BoundNode) -> str:
    cls = node.cls
    return f"{FORMAT}\0{cls.type}\0{cls.version}\0{cls.key_params(node.params)}\0"


def _source(node: BoundNode) -> str:
    source = node.cls.source_token(node.params)
    return "" if source is None else source


def _key(prefix: str, inputs: str) -> str:
    """prefix: format, type, version, key params, each NUL-terminated; inputs: the source token
    (for nodes that read files), NUL, then the sorted name=fingerprint pairs."""
    return blake3.blake3(f"{prefix}{inputs}".encode()).hexdigest()


class Step:
    """One node of a plan, with what its key needs precomputed (params are frozen)."""

    __slots__ = (
        "id", "node", "type", "deterministic", "output_names", "prefix", "reads_files", "inputs", "single", "drop", "last",
        "uses", "parents", "out_refs", "billed",
    )

    def __init__(self, node: BoundNode):
        self.id = node.id
        self.node = node
        self.type = node.cls.type
        self.deterministic = node.cls.deterministic
        self.output_names = node.cls.outputs.keys()
        self.out_refs = tuple((out, (node.id, out)) for out in self.output_names)  # made once, not per run
        self.billed = node.cls.billing is not None
        self.prefix = _key_prefix(node)
        self.reads_files = node.cls.source_token.__func__ is not Node.source_token.__func__
        self.inputs = tuple(sorted(node.inputs.items()))  # (name, ref), in key order
        self.parents = frozenset(ref[0] for ref in node.inputs.values())
        # Model inputs whose node says which components it uses: keyed by those components' LoRAs only.
        self.uses = {name: comps for name, comps in node.cls.model_components.items() if name in node.inputs}
        # The common one-input node: its key text is "name=" + the input's fingerprint.
        single = len(self.inputs) == 1 and not self.uses
        self.single = (f"{self.inputs[0][0]}=", self.inputs[0][1]) if single else None
        self.drop: tuple[Ref, ...] = ()  # inputs this step is the last consumer of (set by the plan)
        self.last: tuple[Any, str] | None = None  # (inputs' fingerprints, or a source's key text; key) of the last run


class Plan:
    """What a run of these targets needs, in order; derived once per bound graph and targets."""

    __slots__ = ("targets", "steps", "last_use", "uses_torch", "groups")

    def __init__(self, graph: BoundGraph, targets: Iterable[str] | None):
        wanted = list(targets) if targets is not None else graph.sinks()
        unknown = [t for t in wanted if t not in graph.nodes]
        if unknown:
            raise EditgraphError(f"unknown target node(s) {unknown}; nodes are {list(graph.nodes)}")
        self.targets = frozenset(wanted)
        self.steps = [Step(graph.nodes[nid]) for nid in graph.upstream(self.targets, include_roots=True)]
        self.uses_torch = any(step.node.cls.arrays == "torch" for step in self.steps)
        # Where each output is consumed last: a run drops values in hand after that step (targets'
        # values stay, for RunResult.value), and loads a cached value to keep only if used later.
        self.last_use: dict[Ref, int] = {}
        for i, step in enumerate(self.steps):
            for ref in step.node.inputs.values():
                self.last_use[ref] = i
        drops: dict[int, list[Ref]] = {}
        for ref, i in self.last_use.items():
            if ref[0] not in self.targets:
                drops.setdefault(i, []).append(ref)
        for i, refs in drops.items():
            self.steps[i].drop = tuple(refs)
        # Groups of consecutive steps whose parents all come before the group (a layer of a wide
        # graph): start -> end, for groups of two or more. Their keys are known together, so a run
        # asks the disk tier for all of them in one query (Cache.prefetch).
        at = {step.id: i for i, step in enumerate(self.steps)}
        last_parent = [max([at[p] for p in step.parents], default=-1) for step in self.steps]
        self.groups: dict[int, int] = {}
        start = 0
        while start < len(self.steps):
            end = start + 1
            while end < len(self.steps) and last_parent[end] < start:
                end += 1
            if end - start > 1:
                self.groups[start] = end
            start = end

    @staticmethod
    def of(graph: BoundGraph, targets: Iterable[str] | None) -> "Plan":
        memo_key = ("executor.plan", None if targets is None else tuple(targets))
        plan = graph.derived.get(memo_key)
        if plan is None:
            plan = graph.derived[memo_key] = Plan(graph, targets)
        return plan


def step_key(step: Step, fps: dict[Ref, str]) -> str:
    """The step's key, from its parents' fingerprints in `fps` (all known by now)."""
    # A re-run of the same graph mostly sees the same inputs: reuse the last key. Its inputs
    # are compared as the fingerprints themselves (mostly the very same string objects: an
    # identity check), not as the key text, which would be built anew for each node.
    if step.reads_files:  # a source node: its key text holds the file's token, which may change
        seen: Any = None
    elif step.single is not None:
        seen = fps[step.single[1]]
    else:
        seen = tuple([fps[ref] for _, ref in step.inputs])
    last = step.last
    if last is not None and seen is not None and last[0] == seen:
        return last[1]
    if step.single is not None:
        inputs = step.single[0] + fps[step.single[1]]
    else:
        inputs = _inputs_text([(name, fps[ref]) for name, ref in step.inputs], step.uses)
    if step.reads_files:
        inputs = seen = f"{_source(step.node)}\0{inputs}"
        if last is not None and last[0] == inputs:
            return last[1]
    else:
        inputs = f"\0{inputs}"
    key = _key(step.prefix, inputs)
    step.last = (seen, key)
    return key
