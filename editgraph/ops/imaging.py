"""Pixels in and out: files <-> tensors, shared by the node modules (which never import each other)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
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
    image: torch.Tensor  # (1, 3, H, W) float32 0..1
    alpha: torch.Tensor | None  # (1, 1, H, W) float32 0..1, or None when the file has none
    info: dict  # the file's own metadata (EXIF, ICC profile ...) for carrying to outputs


def read_image(path: str | Path, settings: Settings | None = None) -> Decoded:
    """Decode PNG / JPEG / WebP (8 or 16 bit), applying the EXIF orientation. The file's size and
    the pixel size its header declares are checked against the budgets before any decoding."""
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


def _planes(pil: PILImage.Image) -> tuple[torch.Tensor, torch.Tensor | None]:
    mode = pil.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(pil, dtype=np.float32) / (65535.0 if mode != "I" or np.asarray(pil).max() > 255 else 255.0)
        t = torch.from_numpy(np.ascontiguousarray(grey))[None, None]  # (1, 1, H, W)
        return t.expand(1, 3, *t.shape[2:]).contiguous(), None
    if mode == "F":
        t = torch.from_numpy(np.asarray(pil, dtype=np.float32).clip(0, 1).copy())[None, None]
        return t.expand(1, 3, *t.shape[2:]).contiguous(), None
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in pil.info)
    pil = pil.convert("RGBA" if has_alpha else "RGB")
    arr = torch.from_numpy(np.asarray(pil).copy())  # (H, W, C) uint8
    planes = arr.permute(2, 0, 1)[None].float().div_(255.0)  # (1, C, H, W)
    if has_alpha:
        return planes[:, :3].contiguous(), planes[:, 3:].contiguous()
    return planes.contiguous(), None


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) 0..1 -> (B, H, W, C) uint8, rounding to nearest (so 8-bit round trips are exact)."""
    return image.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def to_pil(image: torch.Tensor, index: int = 0) -> PILImage.Image:
    arr = to_uint8(image[index : index + 1])[0]
    return PILImage.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def same_size(what: str, a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    """Raise a NodeError naming both sizes when two planes differ in height/width."""
    if a.shape[-2:] != b.shape[-2:]:
        raise NodeError(
            f"{what}: {a_name} is {a.shape[-1]}x{a.shape[-2]} but {b_name} is {b.shape[-1]}x{b.shape[-2]} (width x height)"
        )
