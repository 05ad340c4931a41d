"""How big a picture or a file may be: checked before anything is allocated or read.

One place both validation and run time use. Sizes come from params (a node's planned_size hook,
checked by `validate` and at the start of every run), from a file's header (PNG and JPEG read
here, any other format by Pillow, without decoding the pixels), and from a file's length (os.stat). The limits are
Settings.max_pixels and Settings.max_file_size (EDITGRAPH_MAX_PIXELS, EDITGRAPH_MAX_FILE_SIZE).
Torch-free: `validate` must not import it.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from editgraph.errors import NodeError
from editgraph.settings import Settings, format_size


# 65 is the largest LUT_3D_SIZE grading tools write (Resolve, Photoshop): 274,625 rows, ~7 MB of
# text, ~50 MB while parsed. A legal 256^3 cube took 5.3 GB to parse: refused by both caps.
MAX_LUT_SIZE = 65
MAX_CUBE_BYTES = 16 << 20  # a 65^3 cube with long decimals fits with room; checked before reading


def cube_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be read as a .cube (missing, not a file, over MAX_CUBE_BYTES), or None."""
    return file_problem(path, MAX_CUBE_BYTES, f"a .cube file holds at most LUT_3D_SIZE {MAX_LUT_SIZE}")


def pixels_problem(width: int, height: int, settings: Settings, batch: int = 1) -> str | None:
    """Why a (batch of) width x height picture is over the budget, or None."""
    n = width * height * batch
    if n <= settings.max_pixels:
        return None
    many = f"{batch} x " if batch > 1 else ""
    return f"{many}{width}x{height} = {n:,} px is over the pixel budget of {settings.max_pixels:,} px per picture (EDITGRAPH_MAX_PIXELS)"


def check_pixels(what: str, width: int, height: int, settings: Settings | None, batch: int = 1) -> None:
    """Raise a NodeError naming `what`, the size and the limit when the picture is over budget."""
    problem = pixels_problem(width, height, settings or Settings.from_env(), batch)
    if problem is not None:
        raise NodeError(f"{what}: {problem}")


def file_problem(path: str | os.PathLike[str], limit: int, limit_name: str, what: str = "input") -> str | None:
    """Why `path` cannot be read as an input file (missing, not a regular file, too large), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{what} file not found: {os.fspath(path)}"
    except OSError as exc:
        return f"cannot read {os.fspath(path)}: {exc.strerror}"
    kind = file_kind(st.st_mode)
    if kind is not None:
        return f"input {os.fspath(path)} is {kind}, not a regular file"
    if st.st_size > limit:
        return f"input file {os.fspath(path)} is {format_size(st.st_size)}, over the limit of {format_size(limit)} ({limit_name})"
    return None


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def image_problem(path: str | os.PathLike[str], settings: Settings) -> str | None:
    """Why an image file cannot be loaded within the budgets (file size, then the pixel size its
    header declares), or None. Undecodable files are left to the decoder, whose error says more."""
    problem = file_problem(path, settings.max_file_size, "EDITGRAPH_MAX_FILE_SIZE", "image")
    if problem is not None:
        return problem
    size = common_header_size(path)
    if size is None:  # another format, or an odd header: Pillow's reading decides
        from PIL import Image as PILImage

        allow_bombs(settings)
        try:
            size = header_size(path)
        except PILImage.DecompressionBombError as exc:
            # Pillow refuses only past twice its limit, which allow_bombs keeps >= ours: over budget.
            return f"over the pixel budget of {settings.max_pixels:,} px per picture (EDITGRAPH_MAX_PIXELS): {exc}"
    return None if size is None else pixels_problem(*size, settings)


_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they hold the size): C0-CF but DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SEGMENTS = 512  # APPn, ICC, EXIF, tables... a real file has a few dozen before its frame


def common_header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) of a PNG (its IHDR) or a baseline/progressive JPEG (its frame header), read
    from the header as Pillow reads it; None for any other format or anything unusual (Pillow then
    reads it). The two formats of nearly every workflow input, without importing Pillow: checking
    a workflow stays quick (issue 9). tests/ops/test_budget.py holds it to Pillow's answers."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if head[:8] == _PNG and head[12:16] == b"IHDR" and len(head) == 24:
                size = struct.unpack(">II", head[16:24])
            elif head[:2] == b"\xff\xd8":
                size = _jpeg_frame_size(f)
            else:
                return None
    except OSError:
        return None
    return size if size is not None and size[0] > 0 and size[1] > 0 else None


def _jpeg_frame_size(f) -> tuple[int, int] | None:
    f.seek(2)
    for _ in range(_JPEG_SEGMENTS):
        byte = f.read(1)
        if byte != b"\xff":
            return None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker or marker[0] == 0xDA:  # end of file, or the scan began without a frame header
            return None
        if 0xD0 <= marker[0] <= 0xD7 or marker[0] == 0x01:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        n = struct.unpack(">H", length)[0]
        if marker[0] in _SOF:
            body = f.read(5)
            if n < 7 or len(body) < 5:
                return None
            height, width = struct.unpack(">HH", body[1:5])
            return width, height
        f.seek(n - 2, os.SEEK_CUR)
    return None


def header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding; None when Pillow cannot tell."""
    import warnings

    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            # Pillow warns past its own limit; the budget, checked on this size, is what decides.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(Path(path)) as pil:
                return pil.size
    except PILImage.DecompressionBombError:
        raise
    except (OSError, ValueError, SyntaxError):
        return None


def allow_bombs(settings: Settings) -> None:
    """Pillow refuses, at open, images over twice its own MAX_IMAGE_PIXELS (179 Mpx) and warns
    above it: a guard for programs with no budget. Ours is checked on the header right after open,
    so Pillow's is raised to cover the budget (never lowered: another caller may need more)."""
    from PIL import Image as PILImage

    current = PILImage.MAX_IMAGE_PIXELS
    if current is not None and current < settings.max_pixels:
        PILImage.MAX_IMAGE_PIXELS = settings.max_pixels
