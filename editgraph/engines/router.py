"""Routing tables: which engine does which operation, in fallback order.

    {"inpaint":     [<engine>, ...],   a mask is connected
     "reference":   [...],             reference pictures, no mask
     "instruction": [...],             an instruction and the source only
     "generate":    [...]}             no source picture

An engine is "provider:model" or {"engine": "provider:model", <options>}. The first engine that
can do the job runs; when it fails in a way another might not (rate limits that outlast the
retries, a server error, a malformed answer, no key configured) the next one is tried. A refusal,
a rejected request or the budget ends the node: they would end it elsewhere too, and trying
another provider with content one refused is not the router's call.

Tables are built in ("hosted", "local-tiny") or defined under "routes" in the engines config
file. A node's key holds the resolved table's content, not its name, so changing what a name
means reruns what it routed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import blake3

from editgraph.engines.base import EditJob, EditResult, Engine, JobShape, Services
from editgraph.engines.credentials import config_path, load_user_config
from editgraph.engines.errors import FALLBACK_ON
from editgraph.engines.registry import make_engine
from editgraph.errors import EditgraphError, NodeError

OPERATIONS = ("inpaint", "reference", "instruction", "generate")

BUILTIN: dict[str, dict[str, list[Any]]] = {
    # Each operation to the engine that usually wins it, then the next best.
    "hosted": {
        "inpaint": ["bfl:flux-pro-1.0-fill", "openai:gpt-image-1"],
        "reference": ["bfl:flux-kontext-pro", "gemini:gemini-2.5-flash-image", "openai:gpt-image-1"],
        "instruction": ["gemini:gemini-2.5-flash-image", "bfl:flux-kontext-pro", "openai:gpt-image-1"],
        "generate": ["gemini:gemini-2.5-flash-image", "openai:gpt-image-1"],
    },
    # The tiny models the project builds: the same workflows run offline, in seconds.
    "local-tiny": {
        "inpaint": [{"engine": "local:tiny-sd-inpaint", "steps": 8}],
        "reference": [],
        "instruction": [{"engine": "local:tiny-ip2p", "steps": 8}],
        "generate": [],
    },
}


def table(name: str) -> dict[str, list[Any]]:
    """The table called `name`: the config file's "routes" first, then the built-in ones."""
    user = load_user_config().get("routes") or {}
    found = user.get(name, BUILTIN.get(name))
    if found is None:
        known = sorted(set(BUILTIN) | set(user))
        raise EditgraphError(f"no routing table {name!r}; known: {', '.join(known)} (add more under 'routes' in {config_path()})")
    if not isinstance(found, dict) or set(found) - set(OPERATIONS):
        raise EditgraphError(f"routing table {name!r} must map operations ({', '.join(OPERATIONS)}) to lists of engines")
    for op, entries in found.items():
        if not isinstance(entries, list):
            raise EditgraphError(f"routing table {name!r}: {op} must be a list of engines, got {type(entries).__name__}")
    return found


def table_token(name: str) -> str:
    """A hash of what the table says (canonical JSON), for content keys."""
    return blake3.blake3(json.dumps(table(name), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _spec(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("engine"), str):
        return entry["engine"], {k: v for k, v in entry.items() if k != "engine"}
    raise EditgraphError(f"routing table entry {entry!r}: expected 'provider:model' or {{\"engine\": ..., options}}")


def engines_for(name: str, operation: str) -> list[Engine]:
    entries = table(name).get(operation) or []
    if not entries:
        raise NodeError(f"routing table {name!r} has no engine for a {operation} edit")
    return [make_engine(*_spec(e)) for e in entries]


def estimate(name: str, shape: JobShape) -> tuple[str, float]:
    """The engine the table would try first for this job, and its estimated cost."""
    first = engines_for(name, shape.operation)[0]
    return first.name, first.estimate(shape)


@dataclass
class Routed:
    result: EditResult
    engine: str
    tried: list[dict[str, str]] = field(default_factory=list)  # engines passed over, and why


def route(name: str, job: EditJob, services: Services) -> Routed:
    """Run the job on the first engine of the table that can do it and does not fail over."""
    tried: list[dict[str, str]] = []
    for engine in engines_for(name, job.operation):
        try:
            engine.check(job)
        except NodeError as exc:
            tried.append({"engine": engine.name, "skipped": str(exc)})
            continue
        try:
            return Routed(engine.run(job, services), engine.name, tried)
        except FALLBACK_ON as exc:
            tried.append({"engine": engine.name, "failed": f"{type(exc).__name__}: {exc}"})
    summary = "; ".join(f"{t['engine']}: {t.get('failed') or t.get('skipped')}" for t in tried)
    raise NodeError(f"every engine in routing table {name!r} for a {job.operation} edit failed: {summary}")
