"""Colour spaces shared by the grade and mask nodes: sRGB <-> linear light, OkLab, OkLCh.

Tensors are (B, 3, H, W). The transfer functions extend to values outside 0..1 (the linear
segment below 0, the power curve above 1) so an intermediate brighter than white survives a round trip;
only the node that hands an Image on clamps.
OkLab: Björn Ottosson, "A perceptual color space for image processing" (2020).
"""

from __future__ import annotations

import torch

# Linear sRGB -> LMS cone response, then cube root -> OkLab (Ottosson's published matrices).
_RGB_TO_LMS = torch.tensor(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_TO_LAB = torch.tensor(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_LAB_TO_LMS = torch.tensor(
    [
        [1.0, 0.3963377774, 0.2158037573],
        [1.0, -0.1055613458, -0.0638541728],
        [1.0, -0.0894841775, -1.2914855480],
    ]
)
_LMS_TO_RGB = torch.tensor(
    [
        [4.0767416621, -3.3077115913, 0.2309699292],
        [-1.2684380046, 2.6097574011, -0.3413193965],
        [-0.0041960863, -0.7034186147, 1.7076147010],
    ]
)

from editgraph.ops.imaging import LUMA  # noqa: E402,F401  (torch-free home; grade reads it from here)


def mix_channels(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to the channel axis of (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(x.dtype), x)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 decoding: sRGB-encoded values -> linear light."""
    # In-place chains: on CPU these functions are bound by memory traffic, not arithmetic, so one
    # reused buffer beats a fresh tensor per step. Negative inputs take the linear segment, whose
    # branch `where` keeps (the power branch's NaN for them is discarded), so no sign pass is needed.
    out = (x + 0.055).div_(1.055).pow_(2.4)
    return torch.where(x <= 0.04045, x / 12.92, out, out=out)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 encoding: linear light -> sRGB-encoded values."""
    out = x.pow(1 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(x <= 0.0031308, x * 12.92, out, out=out)


def _cbrt_(x: torch.Tensor) -> torch.Tensor:
    """Signed cube root, reusing x's buffer (out-of-gamut negatives must not turn into NaN)."""
    return x.abs().pow_(1 / 3).copysign_(x)


def linear_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """Linear sRGB (B, 3, H, W) -> OkLab (L, a, b)."""
    lms = _cbrt_(mix_channels(_RGB_TO_LMS, rgb))
    return mix_channels(_LMS_TO_LAB, lms)


def oklab_to_linear(lab: torch.Tensor) -> torch.Tensor:
    """OkLab (B, 3, H, W) -> linear sRGB."""
    lms = mix_channels(_LAB_TO_LMS, lab).pow_(3)
    return mix_channels(_LMS_TO_RGB, lms)


def srgb_to_oklab(x: torch.Tensor) -> torch.Tensor:
    return linear_to_oklab(srgb_to_linear(x))


def oklab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    return linear_to_srgb(oklab_to_linear(lab))


def oklab_to_oklch(lab: torch.Tensor) -> torch.Tensor:
    """(L, a, b) -> (L, C, h) with hue h in radians."""
    L, a, b = lab.unbind(1)
    return torch.stack((L, torch.hypot(a, b), torch.atan2(b, a)), 1)


def oklch_to_oklab(lch: torch.Tensor) -> torch.Tensor:
    L, C, h = lch.unbind(1)
    return torch.stack((L, C * torch.cos(h), C * torch.sin(h)), 1)
