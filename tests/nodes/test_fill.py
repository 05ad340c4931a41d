"""The weight-free fill node: only the grown hole changes, the fill looks like its surroundings,
seeds reproduce, large photos go through a working size, bad masks fail clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from editgraph.ops.colour import srgb_to_oklab
from editgraph.nodes.context import RunContext
from editgraph.errors import NodeError
from editgraph.ops.filters import dilate
from editgraph.ops.imaging import read_image
from editgraph.nodes.builtin.fill import Fill
from editgraph.ops.fill import hole_of

from tests.conftest import ASSETS

CTX = RunContext("f", "fill")

# The colour measure: every filled pixel lies within this OkLab distance of some pixel in the
# 16 px ring around the hole. 0.02 is a just-visible difference; PatchMatch on the spoon measures
# 0.032, a hole of uniform noise 0.37, and the tiny diffusion model's repaint 0.38.
RING_PX = 16
MAX_OKLAB = 0.05


def colour_distance(out: torch.Tensor, hole: torch.Tensor, ring_px: int = RING_PX, step: int = 1) -> torch.Tensor:
    """For each pixel in the hole: OkLab distance to the nearest colour of the ring around it
    (every `step`-th pixel of both on each axis, for large photos)."""
    inside = hole[0, 0] > 0
    ring = (dilate(hole, ring_px)[0, 0] > 0) & ~inside
    lab = srgb_to_oklab(out)[0].permute(1, 2, 0)  # (H, W, 3)
    pick = (slice(None, None, step), slice(None, None, step))
    filled, around = lab[pick][inside[pick]], lab[pick][ring[pick]]
    return torch.cat([torch.cdist(chunk, around).min(1).values for chunk in filled.split(4096)])


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return read_image(ASSETS / "coffee.png").image  # (1, 3, 400, 600)


@pytest.fixture(scope="module")
def spoon() -> torch.Tensor:
    return read_image(ASSETS / "coffee-spoon-mask.png").image[:, :1]


def fill(image, mask, **params):
    return Fill(Fill.Params(**params)).run(CTX, image=image, mask=mask)


@pytest.mark.slow
def test_patchmatch_changes_only_the_grown_hole_and_matches_the_surroundings(photo, spoon):
    out, hole = fill(photo, spoon, grow=4)
    assert torch.equal(hole, hole_of(spoon, 4))
    assert hole.sum() > (spoon >= 0.5).sum() + 500  # grown by 4 px all round
    keep = (hole == 0).expand_as(photo)
    assert torch.equal(out[keep], photo[keep])
    changed = (out != photo).any(1, keepdim=True)
    assert changed[hole > 0].float().mean() > 0.9  # the spoon is gone, not left in place
    d = colour_distance(out, hole)
    assert d.max() <= MAX_OKLAB, f"a filled pixel is {d.max():.3f} from every surrounding colour"


def test_the_colour_measure_rejects_a_fill_that_invents_colours(photo, spoon):
    hole = hole_of(spoon, 4)
    noise = torch.where(hole > 0, torch.rand(photo.shape, generator=torch.Generator().manual_seed(0)), photo)
    assert colour_distance(noise, hole).max() > 4 * MAX_OKLAB


@pytest.mark.slow
def test_same_seed_same_fill_other_seed_other_fill(photo, spoon):
    a, _ = fill(photo, spoon, seed=7)
    b, _ = fill(photo, spoon, seed=7)
    c, _ = fill(photo, spoon, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_smooth_fill_stays_within_the_edge_colours(photo, spoon):
    out, hole = fill(photo, spoon, method="smooth", grow=3)
    keep = (hole == 0).expand_as(photo)
    assert torch.equal(out[keep], photo[keep])
    # every filled value is a weighted mean of pixels at most 2 px outside the hole
    edge = ((dilate(hole, 2) > 0) & (hole == 0)).expand_as(photo)[0]
    inside = (hole > 0).expand_as(photo)[0]
    for c in range(3):
        lo, hi = photo[0, c][edge[c]].min(), photo[0, c][edge[c]].max()
        vals = out[0, c][inside[c]]
        assert lo - 1e-6 <= vals.min() and vals.max() <= hi + 1e-6
    assert colour_distance(out, hole).max() <= MAX_OKLAB


@pytest.mark.slow
def test_large_photo_fills_at_working_size_and_keeps_full_resolution_outside(photo, spoon):
    big = F.interpolate(photo, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)  # 2400 x 1600
    mask = F.interpolate(spoon, scale_factor=4, mode="nearest")
    out, hole = fill(big, mask, grow=12, working_size=256)
    assert out.shape == big.shape
    keep = (hole == 0).expand_as(big)
    assert torch.equal(out[keep], big[keep])
    assert (out != big)[~keep].float().mean() > 0.9
    assert colour_distance(out, hole, ring_px=4 * RING_PX, step=4).max() <= MAX_OKLAB


def test_batch_of_images_with_one_mask_fills_each(photo, spoon):
    pair = torch.cat([photo, photo.flip(-1).contiguous()])
    out, _ = fill(pair, spoon, method="smooth")
    assert out.shape == pair.shape
    alone, _ = fill(pair[1:], spoon, method="smooth")
    assert torch.equal(out[1:], alone)


def test_empty_and_full_masks_are_errors_naming_why(photo, spoon):
    with pytest.raises(NodeError, match="batch item 0 is empty"):
        fill(photo, torch.zeros_like(spoon))
    with pytest.raises(NodeError, match="whole picture"):
        fill(photo, torch.ones_like(spoon))
    almost = torch.ones_like(spoon)
    almost[..., :3, :3] = 0
    with pytest.raises(NodeError, match="after growing it by grow=4 px"):
        fill(photo, almost, grow=4)
    with pytest.raises(NodeError, match="image is 600x400 but mask is 300x400"):
        fill(photo, spoon[..., :300])


def test_fill_grows_holes_with_the_same_disc_as_mask_grow():
    """fill keeps a numpy dilation (pixel-only runs never import torch); on 0/1 masks it must give
    ops.filters.dilate's bits, radii larger than the frame included."""
    import random

    import numpy as np

    from editgraph.ops.fill import _dilate_disc

    rng = random.Random(4)
    torch.manual_seed(4)
    for _ in range(60):
        h, w, r = rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 30)
        x = (torch.rand(rng.randint(1, 2), 1, h, w) > rng.random()).float()
        assert np.array_equal(_dilate_disc(x.numpy(), r), dilate(x, r).numpy()), (h, w, r)
