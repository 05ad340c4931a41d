"""Weight-free hole filling: paint the masked region from the rest of the picture, no model.

Two methods, both deterministic:

- patchmatch: PatchMatch inpainting (Barnes et al., SIGGRAPH 2009, through PyPatchMatch): the hole
  is rebuilt from patches copied from the surroundings, coarse to fine, so texture (wood grain,
  fabric) continues into it. This is the "content-aware fill" of image editors.
- smooth: a Telea-style fill (A. Telea, "An image inpainting technique based on the fast marching
  method", 2004) without its gradient term: the hole is filled from its edge inward, one ring at a
  time, each pixel the Gaussian-weighted mean of the already-known pixels within 2 px. Instant and
  smooth (no texture); our own code, because OpenCV's cv2.inpaint comes in a 61 MB wheel.

fill_region() does the geometry common to both: the crop around the hole (so a 24 MP photo is not
filled whole), an optional working size inside that crop, and the paste back, which replaces the
hole's pixels only: every other pixel is returned bit for bit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from editgraph.errors import NodeError
from editgraph.ops.filters import dilate, gaussian_kernel
from editgraph.ops.regions import resample

FillMethod = Literal["patchmatch", "smooth"]

# PyPatchMatch keeps its seed in process-wide native state: seeding and filling must not interleave
# between two threads (a server runs nodes concurrently), or one fill would run with the other's seed.
_PATCHMATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class FillSettings:
    method: FillMethod = "patchmatch"
    patch_size: int = 3  # PatchMatch's patch radius: 3 (7x7 patches) measured better and 6x faster than its default 15
    seed: int = 0
    margin: int = 64  # px of surroundings around the hole's box the fill may copy from (full resolution)
    working_size: int = 768  # long side of the crop the fill runs at; 0 = the crop's own size


def hole_of(mask: torch.Tensor, grow: int) -> torch.Tensor:
    """The region to replace: mask >= 0.5, grown by `grow` px (a disc), as a 0/1 float mask.
    Growing covers the sliver of the object's edge a hand-drawn mask leaves, which would otherwise
    be copied into the fill as a streak."""
    hard = (mask >= 0.5).to(torch.float32)
    return dilate(hard, grow) if grow > 0 else hard


def check_hole(hole: torch.Tensor, what: str, grow: int) -> None:
    """Refuse a hole with nothing in it or nothing around it, naming the batch item."""
    for b in range(hole.shape[0]):
        covered = int(hole[b].sum())
        if covered == 0:
            raise NodeError(f"{what}: the mask of batch item {b} is empty (no pixel >= 0.5), so there is nothing to fill")
        if covered == hole[b].numel():
            grown = f" after growing it by grow={grow} px" if grow else ""
            raise NodeError(
                f"{what}: the mask of batch item {b} covers the whole picture{grown}, so nothing is left to fill "
                "from; mask only the object to remove"
            )


def _box(hole: torch.Tensor, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the hole's bounding box grown by margin, clipped to the frame."""
    h, w = hole.shape[-2:]
    rows = torch.nonzero(hole.reshape(h, w).any(1)).flatten()
    cols = torch.nonzero(hole.reshape(h, w).any(0)).flatten()
    y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
    return y0, y1, x0, x1


def _patchmatch(image: torch.Tensor, hole: torch.Tensor, patch_size: int, seed: int) -> torch.Tensor:
    """PatchMatch fill of (1, 3, h, w) through (1, 1, h, w); returns (1, 3, h, w) float 0..1 whose
    hole pixels are 8-bit values (PyPatchMatch works on uint8)."""
    try:
        import patchmatch
    except ImportError:
        raise NodeError(
            "fill: method 'patchmatch' needs PyPatchMatch: pip install 'editgraph[fill]' (or pypatchmatch); "
            "method 'smooth' needs nothing"
        ) from None
    if not patchmatch.patchmatch_available:
        raise NodeError("fill: PyPatchMatch is installed but its native library did not load on this platform; use method 'smooth'")
    rgb = image[0].permute(1, 2, 0).mul(255.0).round_().clamp_(0, 255).to(torch.uint8).contiguous().numpy()  # (h, w, 3)
    holes = hole[0, 0].to(torch.uint8).contiguous().numpy()  # (h, w)
    with _PATCHMATCH_LOCK:
        # the native seed is a 32-bit unsigned int: larger seeds are taken modulo 2**32
        patchmatch.set_random_seed(seed % 2**32)
        filled = patchmatch.inpaint(rgb, holes, patch_size=patch_size)
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1)[None].float().div_(255.0)


