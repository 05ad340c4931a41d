"""outpaint.pad on the real photo: original pixels untouched, mask exactly the new area + overlap."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from editgraph.nodes.context import RunContext
from editgraph.ops.imaging import read_image
from editgraph.nodes.builtin.outpaint import OutpaintPad

CTX = RunContext("n", "outpaint.pad")


@pytest.fixture
def photo(photo_path) -> torch.Tensor:
    return read_image(photo_path).image  # (1, 3, 400, 600)


def outpaint(image, **params):
    return OutpaintPad(OutpaintPad.Params(**params)).run(CTX, image=image)


def expected_support(H, W, top, left, h, w, overlap, sides):
    """mask > 0 where it must be: everything outside the photo, plus `overlap` px inside it along
    each side that was extended."""
    want = torch.ones(H, W, dtype=torch.bool)
    inner = torch.zeros(h, w, dtype=torch.bool)
    if "left" in sides:
        inner[:, :overlap] = True
    if "right" in sides:
        inner[:, w - overlap :] = True
    if "top" in sides:
        inner[:overlap, :] = True
    if "bottom" in sides:
        inner[h - overlap :, :] = True
    want[top : top + h, left : left + w] = inner
    return want


def test_outpaint_to_4_5_keeps_every_original_pixel_and_masks_new_area_plus_overlap(photo):
    out = outpaint(photo, aspect="4:5", overlap=16, feather=8)
    # 600x400 -> 4:5 needs 600x750, rounded up to a multiple of 8: 600x752, photo centred
    assert out.image.shape == (1, 3, 752, 600) and out.mask.shape == (1, 1, 752, 600)
    top, left = 176, 0
    assert torch.equal(out.image[..., top : top + 400, left : left + 600], photo)
    m = out.mask[0, 0]
    want = expected_support(752, 600, top, left, 400, 600, 16, {"top", "bottom"})
    assert torch.equal(m > 0, want)
    # the new area itself is fully 1; the overlap band fades only in its last `feather` px
    assert torch.all(m[:top] == 1) and torch.all(m[top + 400 :] == 1)
    assert torch.all(m[top : top + 8] == 1)
    band = m[top + 8 : top + 16, 300]
    assert torch.all(band[1:] < band[:-1]) and band[-1] > 0
    assert torch.all(m[top + 16 : top + 400 - 16] == 0)


@pytest.mark.parametrize("aspect", ["1:1", "4:5", "9:16", "16:9"])
@pytest.mark.parametrize("anchor", ["center", "top_left", "bottom_right", "right"])
def test_every_aspect_and_anchor(photo, aspect, anchor):
    a, b = (int(v) for v in aspect.split(":"))
    out = outpaint(photo, aspect=aspect, anchor=anchor, overlap=12, feather=4)
    H, W = out.image.shape[-2:]
    assert H % 8 == 0 and W % 8 == 0 and H >= 400 and W >= 600
    # the aspect is reached up to the rounding to 8 px
    assert abs(W / H - a / b) < 8 / min(H, W)
    # find the photo: exactly one offset holds it bit for bit
    pad_w, pad_h = W - 600, H - 400
    left = {"center": pad_w // 2, "top_left": 0, "bottom_right": pad_w, "right": pad_w}[anchor]
    top = {"center": pad_h // 2, "top_left": 0, "bottom_right": pad_h, "right": pad_h // 2}[anchor]
    assert torch.equal(out.image[..., top : top + 400, left : left + 600], photo)
    sides = {s for s, n in (("left", left), ("right", pad_w - left), ("top", top), ("bottom", pad_h - top)) if n > 0}
    assert torch.equal(out.mask[0, 0] > 0, expected_support(H, W, top, left, 400, 600, 12, sides))


def test_per_side_pixels_and_alignment(photo):
    out = outpaint(photo, left=50, right=0, top=10, bottom=0, overlap=0, anchor="bottom_right")
    # 650 x 410 rounded up to 656 x 416; the extra px go before the photo (it is anchored bottom-right)
    assert out.image.shape[-2:] == (416, 656)
    assert torch.equal(out.image[..., 16:, 56:], photo)
    assert torch.equal(out.mask[0, 0] > 0, expected_support(416, 656, 16, 56, 400, 600, 0, set()))
    assert torch.equal(out.mask[0, 0] == 1, out.mask[0, 0] > 0)  # overlap 0: a hard mask


def test_fills(photo):
    edge = outpaint(photo, left=4, fill="edge", multiple_of=1, overlap=0).image
    assert torch.equal(edge[..., 0], photo[..., 0])
    mirror = outpaint(photo, left=4, fill="mirror", multiple_of=1, overlap=0).image
    assert torch.equal(mirror[..., 0], photo[..., 4])
    colour = outpaint(photo, left=4, fill="color", color=(0, 1, 0), multiple_of=1, overlap=0).image
    assert colour[0, :, 100, 2].tolist() == [0.0, 1.0, 0.0]
    blur = outpaint(photo, aspect="1:1", fill="blur", blur_radius=24).image
    assert torch.equal(blur[..., 100:500, :], photo)
    # the blurred fill is smoother than the edge-repeated one
    rough = outpaint(photo, aspect="1:1", fill="edge").image
    assert blur[..., :100, :].diff(dim=-1).abs().mean() < rough[..., :100, :].diff(dim=-1).abs().mean()


def test_already_at_aspect_is_unpadded_and_batch_is_kept(photo):
    batch = torch.cat([photo, 1 - photo])
    out = outpaint(batch, aspect="3:2")
    assert torch.equal(out.image, batch)
    assert out.mask.shape == (2, 1, 400, 600) and out.mask.sum() == 0


def test_feather_wider_than_overlap_fades_over_the_whole_band(photo):
    m = outpaint(photo, aspect="1:1", overlap=10, feather=20).mask[0, 0]
    top = (600 - 400) // 2
    band = m[top : top + 10, 300]
    assert torch.all(band > 0) and torch.all(band[1:] < band[:-1]) and band[0] < 1
    assert torch.all(m[top + 10 : top + 390] == 0)


def test_bad_params_are_errors(photo):
    with pytest.raises(ValidationError, match=r"color\.1\s+Input should be less than or equal to 1"):
        outpaint(photo, aspect="1:1", fill="color", color=(0, 2, 0))
