"""Canvas nodes: crop, pad, blend, and the crop_to_mask -> paste_back round trip on the real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from editgraph.nodes.context import RunContext
from editgraph.errors import NodeError
from editgraph.ops.imaging import read_image, to_uint8
from editgraph.nodes.builtin.canvas import BlendImage, CropImage, CropToMask, PadImage, PasteBack
from editgraph.nodes.builtin.mask import EllipseMask

CTX = RunContext("n", "canvas")


@pytest.fixture
def photo(photo_path) -> torch.Tensor:
    return read_image(photo_path).image  # (1, 3, 400, 600)


def ellipse(image, **kw):
    return EllipseMask(EllipseMask.Params(**kw)).run(CTX, image=image)


# ---- crop / pad ------------------------------------------------------------------------------


def test_crop_is_the_exact_slice(photo):
    out = CropImage(CropImage.Params(x=100, y=50, width=200, height=120)).run(CTX, image=photo)
    assert torch.equal(out, photo[..., 50:170, 100:300])
    with pytest.raises(NodeError, match=r"reaches past the 600x400 image"):
        CropImage(CropImage.Params(x=500, y=0, width=200, height=10)).run(CTX, image=photo)


def test_pad_modes_keep_the_original_at_left_top(photo):
    for fill in ("edge", "mirror", "color"):
        out = PadImage(PadImage.Params(left=7, top=3, right=900, bottom=11, fill=fill, color=(1, 0, 0))).run(CTX, image=photo)
        assert out.shape == (1, 3, 414, 1507)
        assert torch.equal(out[..., 3:403, 7:607], photo)
    edge = PadImage(PadImage.Params(left=2, fill="edge")).run(CTX, image=photo)
    assert torch.equal(edge[..., 0], photo[..., 0]) and torch.equal(edge[..., 1], photo[..., 0])
    mirror = PadImage(PadImage.Params(left=2, fill="mirror")).run(CTX, image=photo)
    assert torch.equal(mirror[..., 0], photo[..., 2]) and torch.equal(mirror[..., 1], photo[..., 1])
    colour = PadImage(PadImage.Params(top=1, fill="color", color=(1, 0, 0.5))).run(CTX, image=photo)
    assert colour[0, :, 0, 10].tolist() == [1.0, 0.0, 0.5]


# ---- blend -----------------------------------------------------------------------------------


def test_blend_modes_match_their_formulas():
    a = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)
    b = torch.tensor([0.6, 0.6, 0.6]).view(1, 3, 1, 1)

    def blend(mode, **kw):
        return BlendImage(BlendImage.Params(mode=mode, **kw)).run(CTX, base=a, top=b).flatten().tolist()

    assert blend("normal") == pytest.approx([0.6, 0.6, 0.6])
    assert blend("multiply") == pytest.approx([0.12, 0.3, 0.48])
    assert blend("screen") == pytest.approx([1 - 0.8 * 0.4, 1 - 0.5 * 0.4, 1 - 0.2 * 0.4])
    assert blend("overlay") == pytest.approx([2 * 0.2 * 0.6, 2 * 0.5 * 0.6, 1 - 2 * 0.2 * 0.4])
    assert blend("multiply", opacity=0.5) == pytest.approx([0.16, 0.4, 0.64])


def test_blend_keeps_base_bit_exact_where_mask_is_zero(photo):
    top = photo.flip(-1)
    mask = ellipse(photo, rx=0.2, ry=0.2)
    out = BlendImage(BlendImage.Params(mode="screen")).run(CTX, base=photo, top=top, mask=mask)
    keep = (mask == 0).expand_as(photo)
    assert torch.equal(out[keep], photo[keep])
    assert not torch.equal(out, photo)
    assert torch.equal(BlendImage(BlendImage.Params(opacity=0.0)).run(CTX, base=photo, top=top), photo)
    with pytest.raises(NodeError, match=r"base is 600x400 but top is 300x200"):
        BlendImage(BlendImage.Params()).run(CTX, base=photo, top=top[..., :200, :300])
    resized = BlendImage(BlendImage.Params(resize=True)).run(CTX, base=photo, top=top[..., ::2, ::2])
    assert resized.shape == photo.shape


# ---- crop_to_mask / paste_back ---------------------------------------------------------------


def test_crop_to_mask_then_paste_back_identity_is_bit_exact(photo):
    mask = ellipse(photo, cx=0.4, cy=0.55, rx=0.1, ry=0.15)
    params = dict(margin=16, working_size=0)
    crop = CropToMask(CropToMask.Params(**params)).run(CTX, image=photo, mask=mask)
    h, w = crop.image.shape[-2:]
    assert h % 8 == 0 and w % 8 == 0
    assert crop.mask.shape == (1, 1, h, w)
    # the identity in between: the crop goes straight back
    out = PasteBack(PasteBack.Params(**params)).run(CTX, base=photo, crop=crop.image, mask=mask)
    assert torch.equal(out, photo)
    assert np.array_equal(to_uint8(out), to_uint8(photo))


def test_crop_covers_mask_plus_margin_and_is_pixel_exact_without_scaling(photo):
    mask = torch.zeros(1, 1, 400, 600)
    mask[..., 100:150, 200:260] = 1  # 60 x 50
    crop = CropToMask(CropToMask.Params(margin=10, working_size=0)).run(CTX, image=photo, mask=mask)
    # 80 x 70 box, rounded up to 80 x 72, centred on the mask's box
    assert crop.image.shape[-2:] == (72, 80)
    assert torch.equal(crop.image, photo[..., 89:161, 190:270])
    assert torch.equal(crop.mask, mask[..., 89:161, 190:270])


def test_working_size_scales_the_crop_and_paste_back_keeps_the_rest(photo):
    mask = ellipse(photo, cx=0.7, cy=0.4, rx=0.08, ry=0.1)
    params = dict(margin=24, working_size=512)
    crop = CropToMask(CropToMask.Params(**params)).run(CTX, image=photo, mask=mask)
    assert max(crop.image.shape[-2:]) == 512 and all(s % 8 == 0 for s in crop.image.shape[-2:])
    # edit the crop: paint it red; only the masked area of the photo changes
    red = torch.zeros_like(crop.image)
    red[:, 0] = 1
    out = PasteBack(PasteBack.Params(**params)).run(CTX, base=photo, crop=red, mask=mask)
    keep = (mask == 0).expand_as(photo)
    assert torch.equal(out[keep], photo[keep])
    full = (mask == 1).expand_as(photo)
    assert torch.allclose(out[full].view(3, -1)[0], torch.ones(1), atol=1e-6)
    # an unedited crop comes back close to the photo (bicubic up- and down-scaling)
    same = PasteBack(PasteBack.Params(**params)).run(CTX, base=photo, crop=crop.image, mask=mask)
    assert (same - photo).abs().mean().item() < 2e-3


def test_paste_back_feather_and_mismatched_params(photo):
    mask = ellipse(photo, cx=0.5, cy=0.5, rx=0.1, ry=0.1, antialias=False)
    crop = CropToMask(CropToMask.Params(margin=16, working_size=256)).run(CTX, image=photo, mask=mask)
    soft = PasteBack(PasteBack.Params(margin=16, working_size=256, feather=12)).run(
        CTX, base=photo, crop=torch.zeros_like(crop.image), mask=mask
    )
    hard = PasteBack(PasteBack.Params(margin=16, working_size=256)).run(
        CTX, base=photo, crop=torch.zeros_like(crop.image), mask=mask
    )
    # feathering blends part-way at the edge where the hard paste is all-or-nothing
    changed_soft = (soft != photo).any(1)
    changed_hard = (hard != photo).any(1)
    assert changed_soft.sum() > changed_hard.sum()
    with pytest.raises(NodeError, match=r"crop is 256x192 but this mask with margin=8, working_size=512, multiple_of=8 gives a 512x360 crop"):
        PasteBack(PasteBack.Params(margin=8, working_size=512)).run(CTX, base=photo, crop=crop.image, mask=mask)
    with pytest.raises(NodeError, match="mask is empty"):
        CropToMask(CropToMask.Params()).run(CTX, image=photo, mask=torch.zeros(1, 1, 400, 600))
    with pytest.raises(NodeError, match=r"image is 600x400 but mask is 300x200"):
        CropToMask(CropToMask.Params()).run(CTX, image=photo, mask=torch.ones(1, 1, 200, 300))


def test_crop_round_trip_on_a_large_photo(photo):
    # the use case: a 2400 px photo, a small mask, inpainting at 512
    big = F.interpolate(photo, size=(1600, 2400), mode="bilinear", align_corners=False)
    mask = torch.zeros(1, 1, 1600, 2400)
    mask[..., 900:1000, 1500:1650] = 1
    crop = CropToMask(CropToMask.Params(margin=32, working_size=512)).run(CTX, image=big, mask=mask)
    # 214 x 164 box scaled up to 512 wide: the model sees the region at ~2.4x its pixels
    assert crop.image.shape[-1] == 512
    out = PasteBack(PasteBack.Params(margin=32, working_size=512)).run(CTX, base=big, crop=crop.image, mask=mask)
    keep = (mask == 0).expand_as(big)
    assert torch.equal(out[keep], big[keep])
    assert (out - big).abs().max().item() < 0.05


def test_batches_share_one_box(photo):
    batch = torch.cat([photo, photo.flip(-1)])
    mask = torch.zeros(2, 1, 400, 600)
    mask[0, :, 10:20, 10:20] = 1
    mask[1, :, 300:310, 500:510] = 1
    crop = CropToMask(CropToMask.Params(margin=0, working_size=0)).run(CTX, image=batch, mask=mask)
    assert crop.image.shape == (2, 3, 304, 504)
    out = PasteBack(PasteBack.Params(margin=0, working_size=0)).run(CTX, base=batch, crop=crop.image, mask=mask)
    assert torch.equal(out, batch)


def test_paste_back_feather_equals_a_whole_frame_feather(photo):
    from editgraph.ops.filters import feather
    from editgraph.ops.regions import mask_box

    mask = torch.zeros(1, 1, 400, 600)
    mask[..., 5:120, 400:590] = 1  # near the frame edge: the local blur must mirror like the full one
    params = dict(margin=20, working_size=0)
    crop = CropToMask(CropToMask.Params(**params)).run(CTX, image=photo, mask=mask)
    edited = 1 - crop.image
    out = PasteBack(PasteBack.Params(**params, feather=12)).run(CTX, base=photo, crop=edited, mask=mask)
    # expected: the same composite through a feather of the whole frame
    box = mask_box(mask, 20, 0, 8, "test")
    # 220 x 140 grown to 224 x 144 and slid left off the frame edge
    assert (box.y0, box.x0, box.height, box.width) == (0, 376, 144, 224)
    soft = feather(mask, 12)
    region = (..., slice(box.y0, box.y1), slice(box.x0, box.x1))
    s, base = soft[region], photo[region]
    expected = photo.clone()
    expected[region] = torch.where(s <= 0, base, torch.where(s >= 1, edited, torch.lerp(base, edited, s)))
    # equal up to FFT rounding (the local blur runs on a shorter axis), and bit-exact where it is 0
    assert torch.allclose(out, expected, atol=1e-6)
    keep = (soft == 0).expand_as(photo)
    assert keep.float().mean() > 0.5
    assert torch.equal(out[keep], photo[keep])
