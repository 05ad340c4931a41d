"""Weight-free fill: remove what a mask covers by painting it from the rest of the picture."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field

from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import Node, NodeParams, Seed, node
from editgraph.values.sockets import Image, Mask


class Filled(NamedTuple):
    image: Image
    mask: Mask  # the hole that was replaced: mask >= 0.5 grown by `grow`, 0 or 1


@node("fill", version="1.0.1")
class Fill(Node):
    """Remove the masked object without a model: the hole (mask >= 0.5, grown by `grow` px so no
    sliver of the object's edge survives) is painted from the surrounding picture, and only the
    hole's pixels change; every other pixel is the input's, bit for bit.

    method "patchmatch" (PatchMatch, the "content-aware fill" of image editors) copies texture in
    from around the hole; "smooth" (Telea-style, from the edge inward) blends the edge colours, an
    instant, blurrier fallback. The fill runs on a crop around the hole (`margin` px of
    surroundings) at most `working_size` px on its long side and is scaled back, so large photos
    stay fast. Outputs the filled image and the hole it replaced (for a refine pass over it).
    """

    arrays = "numpy"  # PatchMatch works on numpy arrays; a working size or "smooth" imports torch

    class Params(NodeParams):
        method: Literal["patchmatch", "smooth"] = Field(
            "patchmatch", description="patchmatch: texture copied from around the hole; smooth: edge colours blended inward"
        )
        grow: int = Field(4, ge=0, le=256, description="px the mask grows before filling, to cover the object's edge")
        patch_size: int = Field(3, ge=1, le=15, description="patchmatch: patch radius in px (3 = 7x7 patches)")
        seed: Seed = Field(0, description="patchmatch's random search (taken modulo 2**32); 'random' is drawn and recorded")
        margin: int = Field(64, ge=0, le=8192, description="px of surroundings around the hole the fill may copy from")
        working_size: int = Field(
            768, ge=0, le=8192, description="long side of the crop the fill runs at, px (0 = full resolution)"
        )

    def run(self, ctx: RunContext, image: Image, mask: Mask) -> Filled:
        from editgraph.ops.imaging import same_size

        from editgraph.ops.fill import FillSettings, check_hole, fill_region, hole_of

        p = self.params
        same_size("fill", image, mask, "image", "mask")
        if mask.shape[0] not in (1, image.shape[0]):
            raise NodeError(f"fill: mask batch is {mask.shape[0]} but image batch is {image.shape[0]}; use 1 or the same")
        hole = hole_of(mask, p.grow)
        check_hole(hole, "fill", p.grow)
        settings = FillSettings(p.method, p.patch_size, int(p.seed), p.margin, p.working_size)
        ctx.check_cancelled()
        return Filled(fill_region(image, hole, settings, progress=ctx.progress), hole)
