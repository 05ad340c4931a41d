"""Uploaded images, stored content-addressed under the server's data folder.

A client never names a server path for an upload: it sends bytes, gets back `upload:<sha256>.<ext>`,
and passes that as a path param. The bytes are sniffed (the file's own header decides its type,
not its name or the Content-Type), the header's pixel count is checked before any decoding (a
10 kB PNG can declare 50,000 x 50,000 pixels), and the image is fully decoded once so a truncated
or malformed file is refused here, not halfway through a run.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from editgraph.atomic import write_atomic
from editgraph.errors import EditgraphError

_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
# Pillow names a JPEG carrying more than one picture (MPF: phones append a depth map or a preview)
# "MPO"; it is a JPEG file to everything that reads it, image.load included.
_ALIASES = {"MPO": "JPEG"}
_REF = re.compile(r"^upload:([0-9a-f]{64})\.(png|jpg|webp)$")
PREFIX = "upload:"


class UploadRefused(EditgraphError):
    """The bytes are not an image this server takes."""


def store(data: bytes, folder: Path, max_pixels: int) -> dict:
    """Check and keep an uploaded image; returns {ref, sha256, format, width, height, bytes}."""
    from PIL import Image

    if not data:
        raise UploadRefused("the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            fmt, (width, height) = _ALIASES.get(probe.format, probe.format), probe.size
    except Image.DecompressionBombError as exc:
        raise UploadRefused(f"image refused as a decompression bomb: {exc}") from None
    except Exception:  # noqa: BLE001 - PIL raises many types for "not an image"
        raise UploadRefused(f"not an image this server reads (PNG, JPEG or WebP); the first bytes are {data[:8]!r}") from None
    if fmt not in _FORMATS:
        raise UploadRefused(f"image format {fmt} is not accepted; send PNG, JPEG or WebP")
    if width * height > max_pixels:
        raise UploadRefused(f"image declares {width}x{height} = {width * height} pixels; this server takes at most {max_pixels}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # a truncated or corrupt file fails here, not in the middle of a run
    except Exception as exc:  # noqa: BLE001
        raise UploadRefused(f"the {fmt} file cannot be decoded: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    ext = _FORMATS[fmt]
    path = folder / f"{digest}{ext}"
    if not path.is_file():
        write_atomic(path, data)
    return {"ref": f"{PREFIX}{digest}{ext}", "sha256": digest, "format": fmt.lower(), "width": width, "height": height, "bytes": len(data)}


def resolve(ref: str, folder: Path) -> Path:
    """The stored file an `upload:...` reference names; anything else is refused."""
    m = _REF.match(ref)
    if m is None:
        raise UploadRefused(f"not an upload reference: {ref!r} (expected upload:<sha256>.png|jpg|webp, as returned by POST /api/uploads)")
    path = folder / f"{m.group(1)}.{m.group(2)}"
    if not path.is_file():
        raise UploadRefused(f"no upload {ref!r} on this server (uploads are kept by content; upload the file again)")
    return path


def is_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)
