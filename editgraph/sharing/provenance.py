"""What a saved image says about how it was made, and how to read that back.

Every file the executor writes gets, at write time (so cached file bytes stay independent of node
ids and one save node's cache entry serves every workflow that makes the same pixels):

- the editgraph provenance, JSON: the workflow document with every param, seed and input path
  resolved (running it again reproduces the pixels), the seeds, each model's name and content
  hash, each input file's hash, the editgraph and torch versions, the torch thread count (it
  changes float rounding) and every node's content key.
  PNG: iTXt "editgraph" (zlib); JPEG: APP15 "editgraph" segments; WebP: an `EGPV` chunk.
- the first image.load ancestor's EXIF (orientation reset: the pixels are already upright) and
  ICC profile, so camera data and colour management survive the edit.
- an AI-edit label when a generative node made the pixels: XMP with Iptc4xmpExt:DigitalSourceType
  = compositeWithTrainedAlgorithmicMedia (trainedAlgorithmicMedia when no photo went in). A
  workflow of grades, crops and masks claims none (sharing/c2pa.py decides, from node types).
- a C2PA manifest found in that input is never written back as the output's own manifest: an edit
  breaks its hash binding. Unsigned, it is recorded as an ingredient (sha256, size, source) in the
  provenance and its raw bytes ride along in a private chunk (metadata.py), so a signing tool
  downstream can cite it. Signed (a C2PA identity configured, sharing/c2pa.py), the output gets a
  manifest of its own, signed last, in which that input is a validated ingredient.
  Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from collections.abc import Callable
from typing import Any

from editgraph.version import __version__
from editgraph.sharing import c2pa
from editgraph.sharing import metadata as fm
from editgraph.errors import EditgraphError
from editgraph.settings import Settings

KEYWORD = b"editgraph"
JPEG_IDENT = b"editgraph\x00"
JPEG_C2PA_IDENT = b"editgraph-c2pa\x00"
WEBP_CHUNK, WEBP_C2PA_CHUNK = b"EGPV", b"EGMI"
# Where embed() writes them, for reading back.
PROVENANCE = fm.Slot(KEYWORD, (fm.APP15, JPEG_IDENT, True), WEBP_CHUNK, itxt=True, deflated=True)
INGREDIENT = fm.Slot(fm.INGREDIENT_PNG_CHUNK, (fm.APP15, JPEG_C2PA_IDENT, True), WEBP_C2PA_CHUNK)
CARRY_FROM = ("image.load",)  # node types whose file's metadata an output inherits
_MODEL_NAME_FIELDS = ("model", "adapter", "name", "repo", "path")  # first param that names a model


class Provenance(dict):
    """The JSON-able provenance of one run, plus (not serialized) the metadata each artifact
    node's output inherits from its source photo: `carry[node_id]`."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.carry: dict[str, fm.Carried] = {}


