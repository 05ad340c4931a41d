"""The canvas: cropping, padding, blending layers, and the crop-edit-paste-back round trip that
keeps inpainting sharp on a large photo."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import Field

from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import RGB, Node, NodeParams, node
from editgraph.values.sockets import Image, Mask

if TYPE_CHECKING:
    import torch


def _batch_match(what: str, a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    if b.shape[0] not in (1, a.shape[0]):
        raise NodeError(f"{what}: {b_name} batch is {b.shape[0]} but {a_name} batch is {a.shape[0]}; use 1 or the same")



@node("image.crop", version="1.0.0")
class CropImage(Node):
    """Cut out a rectangle of the picture. The rectangle must lie inside the image."""

    class Params(NodeParams):
        x: int = Field(0, ge=0, le=65536, description="left edge in px")
        y: int = Field(0, ge=0, le=65536, description="top edge in px")
        width: int = Field(512, ge=1, le=65536, description="width in px")
        height: int = Field(512, ge=1, le=65536, description="height in px")

    def run(self, ctx: RunContext, image: Image) -> Image:
        p = self.params
        h, w = image.shape[-2:]
        if p.x + p.width > w or p.y + p.height > h:
            raise NodeError(
                f"image.crop: rectangle x={p.x} y={p.y} {p.width}x{p.height} reaches past the {w}x{h} image "
                f"(needs x + width <= {w} and y + height <= {h})"
            )
        return image[..., p.y : p.y + p.height, p.x : p.x + p.width].contiguous()


@node("image.pad", version="1.0.1")
class PadImage(Node):
    """Add pixels on each side: repeat the edge, mirror the picture across it, or a solid colour.
    The original sits untouched at (left, top) of the result."""

    class Params(NodeParams):
        left: int = Field(0, ge=0, le=16384, description="px added on the left")
        top: int = Field(0, ge=0, le=16384, description="px added on top")
        right: int = Field(0, ge=0, le=16384, description="px added on the right")
        bottom: int = Field(0, ge=0, le=16384, description="px added at the bottom")
        fill: Literal["edge", "mirror", "color"] = Field("edge", description="what the new pixels show")
        color: RGB = Field((0.0, 0.0, 0.0), description="sRGB fill for fill='color', 0..1 each")

    @classmethod
    def planned_size(cls, params, connected):
        sides = (params.left, params.right, params.top, params.bottom)
        if not all(isinstance(v, int) for v in sides):
            return None
        return 1 + params.left + params.right, 1 + params.top + params.bottom  # around a 1x1 picture at least

    def run(self, ctx: RunContext, image: Image) -> Image:
        import torch

        from editgraph.ops.budget import check_pixels
        from editgraph.ops.filters import pad

        p = self.params
        check_pixels("image.pad", image.shape[-1] + p.left + p.right, image.shape[-2] + p.top + p.bottom, ctx.settings)
        if p.fill == "color":
            b, _, h, w = image.shape
            fill = torch.tensor(p.color, dtype=image.dtype).view(1, 3, 1, 1)
            out = fill.repeat(b, 1, h + p.top + p.bottom, w + p.left + p.right)
            out[..., p.top : p.top + h, p.left : p.left + w] = image
            return out
        return pad(image, p.left, p.right, p.top, p.bottom, p.fill)


def _multiply(a, b):
    return a * b


def _screen(a, b):
    return 1 - (1 - a) * (1 - b)


def _overlay(a, b):
    # the base decides: multiply in its shadows, screen in its highlights
    import torch

    return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))


_MODES = {"normal": lambda a, b: b, "multiply": _multiply, "screen": _screen, "overlay": _overlay}


@node("image.blend", version="1.0.1")
class BlendImage(Node):
    """Lay `top` over `base` with a blend mode (normal, multiply, screen, overlay, as in image
    editors, on sRGB values) at `opacity`, optionally only where `mask` is 1. Where the effective
    opacity is 0 the base is kept bit for bit. Different sizes are an error unless `resize`."""

    class Params(NodeParams):
        mode: Literal["normal", "multiply", "screen", "overlay"] = Field("normal", description="blend mode")
        opacity: float = Field(1.0, ge=0, le=1, description="strength of the top layer")
        resize: bool = Field(False, description="scale top (and mask) to the base's size instead of failing")

    def run(self, ctx: RunContext, base: Image, top: Image, mask: Mask | None = None) -> Image:
        import torch

        from editgraph.ops.imaging import same_size
        from editgraph.ops.regions import composite, resample

        p = self.params
        if p.resize:
            top = resample(top, *base.shape[-2:])
            mask = None if mask is None else resample(mask, *base.shape[-2:])
        same_size("image.blend", base, top, "base", "top")
        _batch_match("image.blend", base, top, "base", "top")
        blended = _MODES[p.mode](base, top).clamp(0, 1)
        if mask is None and p.opacity in (0, 1):
            return base if p.opacity == 0 else blended.expand_as(base).contiguous()
        weight = torch.full_like(base[:, :1], p.opacity)
        if mask is not None:
            same_size("image.blend", base, mask, "base", "mask")
            _batch_match("image.blend", base, mask, "base", "mask")
            weight = weight * mask
        return composite(base, blended.expand_as(base), weight)


class _BoxParams(NodeParams):
    margin: int = Field(32, ge=0, le=8192, description="px of context kept around the mask's bounding box")
    working_size: int = Field(
        1024, ge=0, le=8192, description="long side of the crop handed on, px (0 = the box's own size, no resampling)"
    )
    multiple_of: int = Field(8, ge=1, le=256, description="the crop's sides are multiples of this (8 for latents)")


class CroppedRegion(NamedTuple):
    image: Image
    mask: Mask


@node("image.crop_to_mask", version="1.0.0")
class CropToMask(Node):
    """Cut out the region around the mask and scale it to a working size, so a model sees the edit
    area at full resolution instead of a 4000 px photo shrunk to 1024.

    The box is the mask's bounding box (union over the batch) plus `margin`, grown to the working
    size's aspect ratio and slid inside the photo; the crop is scaled (bicubic) so its long side is
    `working_size` and both sides are multiples of `multiple_of`. Outputs the crop and the mask cut
    the same way. image.paste_back recomputes the same box: give it the same mask and the same
    margin / working_size / multiple_of.
    """

    Params = _BoxParams

    def run(self, ctx: RunContext, image: Image, mask: Mask) -> CroppedRegion:
        from editgraph.ops.imaging import same_size
        from editgraph.ops.regions import mask_box, resample

        p = self.params
        same_size("image.crop_to_mask", image, mask, "image", "mask")
        box = mask_box(mask, p.margin, p.working_size, p.multiple_of, "image.crop_to_mask")
        region = (..., slice(box.y0, box.y1), slice(box.x0, box.x1))
        crop = resample(image[region].contiguous(), box.work_h, box.work_w)
        sub = resample(mask[region].contiguous(), box.work_h, box.work_w)
        return CroppedRegion(crop, sub)


@node("image.paste_back", version="1.0.1")
class PasteBack(Node):
    """Put an edited crop from image.crop_to_mask back into the full photo: scale it back to its
    box and blend it in through the mask (optionally feathered first by `feather` px). Every pixel
    where the (feathered) mask is 0, including everything outside the box, stays bit for bit.

    margin, working_size and multiple_of must be those given to crop_to_mask, and `mask` the same
    mask, so the box comes out the same; a crop of another size is an error saying so.
    """

    class Params(_BoxParams):
        feather: int = Field(0, ge=0, le=1024, description="feather (mask.feather) before blending, px; keep <= margin")

    def run(self, ctx: RunContext, base: Image, crop: Image, mask: Mask) -> Image:
        from editgraph.ops.filters import feather
        from editgraph.ops.imaging import same_size
        from editgraph.ops.regions import composite, mask_box, resample

        p = self.params
        same_size("image.paste_back", base, mask, "base", "mask")
        _batch_match("image.paste_back", base, mask, "base", "mask")
        _batch_match("image.paste_back", base, crop, "base", "crop")
        box = mask_box(mask, p.margin, p.working_size, p.multiple_of, "image.paste_back")
        if tuple(crop.shape[-2:]) != (box.work_h, box.work_w):
            raise NodeError(
                f"image.paste_back: crop is {crop.shape[-1]}x{crop.shape[-2]} but this mask with margin={p.margin}, "
                f"working_size={p.working_size}, multiple_of={p.multiple_of} gives a {box.work_w}x{box.work_h} crop "
                "(width x height); use the same mask and params as image.crop_to_mask"
            )
        region = (..., slice(box.y0, box.y1), slice(box.x0, box.x1))
        # 1. the blend mask inside the box; feathering reads `feather` px beyond it (or up to the
        #    frame edge, where the blur mirrors anyway), so it equals a whole-frame mask.feather
        #    up to float rounding
        blend = mask[region]
        if p.feather:
            h, w = mask.shape[-2:]
            fy0, fx0 = max(0, box.y0 - p.feather), max(0, box.x0 - p.feather)
            fy1, fx1 = min(h, box.y1 + p.feather), min(w, box.x1 + p.feather)
            soft = feather(mask[..., fy0:fy1, fx0:fx1], p.feather)
            blend = soft[..., box.y0 - fy0 : box.y1 - fy0, box.x0 - fx0 : box.x1 - fx0]
        # 2. the crop back at the box's own size
        patch = resample(crop, box.height, box.width)
        # 3. composite inside the box only; outside it the base is copied untouched
        b = max(base.shape[0], crop.shape[0])
        out = base.expand(b, *base.shape[1:]).clone()
        out[region] = composite(out[region], patch.expand(b, *patch.shape[1:]), blend)
        return out