def _smooth(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Onion-peel fill of (1, 3, h, w) through (1, 1, h, w), from the edge of the hole inward."""
    radius = 2
    k1 = gaussian_kernel(radius)  # sigma = 2/3 px: the nearest ring dominates, as in Telea's weights
    kernel = (k1[:, None] * k1[None, :]).view(1, 1, 2 * radius + 1, 2 * radius + 1)
    known = (hole <= 0).to(image.dtype)  # (1, 1, h, w)
    values = image * known
    left = hole > 0
    h, w = hole.shape[-2:]
    while True:
        rows, cols = left[0, 0].any(1).nonzero().flatten(), left[0, 0].any(0).nonzero().flatten()
        if rows.numel() == 0:
            break
        # 1. only the box around what is left can change; the zero padding beyond the frame
        #    counts as unknown, as it should
        y0, y1 = max(0, int(rows[0]) - radius), min(h, int(rows[-1]) + 1 + radius)
        x0, x1 = max(0, int(cols[0]) - radius), min(w, int(cols[-1]) + 1 + radius)
        box = (..., slice(y0, y1), slice(x0, x1))
        v, k, lf = values[box], known[box], left[box]
        # 2. weighted sums of the known colours, and of the weights, around each pixel
        num = F.conv2d(v, kernel.expand(3, 1, -1, -1), padding=radius, groups=3)
        den = F.conv2d(k, kernel, padding=radius)
        # 3. the front: hole pixels with a known neighbour take their neighbours' weighted mean
        front = lf & (den > 1e-6)
        if not bool(front.any()):  # only a hole covering the whole frame has no front; refused earlier
            break
        values[box] = torch.where(front, num / den.clamp_min(1e-12), v)
        known[box] = torch.where(front, 1.0, k)
        left[box] = lf & ~front
    return values.clamp_(0, 1)


def fill_region(image: torch.Tensor, hole: torch.Tensor, s: FillSettings, progress=None) -> torch.Tensor:
    """Fill `hole` (B or 1, 1, H, W, 0/1) in `image` (B, 3, H, W). Pixels outside the hole are the
    input's, bit for bit; pixels inside come from the fill (resampled back when it ran at a
    smaller working size)."""
    batch = max(image.shape[0], hole.shape[0])
    out = image.expand(batch, *image.shape[1:]).clone()
    for b in range(batch):
        img = image[b if image.shape[0] > 1 else 0][None]
        hb = hole[b if hole.shape[0] > 1 else 0][None]
        # 1. the crop: the hole's box plus the surroundings the fill may copy from
        y0, y1, x0, x1 = _box(hb, s.margin)
        crop, crop_hole = img[..., y0:y1, x0:x1], hb[..., y0:y1, x0:x1]
        ch, cw = crop.shape[-2:]
        # 2. the working size: shrink a large crop; its hole grows 2 px so that no working pixel
        #    outside it mixes in object pixels (the bicubic kernel reaches 2 px)
        scale = s.working_size / max(ch, cw) if s.working_size and max(ch, cw) > s.working_size else 1.0
        if scale < 1.0:
            wh, ww = max(1, round(ch * scale)), max(1, round(cw * scale))
            work = resample(crop.contiguous(), wh, ww)
            work_hole = dilate((F.interpolate(crop_hole, size=(wh, ww), mode="area") > 0).float(), 2)
        else:
            work, work_hole = crop, crop_hole
        # 3. fill
        if s.method == "patchmatch":
            filled = _patchmatch(work, work_hole, s.patch_size, s.seed)
        else:
            filled = _smooth(work, work_hole)
        if scale < 1.0:
            filled = resample(filled, ch, cw)
        # 4. paste back: only the hole's pixels change
        region = out[b : b + 1, :, y0:y1, x0:x1]
        out[b : b + 1, :, y0:y1, x0:x1] = torch.where(crop_hole > 0, filled, region)
        if progress is not None:
            progress(b + 1, batch)
    return out
