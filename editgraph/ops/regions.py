"""Geometry shared by image.crop_to_mask and image.paste_back (node modules never import each
other): the crop box around a mask, computed the same way by both so no box travels in the graph."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editgraph.errors import NodeError


@dataclass(frozen=True)
class CropBox:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    work_w: int  # size the crop is scaled to (multiples of `multiple_of` where the image allows)
    work_h: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def _round_to(v: float, m: int) -> int:
    return max(m, int(round(v / m)) * m)


def _place(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) to `want` long around its centre, then slide it inside [0, limit)."""
    want = min(want, limit)
    extra = want - (hi - lo)
    if extra <= 0:
        return lo, hi
    lo -= extra // 2
    lo = min(max(lo, 0), limit - want)
    return lo, lo + want


def mask_box(mask: torch.Tensor, margin: int, working_size: int, multiple_of: int, what: str) -> CropBox:
    """The box crop_to_mask cuts and paste_back fills.

    1. the bounding box of every pixel > 0 in any batch item, grown by `margin` px, clipped;
    2. the working size: the box's long side scaled to `working_size` (0 = the box's own size),
       both sides rounded to a multiple of `multiple_of`;
    3. the box grown around its centre (and slid inside the image) to the working size's aspect,
       so the scale is the same on both axes; with working_size 0 it grows to exactly the working
       size, so the crop is cut without resampling wherever the image is large enough.
    """
    h, w = mask.shape[-2:]
    # 1. bounding box of the union over the batch
    hit = (mask > 0).flatten(0, 1).any(0)  # (H, W)
    rows = torch.nonzero(hit.any(1)).flatten()
    cols = torch.nonzero(hit.any(0)).flatten()
    if rows.numel() == 0:
        raise NodeError(f"{what}: the mask is empty (all 0), so there is no region to crop")
    y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
    bw, bh = x1 - x0, y1 - y0
    # 2. working size
    if working_size == 0:
        tw, th = math.ceil(bw / multiple_of) * multiple_of, math.ceil(bh / multiple_of) * multiple_of
        want_w, want_h = tw, th
    else:
        scale = working_size / max(bw, bh)
        tw, th = _round_to(bw * scale, multiple_of), _round_to(bh * scale, multiple_of)
        # 3. grow one side so box and working size share an aspect ratio
        if bw * th < bh * tw:
            want_w, want_h = round(bh * tw / th), bh
        else:
            want_w, want_h = bw, round(bw * th / tw)
    x0, x1 = _place(x0, x1, want_w, w)
    y0, y1 = _place(y0, y1, want_h, h)
    return CropBox(x0, y0, x1, y1, tw, th)


def resample(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking); the same size returns x itself, untouched."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    out = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0, 1)


def fit_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x scaled to like's height and width (bilinear, antialiased when shrinking); the same size
    returns x itself."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def composite(base: torch.Tensor, over: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """base where mask is 0 (bit for bit), over where it is 1, a linear mix between (exact at
    both ends, whatever lerp rounds)."""
    mixed = torch.lerp(base, over, mask)
    return torch.where(mask <= 0, base, torch.where(mask >= 1, over, mixed))
