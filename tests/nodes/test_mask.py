"""Mask nodes: pixel-exact behaviour on synthetic masks and the bundled photo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from PIL import Image as PILImage

from editgraph.nodes.context import RunContext
from editgraph.errors import NodeError
from editgraph.ops.imaging import read_image
from editgraph.nodes.builtin.mask import (
    CombineMask,
    EllipseMask,
    FeatherMask,
    GrowMask,
    InvertMask,
    LoadMask,
    MaskFromAlpha,
    MaskFromColor,
    RectMask,
    ThresholdMask,
)

CTX = RunContext("n", "mask")


def load_mask(path, **params) -> torch.Tensor:
    """mask.load's output (a numpy array: it declares arrays = "numpy"), as a tensor."""
    out = LoadMask(LoadMask.Params(path=str(path), **params)).run(CTX)
    assert type(out) is np.ndarray
    return torch.from_numpy(out)


@pytest.fixture
def photo(photo_path) -> torch.Tensor:
    return read_image(photo_path).image  # (1, 3, 400, 600)


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int, b: int = 1) -> torch.Tensor:
    m = torch.zeros(b, 1, h, w)
    m[..., y0:y1, x0:x1] = 1
    return m


# ---- mask.load -------------------------------------------------------------------------------


def test_load_greyscale_file_is_its_grey_values(tmp_path):
    grey = (np.arange(64 * 48, dtype=np.uint32) % 256).astype(np.uint8).reshape(48, 64)
    PILImage.fromarray(grey, "L").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.shape == (1, 1, 48, 64)
    assert torch.equal(m[0, 0], torch.from_numpy(grey).float() / 255)


def test_load_rgb_file_uses_luminance_and_invert(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)  # pure red: Rec. 709 luminance 0.2126
    rgb[:, 4:] = 255
    PILImage.fromarray(rgb).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m[0, 0, 0, 0].item() == pytest.approx(0.2126, abs=1e-6)
    assert torch.equal(m[..., 4:], torch.ones(1, 1, 8, 4))
    inv = load_mask(tmp_path / "m.png", invert=True)
    assert torch.equal(inv[..., 4:], torch.zeros(1, 1, 8, 4))
    red = load_mask(tmp_path / "m.png", channel="red")
    assert torch.equal(red, torch.ones(1, 1, 8, 8))


