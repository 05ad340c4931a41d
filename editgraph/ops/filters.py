"""Spatial filters shared by the mask, canvas and outpaint nodes: padding by index, Gaussian blur,
grey-scale dilation / erosion. All work on (B, C, H, W) float tensors, every batch item and channel
independently."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["edge", "mirror"]

# Up to this many taps a 1-D convolution is a sum of shifted copies; above, an FFT along the axis
# (O(n log n) per row whatever the radius). F.conv2d with one channel measured 2-7x slower than
# the FFT at every radius on this CPU build, so it is not used.
_SHIFT_TAPS = 5


def source_index(n_out: int, before: int, n_in: int, mode: PadMode) -> torch.Tensor:
    """For each output position of an axis padded by `before` (and whatever remains after), the
    input position it copies. "edge" repeats the border pixel; "mirror" reflects about the border
    pixel (a b c | b a), repeating the reflection for pads longer than the axis."""
    pos = torch.arange(n_out) - before
    if mode == "edge" or n_in == 1:
        return pos.clamp(0, n_in - 1)
    period = 2 * (n_in - 1)
    pos = pos.remainder(period)
    return torch.where(pos < n_in, pos, period - pos)


def pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int, mode: PadMode) -> torch.Tensor:
    """Pad H and W by any amount (F.pad's reflect needs pads smaller than the axis; this does not)."""
    h, w = x.shape[-2:]
    # F.pad does the same copies without building index tensors where its limits allow
    if mode == "edge" and x.dim() == 4:
        return F.pad(x, (left, right, top, bottom), mode="replicate")
    if mode == "mirror" and x.dim() == 4 and max(left, right) < w and max(top, bottom) < h:
        return F.pad(x, (left, right, top, bottom), mode="reflect")
    iy = source_index(h + top + bottom, top, h, mode)
    ix = source_index(w + left + right, left, w, mode)
    return x.index_select(-2, iy).index_select(-1, ix)


def gaussian_kernel(radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of 2*radius+1 taps with sigma = radius / 3 (the kernel ends at 3 sigma)."""
    sigma = radius / 3.0
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _pad_axis(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Mirror-pad one spatial axis by r per side. F.pad's reflect is the same mirror and ~50x
    faster than gathering by index, but only allows pads shorter than the axis."""
    n = x.shape[dim]
    if r < n:
        return F.pad(x, (r, r, 0, 0) if dim == -1 else (0, 0, r, r), mode="reflect")
    return pad(x, r, r, 0, 0, "mirror") if dim == -1 else pad(x, 0, 0, r, r, "mirror")


def _fast_len(n: int) -> int:
    """The smallest length >= n with no prime factor above 13: pocketfft is fast on those and
    several times slower on a nearby large prime (measured: padding 1040 up to 1080 only cost)."""
    v = n
    while True:
        rest = v
        for p in (2, 3, 5, 7, 11, 13):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return v
        v += 1


def _conv_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """'Valid' correlation along one spatial axis (-1 = W, -2 = H) of (N, 1, H, W) that is already
    padded by len(kernel) // 2 per side on that axis."""
    taps = kernel.numel()
    n = x.shape[dim] - taps + 1
    if taps <= _SHIFT_TAPS:
        # a few taps: weighted sum of shifted views, each one fused multiply-add pass
        out = x.narrow(dim, 0, n) * float(kernel[0])
        for i in range(1, taps):
            out.add_(x.narrow(dim, i, n), alpha=float(kernel[i]))
        return out
    # 1. circular convolution of length >= the padded length wraps only into the first taps-1
    #    outputs (the zeros appended up to the fast length add nothing) ...
    size = _fast_len(x.shape[dim])
    kspec = torch.fft.rfft(kernel.flip(0), n=size).view(-1, *([1] * (-dim - 1)))
    spec = torch.fft.rfft(x, n=size, dim=dim).mul_(kspec)
    # 2. ... so the valid part is what follows them
    return torch.fft.irfft(spec, n=size, dim=dim).narrow(dim, taps - 1, n)


def gaussian_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur (sigma = radius / 3, kernel truncated at radius) with mirror padding,
    so the frame edge does not pull values towards black. radius 0 returns x itself."""
    if radius <= 0:
        return x
    kernel = gaussian_kernel(radius).to(x.dtype)
    flat = x.reshape(-1, 1, *x.shape[-2:])  # (B*C, 1, H, W): every plane blurred alike
    # 1. rows, then 2. columns: two 1-D passes instead of one (2r+1)^2 kernel
    out = _conv_axis(_pad_axis(flat, radius, -1), kernel, -1)
    out = _conv_axis(_pad_axis(out, radius, -2), kernel, -2)
    return out.reshape(x.shape)


# Feathered values this close to 0 or 1 snap to it: the FFT leaves ~1e-7 of rounding noise where
# the exact blur is 0 or 1, and a composite through the mask must keep untouched pixels bit for bit.
_SNAP = 1e-5


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Gaussian-blur a 0..1 mask (see gaussian_blur); where the blur is within 1e-5 of 0 or 1 it is
    set to exactly 0 or 1, so pixels more than `radius` from an edge keep their 0 or 1."""
    if radius <= 0:
        return mask
    out = gaussian_blur(mask, radius).clamp_(0, 1)
    out = torch.where(out < _SNAP, 0.0, out)
    return torch.where(out > 1 - _SNAP, 1.0, out)


def _window_max_last(x: torch.Tensor, half_widths: list[int]) -> dict[int, torch.Tensor]:
    """Max over the centred window [i - w, i + w] along the last axis, for each w in half_widths,
    outside the tensor counting as 0. One sparse table (log2 levels) serves every width."""
    r = max(half_widths)
    w_in = x.shape[-1]
    padded = F.pad(x, (r, r))  # (..., W + 2r)
    levels = [padded]
    span = 1
    while span * 2 <= 2 * r + 1:
        prev = levels[-1]
        # level k holds the max of 2**k consecutive values starting at each index
        nxt = torch.maximum(prev[..., : prev.shape[-1] - span], prev[..., span:])
        levels.append(nxt)
        span *= 2
    out: dict[int, torch.Tensor] = {}
    for w in set(half_widths):
        n = 2 * w + 1
        k = n.bit_length() - 1
        table, s = levels[k], 1 << k
        # two overlapping power-of-two spans cover the window exactly
        start = r - w
        left = table[..., start : start + w_in]
        right = table[..., start + n - s : start + n - s + w_in]
        out[w] = torch.maximum(left, right)
    return out


def _dilate_plane(x: torch.Tensor, radius: int, shape: Literal["disc", "square"]) -> torch.Tensor:
    h = x.shape[-2]
    if shape == "square":
        rows = _window_max_last(x, [radius])[radius]
        cols = _window_max_last(rows.transpose(-1, -2), [radius])[radius]
        return cols.transpose(-1, -2).contiguous()
    # A disc is a stack of horizontal runs: the run at row offset dy has half-width sqrt(r^2 - dy^2).
    # A row offset of h or more reaches no input row from any output row (a 4-row mask grown by 10):
    # those offsets are skipped, or their slices would be empty on one side only.
    reach = min(radius, h - 1)
    offsets = range(-reach, reach + 1)
    half = {dy: int(math.floor(math.sqrt(radius * radius - dy * dy) + 1e-9)) for dy in offsets}
    runs = _window_max_last(x, list(half.values()))
    out = torch.zeros_like(x)
    for dy in offsets:
        run = runs[half[dy]]
        # output row y takes the run of input row y + dy
        dst, src = (out[..., : h - dy, :], run[..., dy:, :]) if dy >= 0 else (out[..., -dy:, :], run[..., : h + dy, :])
        torch.maximum(dst, src, out=dst)  # in place: no temporary per row offset
    return out


def _morph(x: torch.Tensor, radius: int, shape: Literal["disc", "square"], erode: bool) -> torch.Tensor:
    # 1. only pixels within `radius` of a nonzero pixel can change (dilation), or only nonzero ones
    #    (erosion: the centre is in the window, so 0 stays 0): work on that box alone
    hit = (x > 0).reshape(-1, *x.shape[-2:]).any(0)  # (H, W)
    rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return x.clone()
    h, w = x.shape[-2:]
    y0, y1 = max(0, int(rows[0]) - radius), min(h, int(rows[-1]) + 1 + radius)
    x0, x1 = max(0, int(cols[0]) - radius), min(w, int(cols[-1]) + 1 + radius)
    sub = x[..., y0:y1, x0:x1]
    # 2. a hard mask runs as bytes: a quarter of the memory traffic, the same max
    binary = bool(((sub == 0) | (sub == 1)).all())
    work = sub.to(torch.uint8) if binary else sub
    if erode:
        # erosion is dilation of the complement; the band between the box and the crop edge is
        # 0 and stays 0, so what the padding claims beyond the crop edge does not matter
        res = 1 - _dilate_plane(1 - work, radius, shape)
    else:
        res = _dilate_plane(work, radius, shape)
    out = torch.zeros_like(x)
    out[..., y0:y1, x0:x1] = res.to(x.dtype)
    return out


def dilate(x: torch.Tensor, radius: int, shape: Literal["disc", "square"] = "disc") -> torch.Tensor:
    """Grey-scale dilation of a 0..1 mask: each pixel becomes the max over a disc (or square) of
    the given radius. Outside the frame counts as 0, so dilation never invents mask at the border."""
    if radius <= 0:
        return x
    return _morph(x, radius, shape, erode=False)


def erode(x: torch.Tensor, radius: int, shape: Literal["disc", "square"] = "disc") -> torch.Tensor:
    """Grey-scale erosion (min over the disc/square) of a 0..1 mask. Outside the frame counts as 1,
    so a mask that touches the border stays touching it."""
    if radius <= 0:
        return x
    return _morph(x, radius, shape, erode=True)
