"""Outpainting: a bigger canvas around the photo, pre-filled, and the mask of what a model must paint."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import RGB, Node, NodeParams, node
from editgraph.values.sockets import Image, Mask

if TYPE_CHECKING:
    import torch

Aspect = Literal["none", "1:1", "4:5", "5:4", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9"]
Anchor = Literal["center", "top", "bottom", "left", "right", "top_left", "top_right", "bottom_left", "bottom_right"]


class Outpainted(NamedTuple):
    image: Image
    mask: Mask


def _split(total: int, anchor: Anchor, before_word: str, after_word: str) -> tuple[int, int]:
    """Split `total` px of padding into (before, after): an original anchored to the `before_word`
    side ('left' / 'top') gets all its padding after it, and the reverse; otherwise half each."""
    if before_word in anchor:
        return 0, total
    if after_word in anchor:
        return total, 0
    return total // 2, total - total // 2


def _ramp(n: int, overlap: int, feather: int) -> torch.Tensor:
    """Mask values along n px of the original, measured from the padded side: 1 for the first
    overlap - feather px, then a smoothstep down over `feather` px, 0 from `overlap` px on."""
    import torch

    d = torch.arange(n, dtype=torch.float32)
    t = ((overlap - d) / (feather + 1)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _soft_fill(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Gaussian blur for the pre-fill. Wide radii blur a copy shrunk by radius / 8 and scale it
    back: the fill is only a starting point for the model, and this is ~radius/8 squared cheaper."""
    import torch.nn.functional as F

    from editgraph.ops.filters import gaussian_blur

    factor = max(1, radius // 8)
    if factor == 1:
        return gaussian_blur(x, radius).clamp_(0, 1)
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(math.ceil(h / factor), math.ceil(w / factor)), mode="area")
    small = gaussian_blur(small, max(1, round(radius / factor)))
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)


@node("outpaint.pad", version="1.0.1")
class OutpaintPad(Node):
    """Extend the canvas around the photo for outpainting.

    1. the new canvas: `left/top/right/bottom` px, or (aspect != "none") the smallest canvas of
       that aspect ratio containing the photo, which then sits at `anchor`;
    2. both sides rounded up to a multiple of `multiple_of` (the extra px also follow `anchor`);
    3. the new area is pre-filled so the model starts from plausible colour: edge repeats the
       border pixels, mirror reflects the photo, blur is a blurred edge-repeat, color a solid fill;
    4. the photo is copied in untouched: canvas[top : top + H, left : left + W] == photo, bit for
       bit, with (left, top) = the padding before it (centred: half the padding, floor);
    5. the mask is 1 on the new area and reaches `overlap` px into the photo along the extended
       sides, the last `feather` px of that band (at most all of it) fading smoothly to 0, so the
       seam is repainted and the repaint blends in.
    """

    class Params(NodeParams):
        left: int = Field(0, ge=0, le=16384, description="px added on the left (aspect = none)")
        top: int = Field(0, ge=0, le=16384, description="px added on top (aspect = none)")
        right: int = Field(0, ge=0, le=16384, description="px added on the right (aspect = none)")
        bottom: int = Field(0, ge=0, le=16384, description="px added at the bottom (aspect = none)")
        aspect: Aspect = Field("none", description="target width:height; none = use the per-side px")
        anchor: Anchor = Field("center", description="where the photo sits in the new canvas")
        multiple_of: int = Field(8, ge=1, le=256, description="canvas sides rounded up to a multiple of this")
        fill: Literal["edge", "mirror", "blur", "color"] = Field("edge", description="how the new area is pre-filled")
        color: RGB = Field((0.5, 0.5, 0.5), description="sRGB fill for fill='color', 0..1 each")
        blur_radius: int = Field(32, ge=1, le=1024, description="blur of the edge fill for fill='blur', px")
        overlap: int = Field(16, ge=0, le=4096, description="px the mask reaches into the photo along extended sides")
        feather: int = Field(8, ge=0, le=4096, description="inner px of the overlap that fade to 0; <= overlap")

    @classmethod
    def planned_size(cls, params, connected):
        sides = (params.left, params.right, params.top, params.bottom)
        if params.aspect != "none" or not all(isinstance(v, int) for v in sides):
            return None  # the canvas follows the photo's size
        return 1 + params.left + params.right, 1 + params.top + params.bottom  # around a 1x1 photo at least

    def _geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding."""
        p = self.params
        m = p.multiple_of
        if p.aspect == "none":
            # 2. the alignment px follow the anchor; the asked-for px stay where they were asked
            cw, ch = w + p.left + p.right, h + p.top + p.bottom
            ex_l, ex_r = _split(math.ceil(cw / m) * m - cw, p.anchor, "left", "right")
            ex_t, ex_b = _split(math.ceil(ch / m) * m - ch, p.anchor, "top", "bottom")
            return p.left + ex_l, p.right + ex_r, p.top + ex_t, p.bottom + ex_b
        # 1. the smallest canvas of the aspect ratio holding the photo ...
        a, b = (int(v) for v in p.aspect.split(":"))
        if w * b >= h * a:
            cw, ch = w, math.ceil(w * b / a)
        else:
            cw, ch = math.ceil(h * a / b), h
        # 2. ... rounded up, and all of its padding placed by the anchor
        cw, ch = math.ceil(cw / m) * m, math.ceil(ch / m) * m
        left, right = _split(cw - w, p.anchor, "left", "right")
        top, bottom = _split(ch - h, p.anchor, "top", "bottom")
        return left, right, top, bottom

    def run(self, ctx: RunContext, image: Image) -> Outpainted:
        import torch

        from editgraph.ops.budget import check_pixels
        from editgraph.ops.filters import pad

        p = self.params
        b, _, h, w = image.shape
        left, right, top, bottom = self._geometry(h, w)
        H, W = h + top + bottom, w + left + right
        check_pixels("outpaint.pad", W, H, ctx.settings)  # before the canvas and mask are allocated
        inside = (..., slice(top, top + h), slice(left, left + w))
        # 3. pre-fill
        if p.fill == "color":
            canvas = torch.tensor(p.color, dtype=image.dtype).view(1, 3, 1, 1).repeat(b, 1, H, W)
        elif p.fill == "blur":
            canvas = _soft_fill(pad(image, left, right, top, bottom, "edge"), p.blur_radius)
        else:
            canvas = pad(image, left, right, top, bottom, p.fill)
        # 4. the photo, untouched
        canvas[inside] = image
        # 5. mask: new area, plus the overlap band inside the photo along each extended side
        cols = torch.zeros(w)
        rows = torch.zeros(h)
        if p.overlap:
            # the fade lies inside the overlap band, so it is at most the band's width
            feather = min(p.feather, p.overlap)
            ramp_w, ramp_h = _ramp(w, p.overlap, feather), _ramp(h, p.overlap, feather)
            if left:
                cols = torch.maximum(cols, ramp_w)
            if right:
                cols = torch.maximum(cols, ramp_w.flip(0))
            if top:
                rows = torch.maximum(rows, ramp_h)
            if bottom:
                rows = torch.maximum(rows, ramp_h.flip(0))
        mask = torch.ones(b, 1, H, W, dtype=image.dtype)
        mask[inside] = torch.maximum(rows.view(h, 1), cols.view(1, w)).to(image.dtype)
        return Outpainted(canvas, mask)
