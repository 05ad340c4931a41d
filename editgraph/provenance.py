"""What a saved image says about how it was made, and how to read that back.

A PNG carries one iTXt chunk, keyword "editgraph", holding JSON: the workflow document with every
param and seed resolved (so running it again reproduces the pixels), the editgraph version, the
torch thread count (it changes float rounding), and the content key of every node.
The chunk is spliced in at write time, so cached PNG bytes stay independent of node ids and the
save node's cache entry is shared by every workflow that makes the same pixels.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import torch

import editgraph

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"editgraph"


def build(result) -> dict[str, Any]:
    """Provenance for a finished run (a RunResult)."""
    graph = result.graph
    return {
        "editgraph": editgraph.__version__,
        "workflow": graph.resolved_document(),
        "params": graph.params,
        "seeds": graph.seeds,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "keys": {nid: rec.key for nid, rec in result.records.items()},
    }


def embed(name: str, data: bytes, info: dict[str, Any]) -> bytes:
    """The file's bytes with provenance added (PNG: an iTXt chunk before IEND; others unchanged)."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    text = json.dumps(info, ensure_ascii=False, sort_keys=True).encode()
    # iTXt: keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
    body = KEYWORD + b"\x00" + b"\x01\x00" + b"\x00" + b"\x00" + zlib.compress(text, 9)
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    iend = data.rfind(b"IEND") - 4
    if iend < len(PNG_SIGNATURE):
        raise ValueError(f"{name}: not a complete PNG (no IEND chunk)")
    return data[:iend] + chunk + data[iend:]


def read(data: bytes) -> dict[str, Any] | None:
    """The provenance a PNG carries, or None."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"iTXt" and body.startswith(KEYWORD + b"\x00"):
            rest = body[len(KEYWORD) + 1 :]
            compressed = rest[0] == 1
            # skip flag, method, then language and translated keyword (two NUL-terminated strings)
            rest = rest[2:]
            rest = rest[rest.index(b"\x00") + 1 :]
            rest = rest[rest.index(b"\x00") + 1 :]
            text = zlib.decompress(rest) if compressed else rest
            return json.loads(text)
        if ctype == b"IEND":
            break
        pos += 12 + length
    return None
