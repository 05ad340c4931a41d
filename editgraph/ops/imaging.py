"""Pixels in and out: files <-> arrays, shared by the node modules (which never import each other).

Torch-free at import: decoding and encoding work on numpy arrays (`read_pixels`, `to_uint8`), so a
run of pixel-only nodes (load, fill, save) never imports torch (issue 13: torch's import was 1.3 s
of a 3.4 s object removal). `read_image` hands the same values as torch tensors, for torch code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from editgraph.errors import NodeError
from editgraph.filehash import memo_digest
from editgraph.ops import budget
from editgraph.settings import Settings


def file_hash(path: str | Path) -> str:
    """blake3 of a file's bytes, remembered by (path, size, mtime) so a re-run does not re-read it."""
    try:
        return memo_digest(path)
    except OSError as exc:
        raise NodeError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None


@dataclass(frozen=True)
class Decoded:
    image: Any  # (1, 3, H, W) float32 0..1: a numpy array from read_pixels, a tensor from read_image
    alpha: Any  # (1, 1, H, W) float32 0..1, or None when the file has none
    info: dict  # the file's own metadata (EXIF, ICC profile ...) for carrying to outputs


def read_pixels(path: str | Path, settings: Settings | None = None) -> Decoded:
    """Decode PNG / JPEG / WebP (8 or 16 bit) to numpy arrays, applying the EXIF orientation. The
    file's size and the pixel size its header declares are checked against the budgets before any
    decoding."""
    settings = settings or Settings.from_env()
    problem = budget.image_problem(path, settings)  # stat, then the header: nothing decoded yet
    if problem is not None:
        raise NodeError(f"image {os.fspath(path)}: {problem}" if "budget" in problem else problem)
    try:
        with PILImage.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            info = {k: v for k, v in pil.info.items() if k in ("icc_profile", "exif")}
            return Decoded(*_planes(pil), info)
    except FileNotFoundError:
        raise NodeError(f"image file not found: {path}") from None
    except (OSError, PILImage.DecompressionBombError) as exc:
        raise NodeError(f"cannot decode image {path}: {exc}") from None


def read_image(path: str | Path, settings: Settings | None = None) -> Decoded:
    """read_pixels, with the planes as torch tensors (sharing the arrays' memory)."""
    import torch

    d = read_pixels(path, settings)
    return Decoded(torch.from_numpy(d.image), None if d.alpha is None else torch.from_numpy(d.alpha), d.info)


def _planes(pil: PILImage.Image) -> tuple[np.ndarray, np.ndarray | None]:
    mode = pil.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(pil, dtype=np.float32) / (65535.0 if mode != "I" or np.asarray(pil).max() > 255 else 255.0)
        t = np.ascontiguousarray(grey, dtype=np.float32)[None, None]  # (1, 1, H, W)
        return np.ascontiguousarray(np.broadcast_to(t, (1, 3, *t.shape[2:]))), None
    if mode == "F":
        t = np.asarray(pil, dtype=np.float32).clip(0, 1)[None, None]
        return np.ascontiguousarray(np.broadcast_to(t, (1, 3, *t.shape[2:]))), None
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in pil.info)
    pil = pil.convert("RGBA" if has_alpha else "RGB")
    arr = np.asarray(pil)  # (H, W, C) uint8
    # float32 / float32: correctly rounded, the same bits torch's div_(255.0) gives
    planes = arr.transpose(2, 0, 1)[None].astype(np.float32, order="C")  # (1, C, H, W), one copy
    planes /= np.float32(255.0)
    if has_alpha:
        return np.ascontiguousarray(planes[:, :3]), np.ascontiguousarray(planes[:, 3:])
    return planes, None


def as_array(x: Any) -> np.ndarray:
    """A numpy view of an image or mask: arrays as they are, a torch tensor's CPU memory."""
    if isinstance(x, np.ndarray):
        return x
    return x.detach().cpu().numpy()


def to_uint8(image: Any) -> np.ndarray:
    """(B, C, H, W) 0..1 -> (B, H, W, C) uint8, rounding to nearest (so 8-bit round trips are
    exact). Takes a numpy array or a torch tensor."""
    x = np.clip(as_array(image), 0, 1) * np.float32(255.0)
    return np.ascontiguousarray(np.rint(x).astype(np.uint8).transpose(0, 2, 3, 1))


def to_pil(image: Any, index: int = 0) -> PILImage.Image:
    arr = to_uint8(image[index : index + 1])[0]
    return PILImage.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


# Rec. 709 luma weights; they sum to 1, so a grey pixel's luminance is its own value.
LUMA = (0.2126, 0.7152, 0.0722)


def luminance(x: np.ndarray) -> np.ndarray:
    """Rec. 709 weighted sum of the channels, (B, 3, H, W) -> (B, 1, H, W), in float32 (the bits the
    torch version this replaced gave); a grey pixel keeps its exact value (the weights sum to 1
    only up to rounding)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    weighted = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    return np.where((r == g) & (g == b), r, weighted)


def same_size(what: str, a: Any, b: Any, a_name: str, b_name: str) -> None:
    """Raise a NodeError naming both sizes when two planes differ in height/width."""
    if tuple(a.shape[-2:]) != tuple(b.shape[-2:]):
        raise NodeError(
            f"{what}: {a_name} is {a.shape[-1]}x{a.shape[-2]} but {b_name} is {b.shape[-1]}x{b.shape[-2]} (width x height)"
        )
