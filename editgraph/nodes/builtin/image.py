"""Image files in and out, resizing, compositing."""

from __future__ import annotations

import io
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.picture_file import PictureFile
from editgraph.nodes.registry import InputPath, Node, NodeParams, node
from editgraph.values.sockets import Artifact, Image, Mask


class LoadedImage(NamedTuple):
    image: Image
    alpha: Mask


@node("image.load", version="1.0.2")
class LoadImage(PictureFile):
    """Read a PNG, JPEG or WebP photo (8 or 16 bit), upright per its EXIF orientation.

    `alpha` is the file's transparency as a mask (1 = opaque); all ones when the file has none.
    """

    arrays = "numpy"  # decoding needs no torch: a pixel-only run never imports it

    class Params(NodeParams):
        path: InputPath = Field(description="image file to read")

    def run(self, ctx: RunContext) -> LoadedImage:
        import numpy as np

        from editgraph.ops.imaging import read_pixels

        decoded = read_pixels(self.params.path, ctx.settings)
        alpha = decoded.alpha if decoded.alpha is not None else np.ones_like(decoded.image[:, :1])
        return LoadedImage(decoded.image, alpha)


_SAVE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


@node("image.save", version="1.0.1")
class SaveImage(Node):
    """Encode the image as a file in the run's output folder (PNG carries the workflow that made it).

    A batch of B images is written as name_0.png ... name_{B-1}.png.
    """

    arrays = "numpy"  # encoding needs no torch

    class Params(NodeParams):
        path: str = Field("out.png", description="file name inside the output folder (.png, .jpg, .webp)")
        quality: int = Field(95, ge=1, le=100, description="JPEG / WebP quality")

        @field_validator("path")
        @classmethod
        def _inside_output_folder(cls, v: str) -> str:
            if any(ord(c) < 32 for c in v):  # NUL, newlines: no file system or viewer wants them
                raise ValueError("must not contain control characters (NUL, newline, tab ...)")
            for flavour in (PurePosixPath(v), PureWindowsPath(v)):
                if flavour.is_absolute() or flavour.drive or ".." in flavour.parts:
                    raise ValueError("must be a relative path inside the output folder (no '..', not absolute)")
            if PurePosixPath(v).suffix.lower() not in _SAVE_SUFFIXES:
                raise ValueError(f"file type must be one of {sorted(_SAVE_SUFFIXES)}")
            return v

    def run(self, ctx: RunContext, image: Image) -> Artifact:
        from editgraph.ops.imaging import to_pil

        path = PurePosixPath(self.params.path)
        fmt = _SAVE_SUFFIXES[path.suffix.lower()]
        files = {}
        for i in range(image.shape[0]):
            name = str(path) if image.shape[0] == 1 else str(path.with_name(f"{path.stem}_{i}{path.suffix}"))
            buf = io.BytesIO()
            extra = {} if fmt == "PNG" else {"quality": self.params.quality}
            to_pil(image, i).save(buf, format=fmt, **extra)
            files[name] = buf.getvalue()
        return Artifact(files)


@node("image.resize", version="1.0.1")
class ResizeImage(Node):
    """Scale the image to a width and/or height (0 keeps the aspect ratio), optionally snapped to a multiple."""

    class Params(NodeParams):
        width: int = Field(0, ge=0, le=16384, description="target width in px; 0 = from height and aspect")
        height: int = Field(0, ge=0, le=16384, description="target height in px; 0 = from width and aspect")
        multiple_of: int = Field(1, ge=1, le=256, description="round the size to a multiple of this (8 for latents)")
        filter: Literal["bicubic", "bilinear", "nearest", "area"] = Field("bicubic", description="resampling filter")

    @classmethod
    def planned_size(cls, params, connected):
        if isinstance(params.width, int) and isinstance(params.height, int) and params.width and params.height:
            return params.width, params.height
        return None

    def run(self, ctx: RunContext, image: Image) -> Image:
        import torch.nn.functional as F

        from editgraph.ops.budget import check_pixels

        h, w = image.shape[-2:]
        p = self.params
        if p.width == 0 and p.height == 0:
            raise NodeError("image.resize needs width or height (or both); both are 0")
        tw = p.width or max(1, round(w * p.height / h))
        th = p.height or max(1, round(h * p.width / w))
        tw, th = (max(p.multiple_of, round(v / p.multiple_of) * p.multiple_of) for v in (tw, th))
        check_pixels("image.resize", tw, th, ctx.settings)
        if (th, tw) == (h, w):
            return image
        if p.filter in ("bicubic", "bilinear"):
            # antialias: downscaling without it aliases fine texture (moire on fabric, hair).
            out = F.interpolate(image, size=(th, tw), mode=p.filter, align_corners=False, antialias=True)
        else:
            out = F.interpolate(image, size=(th, tw), mode=p.filter)
        return out.clamp_(0, 1)


@node("image.scale", version="1.0.1")
class ScaleImage(Node):
    """Scale the image by a factor (2 doubles both sides) or to a number of megapixels, keeping
    its aspect ratio."""

    class Params(NodeParams):
        factor: float = Field(0.0, ge=0.0, le=16.0, description="how much larger each side becomes (0.5 halves it); 0 = use megapixels")
        megapixels: float = Field(0.0, ge=0.0, le=256.0, description="scale to about this many megapixels (of 1024² pixels); 0 = use factor")
        multiple_of: int = Field(1, ge=1, le=256, description="round each side to a multiple of this")
        filter: Literal["bicubic", "bilinear", "nearest", "area"] = Field("bicubic", description="resampling filter")

        @model_validator(mode="after")
        def _one_way(self):
            if (self.factor > 0) == (self.megapixels > 0):
                raise ValueError(f"give exactly one of factor and megapixels (> 0), got factor={self.factor}, megapixels={self.megapixels}")
            return self

    def run(self, ctx: RunContext, image: Image) -> Image:
        import math

        h, w = image.shape[-2:]
        p = self.params
        # the factor and the rounding as ComfyUI's ImageScaleBy / ImageScaleToTotalPixels compute
        # them, so an imported workflow keeps its sizes
        scale = p.factor or math.sqrt(int(p.megapixels * 1024 * 1024) / (w * h))
        tw, th = (max(p.multiple_of, round(v * scale / p.multiple_of) * p.multiple_of) for v in (w, h))
        # image.resize does the resampling (and the pixel budget check): one resample in the project
        return ResizeImage(ResizeImage.Params(width=tw, height=th, filter=p.filter)).run(ctx, image)


@node("image.composite", version="1.0.1")
class CompositeImage(Node):
    """Lay `overlay` over `base` through `mask`: 1 takes the overlay, 0 keeps the base bit for bit."""

    class Params(NodeParams):
        resize_overlay: bool = Field(False, description="scale overlay and mask to the base's size instead of failing")

    def run(self, ctx: RunContext, base: Image, overlay: Image, mask: Mask | None = None) -> Image:
        from editgraph.ops.imaging import same_size
        from editgraph.ops.regions import composite, fit_to

        if self.params.resize_overlay:
            overlay = fit_to(overlay, base)
            mask = None if mask is None else fit_to(mask, base)
        same_size("image.composite", base, overlay, "base", "overlay")
        if mask is None:
            return overlay.expand_as(base).clone()
        same_size("image.composite", base, mask, "base", "mask")
        return composite(base, overlay, mask)

