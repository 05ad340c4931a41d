"""Checks and fix-ups for workflows that travel between machines and artists.

`check_sources(graph)`: every file a workflow reads must exist (each missing one is an Issue
naming the node, its type, the JSON path and the path looked for). A node class may add its own
checks by defining

    @classmethod
    def check_sources(cls, params) -> list[str]:   # problems, each a sentence; [] = fine
        ...

(the hook for model nodes: "model 'sd15' not found in EDITGRAPH_MODELS (...)", "hash mismatch").
When a class defines it, its problems are reported at `nodes.<id>.params` and it replaces the
generic file-exists check: its InputPath fields may hold names (a model registry entry), not files.

`relocate_inputs(info, ...)`: a PNG carries the absolute paths of the files its run read; on
another machine they are elsewhere. A missing one is looked for by name beside the PNG and in the
working directory, and used if its bytes hash to what the run read.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from editgraph.graph.document import param_ref
from editgraph.graph.sources import check_sources  # noqa: F401  (re-exported: validate and the tests use it here)


def relocate_inputs(info: dict[str, Any], search: list[Path]) -> tuple[dict[str, Any], list[str]]:
    """(workflow document, notes): the carried document with each missing input file replaced by a
    same-named file found in `search` whose hash matches the one recorded; notes say what moved
    and what is still missing or differs."""
    from editgraph.ops.imaging import file_hash
    from editgraph.nodes.registry import load_builtin_nodes

    registry = load_builtin_nodes()
    doc = copy.deepcopy(info["workflow"])
    notes: list[str] = []
    for rec in info.get("inputs", []):
        path = rec.get("path")
        if not isinstance(path, str) or Path(path).is_file():
            continue
        cls = registry.get(rec.get("type", ""))
        if cls is not None and not cls.relocatable:
            continue  # resolved by the node itself (a model name through the registry), not by file
        name = Path(path).name
        found = next((d / name for d in search if (d / name).is_file()), None)
        if found is None:
            notes.append(f"node '{rec['node']}': {path} is missing and no {name} was found in {', '.join(map(str, search))}")
            continue
        token = rec.get("source_token")
        if token is not None and file_hash(found) != token:
            notes.append(f"node '{rec['node']}': {found} has different bytes from the {name} this image was made from; not used")
            continue
        _set_path(doc, rec["node"], rec["field"], str(found.resolve()))
        notes.append(f"node '{rec['node']}': using {found} (same bytes as {path})")
    return doc, notes


def _set_path(doc: dict[str, Any], node_id: str, field: str, value: str) -> None:
    params = doc["nodes"][node_id].setdefault("params", {})
    bound = param_ref(params.get(field))
    if bound is not None:
        doc["params"][bound]["default"] = value
    else:
        params[field] = value


def describe_provenance(label: str, info: dict[str, Any], data: bytes) -> str:
    """What `editgraph show IMAGE` prints above the graph: who made it, with what, from what."""
    import json

    from editgraph.sharing import metadata as filemeta
    from editgraph.sharing.c2pa import COMPOSITE_AI, TRAINED_AI

    threads = info.get("torch_threads", "?")
    # None: no node of the run used torch (a pixel-only workflow, Node.arrays)
    engine = f"torch {info.get('torch', '?')}, {threads} threads" if threads is not None else "no torch code"
    lines = [f"{label}: made by editgraph {info.get('editgraph', '?')} ({engine})"]
    xmp = filemeta.read_xmp(data) or b""
    claimed = [t for t in (COMPOSITE_AI, TRAINED_AI) if t.encode() in xmp]
    types = info.get("digital_source_type")
    if claimed:
        lines.append(f"AI-edit label: yes, XMP Iptc4xmpExt:DigitalSourceType = {claimed[0]}")
    elif isinstance(types, dict) and not any(types.values()):
        lines.append("AI-edit label: none claimed (no generative node made these pixels)")
    else:
        lines.append("AI-edit label: MISSING (no XMP digital source type in this file)")
    if filemeta.c2pa_manifest(data) is not None:
        lines.append("C2PA: signed manifest present (check it with: editgraph verify IMAGE)")
    elif info.get("c2pa_signed"):
        lines.append("C2PA: not signed any more (it was signed when written: its manifest has been stripped)")
    else:
        lines.append("C2PA: not signed (no signing identity was configured when it was made)")
    if info.get("params"):
        lines.append("params:")
        lines += [f"  {k} = {json.dumps(v)}" for k, v in info["params"].items()]
    if info.get("seeds"):
        lines.append("seeds: " + ", ".join(f"{k}={v}" for k, v in info["seeds"].items()))
    for m in info.get("models", []):
        lines.append(f"model: {m['node']} ({m['type']}) {m['name']}  content hash {m['content_hash']}")
    for i in info.get("inputs", []):
        lines.append(f"input: {i['node']}.{i['field']} = {i['path']}  (hash {i.get('source_token') or '?'})")
    for nid, e in (info.get("engines") or {}).items():
        ids = ", ".join(str(c.get("request_id")) for c in e.get("calls", []) if c.get("request_id")) or "none"
        replay = "replays from its seed" if e.get("replayable_from_seed") else "hosted: does not replay from a seed (re-running needs the cache or --spend-again)"
        lines.append(f"engine: {nid} {e.get('engine')}  request ids {ids}; {replay}")
    for nid, c in info.get("carried", {}).items():
        kept = [
            k
            for k, v in (("EXIF", c.get("exif")), ("ICC profile", c.get("icc_profile")), ("XMP", c.get("xmp")), ("C2PA manifest as ingredient", c.get("c2pa_ingredient")))
            if v
        ]
        lines.append(f"carried into {nid}'s file from {c['from']}: {', '.join(kept) or 'nothing (the input had no EXIF, ICC, XMP or C2PA)'}")
        if c.get("xmp_dropped"):
            lines.append(f"  not carried: the input's XMP ({c['xmp_dropped']})")
    for ing in info.get("ingredients", []):
        m = ing["c2pa_manifest"]
        where = "an ingredient of this file's signed manifest" if info.get("c2pa_signed") else "not valid for the edited pixels, kept in a private chunk"
        lines.append(f"C2PA ingredient: {ing['path']} manifest sha256 {m['sha256']} ({m['bytes']} bytes); {where}")
    return "\n".join(lines) + "\n"
