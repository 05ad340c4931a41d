"""Uploads on their own (no server): what is kept, under which name, and what is refused before
any pixel is decoded."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from editgraph.serve import uploads
from editgraph.serve.uploads import UploadRefused


def _encoded(fmt: str, size=(32, 24), colour=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt, **save)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt, ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_an_upload_is_kept_under_its_sha256_with_the_extension_its_bytes_say(tmp_path: Path, fmt, ext):
    data = _encoded(fmt)
    info = uploads.store(data, tmp_path, max_pixels=10_000)
    digest = hashlib.sha256(data).hexdigest()
    assert info == {"ref": f"upload:{digest}{ext}", "sha256": digest, "format": fmt.lower(), "width": 32, "height": 24, "bytes": len(data)}
    assert [p.name for p in tmp_path.iterdir()] == [f"{digest}{ext}"]
    assert (tmp_path / f"{digest}{ext}").read_bytes() == data
    assert uploads.resolve(info["ref"], tmp_path) == tmp_path / f"{digest}{ext}"


def test_the_same_bytes_twice_are_one_file_and_different_bytes_another(tmp_path: Path):
    red, blue = _encoded("PNG", colour=(255, 0, 0)), _encoded("PNG", colour=(0, 0, 255))
    first, again, other = (uploads.store(d, tmp_path, 10_000) for d in (red, red, blue))
    assert first == again and first["ref"] != other["ref"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r["ref"].removeprefix("upload:") for r in (first, other))


def test_a_camera_jpeg_with_a_second_picture_inside_is_a_jpeg(tmp_path: Path):
    """Phones write multi-picture JPEGs (MPF: a depth map or preview after the photo); Pillow calls
    them "MPO". They are JPEG files that image.load reads like any other, so they are accepted."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(buf, format="MPO", save_all=True, append_images=[Image.new("RGB", (32, 24))])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"  # what Pillow makes of it
    info = uploads.store(data, tmp_path, max_pixels=10_000)
    assert info["format"] == "jpeg" and info["ref"].endswith(".jpg") and (info["width"], info["height"]) == (32, 24)
    assert uploads.resolve(info["ref"], tmp_path).read_bytes() == data  # kept as sent, not re-encoded


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "the upload is empty"),
        (b"#!/bin/sh\necho hi\n", "not an image this server reads (PNG, JPEG or WebP); the first bytes are b'#!/bin/s'"),
        (_encoded("GIF"), "image format GIF is not accepted; send PNG, JPEG or WebP"),
        (_encoded("BMP"), "image format BMP is not accepted"),
        (_png_declaring(60_000, 60_000), "decompression bomb"),  # Pillow's own limit, at the header
        (_png_declaring(200, 100), "image declares 200x100 = 20000 pixels; this server takes at most 10000"),
        (_encoded("PNG", size=(64, 64))[:120], "the PNG file cannot be decoded"),  # truncated: the header is fine
    ],
    ids=["empty", "script", "gif", "bmp", "bomb", "over-the-limit", "truncated"],
)
def test_refused_uploads_say_why_and_leave_nothing_behind(tmp_path: Path, data: bytes, says: str, monkeypatch):
    # Pillow's guard is process-wide state: a run earlier in this test process may have raised it to
    # its pixel budget (ops.budget.allow_bombs). The "bomb" case is about Pillow's own default.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024 * 1024 * 1024 // 4 // 3)
    with pytest.raises(UploadRefused) as refused:
        uploads.store(data, tmp_path, max_pixels=10_000)
    assert says in str(refused.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "ref",
    [
        "upload:../jobs.sqlite",
        "upload:" + "a" * 64 + ".png/../../jobs.sqlite",
        "upload:" + "A" * 64 + ".png",  # only the lowercase hex the server itself hands out
        "upload:" + "a" * 64 + ".gif",
        "/etc/passwd",
        "upload:" + "a" * 63 + ".png",
    ],
)
def test_only_a_well_formed_reference_names_a_file(tmp_path: Path, ref: str):
    (tmp_path.parent / "jobs.sqlite").write_bytes(b"secret")
    with pytest.raises(UploadRefused, match="not an upload reference"):
        uploads.resolve(ref, tmp_path)


def test_a_well_formed_reference_to_nothing_stored_is_refused(tmp_path: Path):
    with pytest.raises(UploadRefused, match="no upload .* on this server"):
        uploads.resolve("upload:" + "0" * 64 + ".png", tmp_path)
    assert uploads.is_ref("upload:x") and not uploads.is_ref("assets/coffee.png") and not uploads.is_ref(3)