def test_load_rgba_with_varying_alpha_uses_alpha(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 0
    rgba[2:5, 2:6, 3] = 255  # opaque stroke on a transparent layer = change
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert torch.equal(m, rect(8, 8, 2, 5, 2, 6))


def test_load_alpha_channel_missing_is_an_error(tmp_path, photo_path):
    with pytest.raises(NodeError, match="no alpha channel"):
        load_mask(photo_path, channel="alpha")


def test_from_alpha_transparent_is_change():
    alpha = rect(4, 4, 0, 2, 0, 4)
    assert torch.equal(MaskFromAlpha(MaskFromAlpha.Params()).run(CTX, alpha=alpha), 1 - alpha)
    assert torch.equal(MaskFromAlpha(MaskFromAlpha.Params(change="opaque")).run(CTX, alpha=alpha), alpha)


# ---- drawn masks -----------------------------------------------------------------------------


def test_rect_takes_image_size_and_clips(photo):
    m = RectMask(RectMask.Params(x=550, y=-10, rect_width=100, rect_height=60)).run(CTX, image=photo)
    assert m.shape == (1, 1, 400, 600)
    assert torch.equal(m, rect(400, 600, 0, 50, 550, 600))


def test_rect_without_image_needs_size():
    with pytest.raises(NodeError, match="width and height"):
        RectMask(RectMask.Params()).run(CTX)
    assert RectMask(RectMask.Params(width=10, height=5, rect_width=3, rect_height=2)).run(CTX).sum().item() == 6


def test_ellipse_area_and_symmetry(photo):
    m = EllipseMask(EllipseMask.Params(cx=0.5, cy=0.5, rx=0.2, ry=0.3)).run(CTX, image=photo)
    area = math.pi * (0.2 * 600) * (0.3 * 400)
    assert m.sum().item() == pytest.approx(area, rel=0.005)
    assert torch.equal(m, m.flip(-1)) and torch.equal(m, m.flip(-2))
    assert m[0, 0, 200, 300] == 1 and m[0, 0, 0, 0] == 0
    hard = EllipseMask(EllipseMask.Params(cx=0.5, cy=0.5, rx=0.2, ry=0.3, antialias=False)).run(CTX, image=photo)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    # the antialiased edge is at most one pixel wide: soft pixels lie on the hard mask's boundary
    soft = (m > 0) & (m < 1)
    assert soft.sum().item() < 2.2 * (math.pi * (120 + 120))


def test_threshold():
    m = torch.tensor([0.0, 0.49, 0.5, 0.9]).view(1, 1, 1, 4)
    assert ThresholdMask(ThresholdMask.Params()).run(CTX, mask=m).flatten().tolist() == [0, 0, 1, 1]


def test_from_color_selects_the_sampled_colour(photo):
    colour = tuple(photo[0, :, 200, 300].tolist())
    m = MaskFromColor(MaskFromColor.Params(color=colour, tolerance=0.02, softness=0.0)).run(CTX, image=photo)
    assert m[0, 0, 200, 300] == 1
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert 0 < m.mean().item() < 0.5  # a colour range, not everything
    with pytest.raises(ValidationError, match=r"color\.0\s+Input should be less than or equal to 1"):
        MaskFromColor.Params(color=(2.0, 0, 0))


# ---- feather ---------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [6, 40])  # 40 takes the FFT path
def test_feather_keeps_mass_and_interior(photo, radius):
    m = EllipseMask(EllipseMask.Params(cx=0.5, cy=0.5, rx=0.25, ry=0.3, antialias=False)).run(CTX, image=photo)
    f = FeatherMask(FeatherMask.Params(radius=radius)).run(CTX, mask=m)
    assert f.shape == m.shape
    assert f.sum().item() == pytest.approx(m.sum().item(), rel=0.01)
    inner = GrowMask(GrowMask.Params(pixels=-radius - 1, shape="square")).run(CTX, mask=m)
    outer = GrowMask(GrowMask.Params(pixels=radius + 1, shape="square")).run(CTX, mask=m)
    assert inner.sum() > 0
    assert torch.all(f[inner == 1] == 1)  # interior exactly 1
    assert torch.all(f[outer == 0] == 0)  # beyond the radius exactly 0
    edge = (f > 0) & (f < 1)
    assert edge.any() and float(f.min()) >= 0 and float(f.max()) <= 1


def test_feather_zero_is_identity_and_batch_items_are_independent():
    a, b = rect(64, 64, 10, 30, 10, 30), rect(64, 64, 30, 60, 5, 50)
    assert FeatherMask(FeatherMask.Params(radius=0)).run(CTX, mask=a) is a
    node = FeatherMask(FeatherMask.Params(radius=5))
    both = node.run(CTX, mask=torch.cat([a, b]))
    assert torch.allclose(both[0:1], node.run(CTX, mask=a), atol=1e-6)
    assert torch.allclose(both[1:2], node.run(CTX, mask=b), atol=1e-6)


# ---- grow / shrink ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["disc", "square"])
@pytest.mark.parametrize("r", [1, 7, 20])
def test_grow_then_shrink_restores_rectangle(shape, r):
    m = rect(200, 300, 60, 140, 80, 210)
    grown = GrowMask(GrowMask.Params(pixels=r, shape=shape)).run(CTX, mask=m)
    assert grown.sum() > m.sum()
    back = GrowMask(GrowMask.Params(pixels=-r, shape=shape)).run(CTX, mask=grown)
    assert torch.equal(back, m)


def test_grow_square_extends_each_side_and_disc_rounds_corners():
    m = rect(100, 100, 40, 60, 40, 60)
    sq = GrowMask(GrowMask.Params(pixels=5, shape="square")).run(CTX, mask=m)
    assert torch.equal(sq, rect(100, 100, 35, 65, 35, 65))
    disc = GrowMask(GrowMask.Params(pixels=5, shape="disc")).run(CTX, mask=m)
    assert disc[0, 0, 35, 50] == 1 and disc[0, 0, 50, 35] == 1  # straight sides move by 5
    assert disc[0, 0, 35, 35] == 0  # corner rounded (distance 5*sqrt(2) > 5)
    shrunk = GrowMask(GrowMask.Params(pixels=-5, shape="square")).run(CTX, mask=m)
    assert torch.equal(shrunk, rect(100, 100, 45, 55, 45, 55))


def test_shrink_does_not_eat_in_from_the_frame_border():
    m = rect(50, 50, 0, 20, 0, 50)
    shrunk = GrowMask(GrowMask.Params(pixels=-3, shape="square")).run(CTX, mask=m)
    assert torch.equal(shrunk, rect(50, 50, 0, 17, 0, 50))


# ---- invert / combine ------------------------------------------------------------------------


def test_invert_and_combine():
    a = torch.tensor([0.0, 0.3, 1.0, 1.0]).view(1, 1, 1, 4)
    b = torch.tensor([1.0, 0.6, 0.0, 1.0]).view(1, 1, 1, 4)
    assert InvertMask(InvertMask.Params()).run(CTX, mask=a).flatten().tolist() == pytest.approx([1, 0.7, 0, 0])

    def comb(mode):
        return CombineMask(CombineMask.Params(mode=mode)).run(CTX, a=a, b=b).flatten().tolist()

    assert comb("union") == pytest.approx([1, 0.6, 1, 1])
    assert comb("intersect") == pytest.approx([0, 0.3, 0, 1])
    assert comb("subtract") == pytest.approx([0, 0.3, 1, 0])


def test_combine_size_mismatch_names_both_sizes_unless_resize():
    a, b = torch.ones(1, 1, 40, 60), torch.ones(1, 1, 20, 30)
    with pytest.raises(NodeError, match=r"a is 60x40 but b is 30x20"):
        CombineMask(CombineMask.Params()).run(CTX, a=a, b=b)
    out = CombineMask(CombineMask.Params(mode="intersect", resize=True)).run(CTX, a=a, b=b)
    assert out.shape == (1, 1, 40, 60) and torch.allclose(out, torch.ones_like(out))


# ---- the filters behind feather / grow -------------------------------------------------------


@pytest.mark.parametrize("radius", [1, 2, 5, 17, 40, 70])  # shifted sums, FFT, and pads longer than the axis
def test_gaussian_blur_matches_a_direct_float64_convolution(radius):
    from editgraph.ops.filters import gaussian_blur, gaussian_kernel, pad

    torch.manual_seed(0)
    x = torch.rand(2, 3, 37, 53)
    k = gaussian_kernel(radius).double()
    ref = pad(x.double(), radius, radius, radius, radius, "mirror")
    ref = torch.nn.functional.conv2d(ref.reshape(6, 1, *ref.shape[-2:]), k.view(1, 1, 1, -1))
    ref = torch.nn.functional.conv2d(ref, k.view(1, 1, -1, 1)).reshape(x.shape)
    out = gaussian_blur(x, radius)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert (out.double() - ref).abs().max().item() < 2e-6


def _brute_morph(x: torch.Tensor, r: int, shape: str, erode: bool) -> torch.Tensor:
    """Max (min) over every offset of the disc or square, outside the frame counting as 0 (1)."""
    h, w = x.shape[-2:]
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if shape == "square" or dy * dy + dx * dx <= r * r]
    padded = torch.nn.functional.pad(x, (r, r, r, r), value=1.0 if erode else 0.0)
    stack = torch.stack([padded[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offsets])
    return stack.amin(0) if erode else stack.amax(0)


@pytest.mark.parametrize("shape", ["disc", "square"])
def test_dilate_matches_a_brute_force_max_over_the_structuring_element(shape):
    from editgraph.ops.filters import dilate

    torch.manual_seed(1)
    x = (torch.rand(2, 1, 30, 41) > 0.93).float() * torch.rand(2, 1, 30, 41)  # sparse, soft
    assert torch.equal(dilate(x, 4, shape), _brute_morph(x, 4, shape, erode=False))


# radii far larger than the frame: disc row offsets of h or more used to slice one side empty and crash
@pytest.mark.parametrize("h,w,r", [(4, 4, 10), (1, 6, 3), (3, 40, 10), (40, 3, 12), (5, 5, 7), (2, 2, 1)])
@pytest.mark.parametrize("shape", ["disc", "square"])
def test_grow_and_shrink_by_more_than_the_mask_match_brute_force(h, w, r, shape):
    from editgraph.ops.filters import dilate, erode

    torch.manual_seed(3)
    x = (torch.rand(2, 1, h, w) > 0.6).float() * torch.rand(2, 1, h, w)
    x[0, 0, h // 2, w // 2] = 1.0  # at least one hit, so the work box is not skipped
    assert torch.equal(dilate(x, r, shape), _brute_morph(x, r, shape, erode=False))
    assert torch.allclose(erode(x, r, shape), _brute_morph(x, r, shape, erode=True), atol=1e-7)
    grown = GrowMask(GrowMask.Params(pixels=r, shape=shape)).run(CTX, mask=x)
    assert torch.equal(grown, _brute_morph(x, r, shape, erode=False))


@pytest.mark.parametrize("shape", ["disc", "square"])
def test_erode_matches_a_brute_force_min_with_the_frame_counting_as_one(shape):
    from editgraph.ops.filters import erode

    torch.manual_seed(2)
    x = torch.zeros(1, 1, 40, 50)
    x[..., 0:25, 10:45] = torch.rand(1, 1, 25, 35) * 0.5 + 0.5  # soft blob touching the top edge
    assert torch.allclose(erode(x, 3, shape), _brute_morph(x, 3, shape, erode=True), atol=1e-7)
    assert erode(x, 3, shape)[0, 0, 0, 20] > 0  # the top edge is not eaten
