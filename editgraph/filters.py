"""Spatial filters shared by the mask, canvas and outpaint nodes: padding by index, Gaussian blur,
grey-scale dilation / erosion. All work on (B, C, H, W) float tensors, every batch item and channel
independently."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["edge", "mirror"]

# Above this many taps a 1-D convolution is done by FFT: O(n log n) per row instead of O(n * taps).
_FFT_TAPS = 48


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
    iy = source_index(h + top + bottom, top, h, mode)
    ix = source_index(w + left + right, left, w, mode)
    return x.index_select(-2, iy).index_select(-1, ix)


def gaussian_kernel(radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of 2*radius+1 taps with sigma = radius / 3 (the kernel ends at 3 sigma)."""
    sigma = radius / 3.0
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _conv_last(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'Valid' correlation along the last axis: the input is already padded by len(kernel)//2 per side."""
    taps = kernel.numel()
    n = x.shape[-1] - taps + 1
    if taps <= _FFT_TAPS:
        flat = x.reshape(-1, 1, 1, x.shape[-1])  # (N, 1, 1, L)
        out = F.conv2d(flat, kernel.view(1, 1, 1, taps))
        return out.reshape(*x.shape[:-1], n)
    # 1. circular convolution of length L wraps only into the first taps-1 outputs, which we drop
    size = x.shape[-1]
    spec = torch.fft.rfft(x, n=size) * torch.fft.rfft(kernel.flip(0), n=size)
    # 2. output i of the valid part sits at index i + taps - 1 of the circular result
    return torch.fft.irfft(spec, n=size)[..., taps - 1 : taps - 1 + n]


def gaussian_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur (sigma = radius / 3, kernel truncated at radius) with mirror padding,
    so the frame edge does not pull values towards black. radius 0 returns x itself."""
    if radius <= 0:
        return x
    kernel = gaussian_kernel(radius).to(x.dtype)
    # 1. blur rows (last axis), mirror-padded by the radius
    out = _conv_last(pad(x, radius, radius, 0, 0, "mirror"), kernel)
    # 2. blur columns the same way, on the transposed tensor so the kernel runs along the last axis
    out = _conv_last(pad(out, 0, 0, radius, radius, "mirror").transpose(-1, -2), kernel)
    return out.transpose(-1, -2).contiguous()


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


def dilate(x: torch.Tensor, radius: int, shape: Literal["disc", "square"] = "disc") -> torch.Tensor:
    """Grey-scale dilation: each pixel becomes the max over a disc (or square) of the given radius.
    Outside the frame counts as 0, so dilation never invents mask at the border."""
    if radius <= 0:
        return x
    h = x.shape[-2]
    if shape == "square":
        rows = _window_max_last(x, [radius])[radius]
        cols = _window_max_last(rows.transpose(-1, -2), [radius])[radius]
        return cols.transpose(-1, -2).contiguous()
    # A disc is a stack of horizontal runs: the run at row offset dy has half-width sqrt(r^2 - dy^2).
    offsets = range(-radius, radius + 1)
    half = {dy: int(math.floor(math.sqrt(radius * radius - dy * dy) + 1e-9)) for dy in offsets}
    runs = _window_max_last(x, list(half.values()))
    out = torch.zeros_like(x)
    for dy in offsets:
        run = runs[half[dy]]
        # output row y takes the run of input row y + dy
        if dy >= 0:
            out[..., : h - dy, :] = torch.maximum(out[..., : h - dy, :], run[..., dy:, :])
        else:
            out[..., -dy:, :] = torch.maximum(out[..., -dy:, :], run[..., : h + dy, :])
    return out


def erode(x: torch.Tensor, radius: int, shape: Literal["disc", "square"] = "disc") -> torch.Tensor:
    """Grey-scale erosion (min over the disc/square). Outside the frame counts as 1, so a mask that
    touches the border stays touching it."""
    if radius <= 0:
        return x
    return 1.0 - dilate(1.0 - x, radius, shape)
