"""How big a picture or a file may be: checked before anything is allocated or read.

One place both validation and run time use. Sizes come from params (a node's planned_size hook,
checked by `validate` and at the start of every run), from a file's header (read by Pillow
without decoding the pixels), and from a file's length (os.stat). The limits are
Settings.max_pixels and Settings.max_file_size (EDITGRAPH_MAX_PIXELS, EDITGRAPH_MAX_FILE_SIZE).
Torch-free: `validate` must not import it.
"""

from __future__ import annotations

import os
import stat
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
    header declares: Image.open reads only the header), or None. Undecodable files are left to
    the decoder, whose error says more."""
    problem = file_problem(path, settings.max_file_size, "EDITGRAPH_MAX_FILE_SIZE", "image")
    if problem is not None:
        return problem
    from PIL import Image as PILImage

    allow_bombs(settings)
    try:
        size = header_size(path)
    except PILImage.DecompressionBombError as exc:
        # Pillow refuses only past twice its limit, which allow_bombs keeps >= ours: over budget.
        return f"over the pixel budget of {settings.max_pixels:,} px per picture (EDITGRAPH_MAX_PIXELS): {exc}"
    return None if size is None else pixels_problem(*size, settings)


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
