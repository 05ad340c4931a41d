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

import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from editgraph.errors import NodeError
from editgraph.ops.imaging import as_array, to_uint8

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


def _like(result: np.ndarray, given: Any) -> Any:
    """`result` as the kind of array the caller gave: numpy stays numpy, a tensor gets a tensor."""
    if isinstance(given, np.ndarray):
        return result
    import torch

    return torch.from_numpy(result)


def _dilate_disc(hard: np.ndarray, radius: int) -> np.ndarray:
    """Max over a disc of `radius` px of a (B, 1, H, W) 0/1 mask, outside the frame counting as 0:
    the same disc (rows of half-width floor(sqrt(r^2 - dy^2))) as ops.filters.dilate. Only the
    hole's box grown by the radius can change, so the work stays there, on booleans; the run of
    half-width k is the run of k - 1 widened by two ORs."""
    h, w = hard.shape[-2:]
    hit = hard.reshape(-1, h, w).any(0)
    if not hit.any():
        return hard.copy()
    y0, y1, x0, x1 = _box(hit, radius)
    sub = hard[..., y0:y1, x0:x1] > 0
    sh, sw = sub.shape[-2:]
    padded = np.pad(sub, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
    half = {dy: int(math.floor(math.sqrt(radius * radius - dy * dy) + 1e-9)) for dy in range(-radius, radius + 1)}
    runs, run = {}, padded[..., radius : radius + sw]
    for k in range(max(half.values()) + 1):  # max over [x - k, x + k] of every padded row
        if k:
            run = run | padded[..., radius - k : radius - k + sw] | padded[..., radius + k : radius + k + sw]
        runs[k] = run
    out = np.zeros_like(sub)
    for dy, k in half.items():  # output row y takes the run of input row y + dy
        out |= runs[k][..., radius + dy : radius + dy + sh, :]
    grown = np.zeros_like(hard)
    grown[..., y0:y1, x0:x1] = out
    return grown


def hole_of(mask: Any, grow: int) -> Any:
    """The region to replace: mask >= 0.5, grown by `grow` px (a disc), as a 0/1 float mask.
    Growing covers the sliver of the object's edge a hand-drawn mask leaves, which would otherwise
    be copied into the fill as a streak."""
    hard = (as_array(mask) >= 0.5).astype(np.float32)
    return _like(_dilate_disc(hard, grow) if grow > 0 else hard, mask)


def check_hole(hole: Any, what: str, grow: int) -> None:
    """Refuse a hole with nothing in it or nothing around it, naming the batch item."""
    hole = as_array(hole)
    for b in range(hole.shape[0]):
        covered = int(np.count_nonzero(hole[b]))
        if covered == 0:
            raise NodeError(f"{what}: the mask of batch item {b} is empty (no pixel >= 0.5), so there is nothing to fill")
        if covered == hole[b].size:
            grown = f" after growing it by grow={grow} px" if grow else ""
            raise NodeError(
                f"{what}: the mask of batch item {b} covers the whole picture{grown}, so nothing is left to fill "
                "from; mask only the object to remove"
            )


def _box(hole: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the hole's bounding box grown by margin, clipped to the frame."""
    h, w = hole.shape[-2:]
    plane = hole.reshape(h, w) > 0
    rows, cols = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
    y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
    return y0, y1, x0, x1


def _patchmatch(image: np.ndarray, hole: np.ndarray, patch_size: int, seed: int) -> np.ndarray:
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
    rgb = to_uint8(image[:1])[0]  # (h, w, 3): float32 * 255 rounded half to even, the bits torch's mul/round_/clamp_ gave
    holes = np.ascontiguousarray(hole[0, 0].astype(np.uint8))  # (h, w)
    with _PATCHMATCH_LOCK:
        # the native seed is a 32-bit unsigned int: larger seeds are taken modulo 2**32
        patchmatch.set_random_seed(seed % 2**32)
        filled = patchmatch.inpaint(rgb, holes, patch_size=patch_size)
    return np.asarray(filled).transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)


def _smooth(image: Any, hole: Any) -> Any:
    """Onion-peel fill of (1, 3, h, w) through (1, 1, h, w) torch tensors, from the edge of the
    hole inward."""
    import torch
    import torch.nn.functional as F

    from editgraph.ops.filters import gaussian_kernel

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


def _resample(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """ops.regions.resample (bicubic, antialiased) on a numpy array: the one resample, through torch."""
    import torch

    from editgraph.ops.regions import resample

    return resample(torch.from_numpy(np.ascontiguousarray(x)), height, width).numpy()


def _working_hole(crop_hole: np.ndarray, wh: int, ww: int) -> np.ndarray:
    """The crop's hole at the working size, grown 2 px so that no working pixel outside it mixes in
    object pixels (the bicubic kernel reaches 2 px). Grown by _dilate_disc, the same disc as
    ops.filters.dilate and the same bits on a 0/1 mask, so fill keeps one dilation of its own."""
    import torch
    import torch.nn.functional as F

    small = F.interpolate(torch.from_numpy(np.ascontiguousarray(crop_hole)), size=(wh, ww), mode="area") > 0
    return _dilate_disc(small.numpy().astype(np.float32), 2)


def fill_region(image: Any, hole: Any, s: FillSettings, progress=None) -> Any:
    """Fill `hole` (B or 1, 1, H, W, 0/1) in `image` (B, 3, H, W). Pixels outside the hole are the
    input's, bit for bit; pixels inside come from the fill (resampled back when it ran at a
    smaller working size). Returns the kind of array `image` is (numpy array or torch tensor)."""
    given = image
    image, hole = as_array(image), as_array(hole)
    batch = max(image.shape[0], hole.shape[0])
    out = np.array(np.broadcast_to(image, (batch, *image.shape[1:])))  # a copy: the input stays as it is
    for b in range(batch):
        img = image[b if image.shape[0] > 1 else 0][None]
        hb = hole[b if hole.shape[0] > 1 else 0][None]
        # 1. the crop: the hole's box plus the surroundings the fill may copy from
        y0, y1, x0, x1 = _box(hb, s.margin)
        crop, crop_hole = img[..., y0:y1, x0:x1], hb[..., y0:y1, x0:x1]
        ch, cw = crop.shape[-2:]
        # 2. the working size: shrink a large crop (and grow its hole, see _working_hole)
        scale = s.working_size / max(ch, cw) if s.working_size and max(ch, cw) > s.working_size else 1.0
        if scale < 1.0:
            wh, ww = max(1, round(ch * scale)), max(1, round(cw * scale))
            work, work_hole = _resample(crop, wh, ww), _working_hole(crop_hole, wh, ww)
        else:
            work, work_hole = crop, crop_hole
        # 3. fill
        if s.method == "patchmatch":
            filled = _patchmatch(work, work_hole, s.patch_size, s.seed)
        else:
            import torch

            filled = _smooth(torch.from_numpy(np.ascontiguousarray(work)), torch.from_numpy(np.ascontiguousarray(work_hole))).numpy()
        if scale < 1.0:
            filled = _resample(filled, ch, cw)
        # 4. paste back: only the hole's pixels change
        region = out[b : b + 1, :, y0:y1, x0:x1]
        out[b : b + 1, :, y0:y1, x0:x1] = np.where(crop_hole > 0, filled, region)
        if progress is not None:
            progress(b + 1, batch)
    return _like(out, given)
