"""Masks: where an edit happens. 1 = change, 0 = keep; values between blend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.picture_file import PictureFile
from editgraph.nodes.registry import RGB, InputPath, Node, NodeParams, node
from editgraph.values.sockets import Image, Mask

if TYPE_CHECKING:
    import torch

Channel = Literal["auto", "luminance", "alpha", "red", "green", "blue"]


def _canvas(ctx: RunContext, what: str, image: torch.Tensor | None, width: int, height: int) -> tuple[int, int, int]:
    """(batch, height, width) of a mask drawn from scratch: the image's, or the params' (checked
    against the pixel budget before anything is allocated)."""
    from editgraph.ops.budget import check_pixels

    if image is not None:
        return image.shape[0], image.shape[-2], image.shape[-1]
    if width == 0 or height == 0:
        raise NodeError(f"{what}: connect an `image` to take its size, or set width and height (got {width}x{height})")
    check_pixels(what, width, height, ctx.settings)
    return 1, height, width


def _canvas_size(params, connected: frozenset[str]) -> tuple[int, int] | None:
    """planned_size of a drawn mask: width x height when no image gives the size."""
    if "image" in connected or not (isinstance(params.width, int) and isinstance(params.height, int)):
        return None
    return params.width, params.height


def _fit(what: str, mask: torch.Tensor, like: torch.Tensor, resize: bool, names: tuple[str, str]) -> torch.Tensor:
    from editgraph.ops.imaging import same_size
    from editgraph.ops.regions import fit_to

    if resize:
        return fit_to(mask, like)
    same_size(what, like, mask, *names)
    return mask


@node("mask.load", version="1.0.3")
class LoadMask(PictureFile):
    """Read a mask from an image file: white (or opaque) = change, black (or transparent) = keep.

    channel "auto": a file with an alpha channel that is not fully opaque uses its alpha (strokes
    painted on a transparent layer mark the change); otherwise the luminance (Rec. 709) of its
    colours, so a black-and-white or greyscale file reads as drawn. 8/16-bit files keep their
    precision.
    """

    class Params(NodeParams):
        path: InputPath = Field(description="mask image file (PNG, JPEG, WebP; any mode)")
        channel: Channel = Field(
            "auto", description="which plane becomes the mask; auto = alpha if it varies, else luminance"
        )
        invert: bool = Field(False, description="swap change and keep (for files where black marks the change)")

    arrays = "numpy"  # decoding needs no torch: a pixel-only run never imports it

    def run(self, ctx: RunContext) -> Mask:
        import numpy as np

        from editgraph.ops.imaging import luminance, read_pixels

        decoded = read_pixels(self.params.path, ctx.settings)
        channel = self.params.channel
        alpha_varies = decoded.alpha is not None and bool((decoded.alpha < 1).any())
        if channel == "alpha" and decoded.alpha is None:
            raise NodeError(f"mask.load: channel 'alpha' asked for, but {self.params.path} has no alpha channel")
        if channel == "alpha" or (channel == "auto" and alpha_varies):
            mask = decoded.alpha
        elif channel in ("auto", "luminance"):
            mask = luminance(decoded.image)
        else:
            idx = ("red", "green", "blue").index(channel)
            mask = decoded.image[:, idx : idx + 1]
        mask = np.ascontiguousarray(np.clip(mask, 0, 1))
        return np.float32(1.0) - mask if self.params.invert else mask


@node("mask.from_alpha", version="1.0.0")
class MaskFromAlpha(Node):
    """Turn an image's transparency (image.load's `alpha`, 1 = opaque) into a mask: by default the
    transparent holes become the region to change (inpaint what is missing)."""

    class Params(NodeParams):
        change: Literal["transparent", "opaque"] = Field(
            "transparent", description="which part becomes 1 (the region to change)"
        )

    def run(self, ctx: RunContext, alpha: Mask) -> Mask:
        return 1.0 - alpha if self.params.change == "transparent" else alpha.clone()


@node("mask.rect", version="1.0.1")
class RectMask(Node):
    """A hard-edged rectangle of 1 on 0, sized like `image` (or width x height). The rectangle may
    reach past the frame; the part inside is drawn."""

    class Params(NodeParams):
        x: int = Field(0, ge=-65536, le=65536, description="left edge in px")
        y: int = Field(0, ge=-65536, le=65536, description="top edge in px")
        rect_width: int = Field(64, ge=0, le=65536, description="rectangle width in px")
        rect_height: int = Field(64, ge=0, le=65536, description="rectangle height in px")
        width: int = Field(0, ge=0, le=65536, description="canvas width when no image is connected")
        height: int = Field(0, ge=0, le=65536, description="canvas height when no image is connected")

    @classmethod
    def planned_size(cls, params, connected):
        return _canvas_size(params, connected)

    def run(self, ctx: RunContext, image: Image | None = None) -> Mask:
        import torch

        p = self.params
        b, h, w = _canvas(ctx, "mask.rect", image, p.width, p.height)
        mask = torch.zeros(b, 1, h, w)
        x0, y0 = max(p.x, 0), max(p.y, 0)
        mask[..., y0 : max(p.y + p.rect_height, 0), x0 : max(p.x + p.rect_width, 0)] = 1.0
        return mask


@node("mask.ellipse", version="1.0.1")
class EllipseMask(Node):
    """An ellipse of 1 on 0, sized like `image` (or width x height), its edge antialiased over one
    pixel (a signed-distance estimate) unless `antialias` is off."""

    class Params(NodeParams):
        cx: float = Field(0.5, ge=-4, le=4, description="centre x as a fraction of the width")
        cy: float = Field(0.5, ge=-4, le=4, description="centre y as a fraction of the height")
        rx: float = Field(0.25, gt=0, le=8, description="horizontal radius as a fraction of the width")
        ry: float = Field(0.25, gt=0, le=8, description="vertical radius as a fraction of the height")
        antialias: bool = Field(True, description="one-pixel soft edge instead of a stair-stepped one")
        width: int = Field(0, ge=0, le=65536, description="canvas width when no image is connected")
        height: int = Field(0, ge=0, le=65536, description="canvas height when no image is connected")

    @classmethod
    def planned_size(cls, params, connected):
        return _canvas_size(params, connected)

    def run(self, ctx: RunContext, image: Image | None = None) -> Mask:
        import torch

        p = self.params
        b, h, w = _canvas(ctx, "mask.ellipse", image, p.width, p.height)
        rx, ry = p.rx * w, p.ry * h
        # pixel centres relative to the ellipse centre, in px
        dx = (torch.arange(w, dtype=torch.float32) + 0.5 - p.cx * w).view(1, w)
        dy = (torch.arange(h, dtype=torch.float32) + 0.5 - p.cy * h).view(h, 1)
        f = (dx / rx) ** 2 + (dy / ry) ** 2 - 1.0  # (H, W): < 0 inside
        if p.antialias:
            # f / |grad f| approximates the signed distance to the edge in px
            grad = 2.0 * torch.sqrt((dx / rx**2) ** 2 + (dy / ry**2) ** 2).clamp_min(1e-12)
            mask = (0.5 - f / grad).clamp(0, 1)
        else:
            mask = (f <= 0).float()
        return mask.expand(b, 1, h, w).contiguous()


@node("mask.threshold", version="1.0.0")
class ThresholdMask(Node):
    """Make a soft mask hard: values at or above the threshold become 1, the rest 0."""

    class Params(NodeParams):
        threshold: float = Field(0.5, ge=0, le=1, description="values >= this become 1")

    def run(self, ctx: RunContext, mask: Mask) -> Mask:
        return (mask >= self.params.threshold).to(mask.dtype)


@node("mask.from_color", version="1.0.0")
class MaskFromColor(Node):
    """Select the pixels close to a colour: 1 within `tolerance` (a distance in OkLab, where 0.02
    is a just-visible difference and 0.1 is clearly different), fading to 0 over `softness`."""

    class Params(NodeParams):
        color: RGB = Field((0.0, 1.0, 0.0), description="sRGB colour, 3 values 0..1")
        tolerance: float = Field(0.1, ge=0, le=2, description="OkLab distance that still counts as the colour")
        softness: float = Field(0.05, ge=0, le=2, description="OkLab distance over which the mask fades to 0")

    def run(self, ctx: RunContext, image: Image) -> Mask:
        import torch

        from editgraph.ops.colour import srgb_to_oklab

        p = self.params
        lab = srgb_to_oklab(image)
        ref = srgb_to_oklab(torch.tensor(p.color, dtype=image.dtype).view(1, 3, 1, 1))
        dist = (lab - ref).square().sum(1, keepdim=True).sqrt()  # (B, 1, H, W)
        if p.softness == 0:
            return (dist <= p.tolerance).to(image.dtype)
        return (1.0 - (dist - p.tolerance) / p.softness).clamp(0, 1)


@node("mask.feather", version="1.0.0")
class FeatherMask(Node):
    """Soften a mask's edge with a Gaussian blur so an edit fades into its surroundings.

    The edge ramps over 2 x radius px centred on where it was (sigma = radius / 3, kernel cut at
    radius); pixels farther than `radius` from any edge stay exactly 0 or 1 (values within 1e-5
    of 0 or 1 snap to them, so a composite keeps untouched pixels bit for bit), and the mask's
    total (its mass) is preserved away from the frame border (mirror padding at the border).
    """

    class Params(NodeParams):
        radius: int = Field(8, ge=0, le=1024, description="half-width of the soft edge in px (0 = unchanged)")

    def run(self, ctx: RunContext, mask: Mask) -> Mask:
        from editgraph.ops.filters import feather

        return feather(mask, self.params.radius)


@node("mask.grow", version="1.0.0")
class GrowMask(Node):
    """Dilate the mask by `pixels` px (a disc or square of that radius); a negative value erodes.

    The frame border is neutral: growing never adds mask from outside the image and shrinking
    never eats a mask in from the border.
    """

    class Params(NodeParams):
        pixels: int = Field(8, ge=-1024, le=1024, description="px to grow (negative shrinks)")
        shape: Literal["disc", "square"] = Field(
            "disc", description="disc keeps corners round; square is cheaper and keeps rectangles square"
        )

    def run(self, ctx: RunContext, mask: Mask) -> Mask:
        from editgraph.ops.filters import dilate, erode

        n, shape = self.params.pixels, self.params.shape
        if n == 0:
            return mask
        return dilate(mask, n, shape) if n > 0 else erode(mask, -n, shape)


@node("mask.invert", version="1.0.0")
class InvertMask(Node):
    """Swap change and keep: every value v becomes 1 - v."""

    class Params(NodeParams):
        pass

    def run(self, ctx: RunContext, mask: Mask) -> Mask:
        return 1.0 - mask


@node("mask.combine", version="1.0.1")
class CombineMask(Node):
    """Combine two masks pixel by pixel: union (max), intersect (min), or subtract (a and not b:
    min(a, 1 - b)). Masks of different sizes are an error unless `resize` scales b to a."""

    class Params(NodeParams):
        mode: Literal["union", "intersect", "subtract"] = Field("union", description="how a and b combine")
        resize: bool = Field(False, description="scale b to a's size instead of failing on a size mismatch")

    def run(self, ctx: RunContext, a: Mask, b: Mask) -> Mask:
        import torch

        b = _fit("mask.combine", b, a, self.params.resize, ("a", "b"))
        if self.params.mode == "union":
            return torch.maximum(a, b)
        if self.params.mode == "intersect":
            return torch.minimum(a, b)
        return torch.minimum(a, 1.0 - b)
