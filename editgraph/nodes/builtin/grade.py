"""Colour grading: exposure, white balance, contrast, saturation, lift/gamma/gain, 3D LUTs, and
matching the palette of a reference image."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import InputPath, Node, NodeParams, node
from editgraph.values.sockets import Image, Mask

if TYPE_CHECKING:
    import torch

# Per-channel (r, g, b) controls, range-checked when the workflow is bound.
_Lift = Annotated[float, Field(ge=-1, le=1)]
_Gamma = Annotated[float, Field(ge=0.01, le=10)]
_Gain = Annotated[float, Field(ge=0, le=16)]

# Mid-grey (18 % reflectance) in sRGB encoding: the pivot contrast turns around.
@functools.cache
def _mid_grey() -> float:
    import torch

    from editgraph.ops.colour import linear_to_srgb

    return float(linear_to_srgb(torch.tensor(0.18)))


# Per-unit strength of temperature / tint as a log gain on the linear channels: temperature +1
# multiplies red by e^0.3 = 1.35 and blue by 0.74 before luminance is restored; a visible but
# not garish warm-up, so the -2..2 range covers what a photographer would use.
_WB_STRENGTH = 0.3
# Chroma at which vibrance stops acting (OkLCh C of a strongly saturated colour).
_VIBRANCE_CHROMA = 0.3


@node("grade", version="1.0.1")
class Grade(Node):
    """Colour-grade the picture. The stages run in this order, each skipped at its identity value,
    so the default settings return the input unchanged (the same tensor):

    1. exposure: multiply linear light by 2^exposure (+1 stop doubles it);
    2. white balance: temperature warms (+) or cools (-), tint pushes magenta (+) or green (-),
       as channel gains in linear light normalised so grey keeps its luminance;
    3. contrast: scale the sRGB-encoded values around mid-grey (18 % linear, 0.461 encoded);
    4. lift / gamma / gain per channel on encoded values: (gain * (x + lift * (1 - x)))^(1 / gamma);
    5. saturation multiplies OkLCh chroma (hue and lightness kept); vibrance adds chroma mostly to
       muted colours (+) or takes it mostly from them (-);
    6. a 3D LUT from a .cube file (trilinear), mixed in by lut_strength.

    Values are clamped to 0..1 once, at the end.
    """

    class Params(NodeParams):
        exposure: float = Field(0.0, ge=-16, le=16, description="stops; +1 doubles linear light")
        temperature: float = Field(0.0, ge=-2, le=2, description="+ warmer (more red, less blue), - cooler")
        tint: float = Field(0.0, ge=-2, le=2, description="+ magenta, - green")
        contrast: float = Field(1.0, ge=0, le=4, description="1 = unchanged; >1 spreads values away from mid-grey")
        saturation: float = Field(1.0, ge=0, le=4, description="multiplies OkLCh chroma; 0 = greyscale")
        vibrance: float = Field(0.0, ge=-1, le=1, description="chroma change weighted towards muted colours")
        lift: tuple[_Lift, _Lift, _Lift] = Field(
            (0.0, 0.0, 0.0), description="per-channel (r, g, b) raise of the blacks, each -1..1"
        )
        gamma: tuple[_Gamma, _Gamma, _Gamma] = Field(
            (1.0, 1.0, 1.0), description="per-channel (r, g, b) midtone gamma 0.01..10, >1 brightens"
        )
        gain: tuple[_Gain, _Gain, _Gain] = Field(
            (1.0, 1.0, 1.0), description="per-channel (r, g, b) multiplier of the whites, 0..16"
        )
        lut: InputPath = Field("", description=".cube 3D LUT file to apply last; empty = none")
        lut_strength: float = Field(1.0, ge=0, le=1, description="mix of the LUT result over the graded image")

    @classmethod
    def source_token(cls, params: Params) -> str | None:
        from editgraph.ops.imaging import file_hash

        return file_hash(params.lut) if params.lut else None

    @classmethod
    def check_sources(cls, params, *, deep=True, settings=None):
        """The LUT file exists and is small enough to be a .cube (checked before it is read)."""
        problems = super().check_sources(params, deep=deep, settings=settings)
        if problems or not isinstance(params.lut, str) or not params.lut:
            return problems
        from editgraph.ops.budget import cube_file_problem

        problem = cube_file_problem(params.lut)
        return [("lut", problem)] if problem else []

    def run(self, ctx: RunContext, image: Image) -> Image:
        import torch

        from editgraph.ops.colour import linear_to_srgb, oklab_to_srgb, srgb_to_linear, srgb_to_oklab
        from editgraph.ops.lut import apply_cube, load_cube

        p = self.params
        x = image
        # 1-2. exposure and white balance act on light, so in linear
        wb = _white_balance_gains(p.temperature, p.tint)
        if p.exposure != 0 or wb is not None:
            lin = srgb_to_linear(x)
            scale = torch.full((1, 3, 1, 1), 2.0**p.exposure, dtype=x.dtype)
            if wb is not None:
                scale = scale * wb.to(x.dtype)
            x = linear_to_srgb(lin * scale)
        # 3. contrast around mid-grey
        if p.contrast != 1:
            x = (x - _mid_grey()) * p.contrast + _mid_grey()
        # 4. lift / gamma / gain
        if p.lift != (0, 0, 0) or p.gain != (1, 1, 1):
            lift = torch.tensor(p.lift, dtype=x.dtype).view(1, 3, 1, 1)
            gain = torch.tensor(p.gain, dtype=x.dtype).view(1, 3, 1, 1)
            x = gain * (x + lift * (1 - x))
        if p.gamma != (1, 1, 1):
            inv = 1.0 / torch.tensor(p.gamma, dtype=x.dtype).view(1, 3, 1, 1)
            x = x.abs().pow(inv).copysign(x)
        # 5. saturation / vibrance scale chroma, i.e. OkLab (a, b) with hue and L untouched
        if p.saturation != 1 or p.vibrance != 0:
            lab = srgb_to_oklab(x)
            chroma = torch.hypot(lab[:, 1:2], lab[:, 2:3])  # (B, 1, H, W)
            factor = p.saturation * (1 + p.vibrance * (1 - (chroma / _VIBRANCE_CHROMA).clamp(0, 1)))
            lab[:, 1:] *= factor
            x = oklab_to_srgb(lab)
        # 6. LUT
        if p.lut and p.lut_strength > 0:
            looked_up = apply_cube(load_cube(p.lut), x)
            x = looked_up if p.lut_strength == 1 else torch.lerp(x, looked_up, p.lut_strength)
        if x is image:
            return image
        return x.clamp(0, 1)


def _white_balance_gains(temperature: float, tint: float) -> torch.Tensor | None:
    """(1, 3, 1, 1) linear gains for a temperature / tint shift, luminance-neutral; None at 0, 0."""
    import torch

    from editgraph.ops.colour import LUMA

    if temperature == 0 and tint == 0:
        return None
    r = math.exp(_WB_STRENGTH * temperature)
    b = math.exp(-_WB_STRENGTH * temperature)
    g = math.exp(-_WB_STRENGTH * tint)
    # divide by the gains' luminance so a grey card stays as bright, only its hue moves
    luma = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    return torch.tensor([r / luma, g / luma, b / luma]).view(1, 3, 1, 1)


@node("grade.match", version="1.0.0")
class MatchColors(Node):
    """Give the source the palette of a reference image: shift and scale each OkLab channel so its
    mean and spread (standard deviation) match the reference's (a Reinhard-style transfer in a
    perceptual space), mixed in by `strength`. Matching an image to itself changes nothing.

    `mask` (optional, 1 = measure here) restricts where the source's statistics are measured,
    e.g. the product and not the backdrop; the transfer still applies to every pixel.
    A reference batch of 1 serves every source image; otherwise batches pair up.
    """

    class Params(NodeParams):
        strength: float = Field(1.0, ge=0, le=1, description="0 = unchanged, 1 = full transfer")
        channels: Literal["all", "color", "lightness"] = Field(
            "all", description="all; color = only OkLab a/b (keep brightness); lightness = only L"
        )

    def run(self, ctx: RunContext, image: Image, reference: Image, mask: Mask | None = None) -> Image:
        import torch

        from editgraph.ops.colour import oklab_to_srgb, srgb_to_oklab

        p = self.params
        if p.strength == 0:
            return image
        if reference.shape[0] not in (1, image.shape[0]):
            raise NodeError(
                f"grade.match: reference batch is {reference.shape[0]} but image batch is {image.shape[0]}; "
                "use a reference batch of 1 or the same batch"
            )
        weight = None
        if mask is not None:
            if mask.shape[-2:] != image.shape[-2:]:
                raise NodeError(
                    f"grade.match: mask is {mask.shape[-1]}x{mask.shape[-2]} but image is "
                    f"{image.shape[-1]}x{image.shape[-2]} (width x height)"
                )
            weight = _sample(mask.expand(image.shape[0], 1, *image.shape[-2:]))
        # 1. statistics per batch item and channel, in OkLab, from an even grid of samples (every
        #    pixel up to ~1 MP): the reference is converted only where sampled
        lab = srgb_to_oklab(image)
        mu_s, sd_s = _stats(_sample(lab), weight)
        mu_r, sd_r = _stats(srgb_to_oklab(_sample(reference)), None)
        # 2. standardise with the source's statistics, de-standardise with the reference's
        scale = sd_r / sd_s.clamp_min(1e-6)
        moved = (lab - mu_s) * scale + mu_r
        keep = {"all": [], "color": [0], "lightness": [1, 2]}[p.channels]
        for c in keep:
            moved[:, c] = lab[:, c]
        # 3. mix by strength and back to sRGB
        out = moved if p.strength == 1 else torch.lerp(lab, moved, p.strength)
        return oklab_to_srgb(out).clamp(0, 1)


_SAMPLES = 1 << 20


def _sample(x: torch.Tensor) -> torch.Tensor:
    """Every k-th pixel on both axes, k chosen so at most ~1 M pixels remain: an unbiased estimate
    of mean and spread, the same grid for any image of the same size (so self-matching is exact)."""
    k = max(1, math.ceil(math.sqrt(x.shape[-1] * x.shape[-2] / _SAMPLES)))
    return x if k == 1 else x[..., ::k, ::k]


def _stats(lab: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(batch, channel) mean and standard deviation, (B, 3, 1, 1) each, optionally weighted."""
    if weight is None:
        mean = lab.mean((2, 3), keepdim=True)
        var = (lab - mean).square().mean((2, 3), keepdim=True)
        return mean, var.sqrt()
    total = weight.sum((2, 3), keepdim=True)
    if bool((total <= 0).any()):
        raise NodeError("grade.match: the mask is empty (all 0) for some batch item; nothing to measure")
    mean = (lab * weight).sum((2, 3), keepdim=True) / total
    var = ((lab - mean).square() * weight).sum((2, 3), keepdim=True) / total
    return mean, var.sqrt()