def build(result, *, signed: bool = False) -> Provenance:
    """Provenance for a finished run (a RunResult). signed: its files will get C2PA manifests."""
    from editgraph.executor.devices import torch_threads
    from editgraph.nodes.registry import INPUT_PATH, field_marks

    graph = result.graph
    info = Provenance(
        {
            "editgraph": __version__,
            "workflow": portable_document(graph),
            "params": graph.params,
            "seeds": graph.seeds,
            "models": _models(result),
            "inputs": _inputs(graph, INPUT_PATH, field_marks),
            "torch": _torch_version(),
            # None: no node of this run uses torch (numpy only), so its thread count cannot matter
            "torch_threads": torch_threads(getattr(result, "uses_torch", True)),
            # Keys leave the device out; the same pixels again need the same kind of device.
            "device": str(getattr(result, "device", "cpu")),
            "offload": getattr(result, "offload", "none"),  # never changes pixels; says how weights were held
            "bit_identical": "per device and torch thread count",
            "keys": {nid: rec.key for nid, rec in result.records.items()},
            "engines": _engines(result),
            # per saving node: what made its pixels (None: no generative node, no AI claimed)
            "digital_source_type": {nid: c2pa.source_type(graph, nid) for nid in _savers(result)},
            "c2pa_signed": signed,
        }
    )
    for record in info["models"]:  # a re-run elsewhere must use the same weights, or say it cannot
        spec = info["workflow"]["nodes"].get(record.get("node"), {})
        if spec.get("type") == "model.load":
            spec.setdefault("params", {})["hash"] = record["content_hash"]
        elif spec.get("type") == "model.lora" and record.get("lora_hash"):
            spec.setdefault("params", {})["hash"] = record["lora_hash"]
    carried_report: dict[str, Any] = {}
    ingredients = []
    for nid in _savers(result):
        source = _first_source(graph, nid)
        if source is None:
            continue
        carried = fm.read_carried(source, graph.nodes[source].params.path)
        info.carry[nid] = carried
        carried_report[nid] = {
            "from": source, "exif": carried.exif is not None, "icc_profile": carried.icc_profile is not None, "xmp": carried.xmp is not None,
        }
        if carried.xmp_dropped:
            carried_report[nid]["xmp_dropped"] = carried.xmp_dropped
        if carried.c2pa is not None:
            ingredient = {
                "node": source,
                "path": carried.path,
                "relationship": "parentOf",
                "c2pa_manifest": {"sha256": hashlib.sha256(carried.c2pa).hexdigest(), "bytes": len(carried.c2pa)},
                "note": "a validated ingredient of this file's signed C2PA manifest"
                if signed
                else "the source's C2PA manifest cannot stay valid on edited pixels; its bytes are carried in a private chunk",
            }
            if ingredient not in ingredients:
                ingredients.append(ingredient)
            carried_report[nid]["c2pa_ingredient"] = True
    info["carried"] = carried_report
    info["ingredients"] = ingredients
    return info


def _torch_version() -> str | None:
    """torch's version, without importing torch for a run that did not: the `__version__` line of
    the installed torch/version.py (importlib.metadata measured 0.2-0.5 s here, scanning every
    installed package)."""
    import importlib.util
    import re
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.__version__
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    try:
        text = Path(spec.origin).with_name("version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return found.group(1) if found else None


def _savers(result) -> list[str]:
    """The nodes of the run that write files (an Artifact output)."""
    nodes = result.graph.nodes
    return [nid for nid in nodes if nid in result.records and any(s.name == "Artifact" for s in nodes[nid].cls.outputs.values())]


def _engines(result) -> dict[str, Any]:
    """Per engine node: which engine made its output, the provider's request ids, the seeds sent,
    and whether the seed reproduces the pixels (hosted: no; `editgraph run` of the image then
    needs the cache, or --spend-again to pay for new, different calls)."""
    out: dict[str, Any] = {}
    for nid, rec in result.records.items():
        if not rec.calls:
            continue
        calls = rec.calls.get("calls") or []
        out[nid] = {
            "engine": rec.calls.get("engine"),
            "calls": [
                {k: c.get(k) for k in ("engine", "provider", "model", "request_id", "seed", "reproducible")} for c in calls
            ],
            "replayable_from_seed": bool(calls) and all(c.get("reproducible") for c in calls),
        }
    return out


def portable_document(graph) -> dict[str, Any]:
    """graph.resolved_document() with literal input paths made absolute too, so the document runs
    the same from any working directory."""
    from editgraph.nodes.registry import INPUT_PATH, field_marks

    doc = graph.resolved_document()
    for nid, node in graph.nodes.items():
        raw = doc["nodes"][nid].get("params", {})
        for fname in field_marks(node.cls.Params, INPUT_PATH):
            value = raw.get(fname)
            if isinstance(value, str) and not value.startswith("$"):
                raw[fname] = getattr(node.params, fname)
    return doc


def _models(result) -> list[dict[str, Any]]:
    """Each node output on a Model socket: its name (from the node's params) and content hash
    (its fingerprint is "model:<content hash>")."""
    models = []
    for nid, node in result.graph.nodes.items():
        for out, sock in node.cls.outputs.items():
            fp = result.fingerprints.get((nid, out))
            if sock.name != "Model" or fp is None:
                continue
            params = node.params.model_dump(mode="json")
            name = next((params[f] for f in _MODEL_NAME_FIELDS if isinstance(params.get(f), str)), nid)
            # "model:<hash>[:float16]", then one "+lora[<components>]<hash>*<scale>" per LoRA on it
            head, *segments = fp.removeprefix("model:").split("+lora[")
            record: dict[str, Any] = {"node": nid, "type": node.type, "name": Path(name).name, "content_hash": head.split(":")[0]}
            if segments:
                loras = []
                for seg in segments:
                    comps, rest = seg.split("]", 1)
                    digest, scale = rest.split("*", 1)
                    loras.append({"content_hash": digest, "scale": float(scale), "components": comps.split(",")})
                record["loras"] = loras
            if node.type == "model.lora" and segments:
                record["name"] = Path(str(params.get("lora", nid))).name
                record["lora_hash"] = record["loras"][-1]["content_hash"]  # this node's own file
            models.append(record)
    return models


def _inputs(graph, INPUT_PATH, field_marks) -> list[dict[str, Any]]:
    """Each file a node reads, with the hash its key used (what `run IMAGE.png` checks against)."""
    inputs = []
    for nid, node in graph.nodes.items():
        fields = field_marks(node.cls.Params, INPUT_PATH)
        if not fields:
            continue
        try:
            token = node.cls.source_token(node.params)
        except Exception:  # noqa: BLE001 - a file gone since the run: record the path without its hash
            token = None
        for fname in fields:
            inputs.append({"node": nid, "type": node.type, "field": fname, "path": getattr(node.params, fname, None), "source_token": token})
    return inputs


def _first_source(graph, node_id: str) -> str | None:
    """The first (in run order) CARRY_FROM ancestor of a node, or None."""
    return next((nid for nid in graph.upstream([node_id]) if graph.nodes[nid].type in CARRY_FROM), None)


# --- writing ------------------------------------------------------------------------------------


def stamp(result, *, settings: Settings | None = None, replayed_from: str | None = None) -> Callable[[str, str, bytes], bytes]:
    """The executor's Stamp: provenance built once per run, embedded into every file it writes;
    then, when a C2PA identity is configured, a signed manifest, once per file. replayed_from: the
    image whose embedded workflow this run replays (an ingredient of what it signs)."""
    identity = c2pa.identity(settings)
    info = build(result, signed=identity is not None)
    if identity is None:
        return lambda node_id, name, data: embed(name, data, info, node_id=node_id)
    trust = c2pa.trust_anchors(settings)
    plans: dict[str, c2pa.Plan] = {}

    def finish(node_id: str, name: str, data: bytes) -> bytes:
        if node_id not in plans:
            plans[node_id] = c2pa.plan(result.graph, node_id, info, replayed_from)
        return c2pa.sign(name, embed(name, data, info, node_id=node_id, signing=True), plans[node_id], identity, trust=trust)

    return finish


def signing_stamp(settings: Settings | None = None, *, replayed_from: str | None = None) -> Callable:
    """`stamp` bound to these settings, with the C2PA identity (if any) checked now, before a run
    spends anything: a wrong key path or a key that is not the certificate's fails here."""
    import functools

    identity = c2pa.identity(settings)
    if identity is not None:
        c2pa.check(identity)
    replayed = str(Path(replayed_from).resolve()) if replayed_from is not None else None
    return functools.partial(stamp, settings=settings, replayed_from=replayed)


def embed(name: str, data: bytes, info: dict[str, Any], node_id: str | None = None, *, signing: bool = False) -> bytes:
    """The file's bytes with provenance, carried metadata and the AI label added. PNG, JPEG and
    WebP are spliced without touching the encoded image data; other files are returned unchanged.
    signing: a C2PA manifest follows, citing the input's own manifest properly, so its raw
    bytes are not also carried in the private chunk."""
    carried = info.carry.get(node_id) if isinstance(info, Provenance) and node_id is not None else None
    text = json.dumps(info, ensure_ascii=False, sort_keys=True).encode()
    types = info.get("digital_source_type")
    kind = types.get(node_id) if isinstance(types, dict) else fm.AI_SOURCE_TYPE
    xmp = fm.labelled_xmp(carried.xmp if carried else None, f"editgraph {__version__}", kind)
    exif = carried.exif if carried else None
    icc = carried.icc_profile if carried else None
    source_manifest = carried.c2pa if carried and not signing else None
    kind = fm.container(data)
    if kind == "png":
        present = fm.png_chunk_types(data)
        head = []
        # A file that already has its own profile / EXIF (one of each is allowed) keeps it.
        if icc and b"iCCP" not in present and b"sRGB" not in present:
            head.append(fm.png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc, 9)))
        if exif and b"eXIf" not in present:
            head.append(fm.png_chunk(b"eXIf", exif))
        # XMP before the pixels: metadata readers that stop at the first IDAT still see the label.
        head.append(fm.png_itxt(fm.XMP_KEYWORD, xmp, compress=False))
        tail = [fm.png_itxt(KEYWORD, text, compress=True)]
        if source_manifest:
            tail.append(fm.png_chunk(fm.INGREDIENT_PNG_CHUNK, source_manifest))
        return fm.png_insert(data, after_ihdr=head, before_iend=tail)
    if kind == "jpeg":
        present = list(fm.jpeg_segments(data))
        if any(m == fm.APP1 and p.startswith(b"Exif\x00\x00") for m, p in present):
            exif = None
        if any(m == fm.APP2 and p.startswith(fm.ICC_JPEG_ID) for m, p in present):
            icc = None
        for what, block, overhead in (("EXIF", exif, 6), ("XMP", xmp, len(fm.XMP_JPEG_ID))):
            if block and len(block) + overhead > fm.JPEG_SEGMENT_MAX:
                raise EditgraphError(
                    f"{name}: the source photo's {what} is {len(block)} bytes; a JPEG holds at most {fm.JPEG_SEGMENT_MAX - overhead}. "
                    "Save as .png (or .webp) to keep it"
                )
        segs = [fm.jpeg_segment(fm.APP1, b"Exif\x00\x00" + exif)] if exif else []
        segs.append(fm.jpeg_segment(fm.APP1, fm.XMP_JPEG_ID + xmp))
        if icc:
            segs += fm.jpeg_icc(icc)
        segs += fm.jpeg_chunked(fm.APP15, JPEG_IDENT, zlib.compress(text, 9))
        if source_manifest:
            segs += fm.jpeg_chunked(fm.APP15, JPEG_C2PA_IDENT, source_manifest)
        return fm.jpeg_insert(data, segs)
    if kind == "webp":
        out = fm.webp_with_metadata(data, exif=exif, icc=icc, xmp=xmp)
        chunks = [(WEBP_CHUNK, zlib.compress(text, 9))] + ([(WEBP_C2PA_CHUNK, source_manifest)] if source_manifest else [])
        return fm.riff_append(out, chunks)
    return data


# --- reading ------------------------------------------------------------------------------------


def read(data: bytes) -> dict[str, Any] | None:
    """The provenance an image editgraph wrote carries (PNG, JPEG or WebP), or None."""
    raw = fm.read_slot(data, PROVENANCE)
    return json.loads(raw) if raw is not None else None


def carried_manifest(data: bytes) -> bytes | None:
    """The source C2PA manifest an output carries as an ingredient (its raw JUMBF bytes), or None."""
    return fm.read_slot(data, INGREDIENT)


def read_file(path: str | Path) -> dict[str, Any] | None:
    return read(Path(path).read_bytes())
