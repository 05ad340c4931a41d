"""image.load / save / resize / composite, with pixel assertions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from editgraph.nodes.context import RunContext
from editgraph.errors import NodeError
from editgraph.executor.events import EventLog
from editgraph.executor.cache import Cache
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.nodes.builtin.image import CompositeImage, LoadImage, ResizeImage, SaveImage, ScaleImage
from editgraph.sharing.provenance import read as read_provenance

CTX = RunContext("n", "test")


def load(path):
    """image.load's outputs (numpy arrays: it declares arrays = "numpy"), as tensors."""
    out = LoadImage(LoadImage.Params(path=str(path))).run(CTX)
    assert type(out.image) is np.ndarray and type(out.alpha) is np.ndarray
    return type(out)(torch.from_numpy(out.image), torch.from_numpy(out.alpha))


def test_load_png_exact_values_and_opaque_alpha(photo_path):
    out = load(photo_path)
    ref = np.asarray(PILImage.open(photo_path).convert("RGB")).copy()
    assert out.image.shape == (1, 3, 400, 600) and out.image.dtype == torch.float32
    assert torch.equal((out.image[0].permute(1, 2, 0) * 255).round().to(torch.uint8), torch.from_numpy(ref))
    assert torch.equal(out.alpha, torch.ones(1, 1, 400, 600))


def test_load_applies_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white, stored landscape
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    PILImage.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=100)
    img = load(tmp_path / "r.jpg").image
    assert img.shape == (1, 3, 40, 20)  # shown upright: portrait
    assert img[0, :, :15].mean() > 0.9 and img[0, :, 25:].mean() < 0.1  # white half is now on top


def test_load_16bit_keeps_precision(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    PILImage.fromarray(ramp).save(tmp_path / "g16.png")
    img = load(tmp_path / "g16.png").image
    assert torch.allclose(img[0, 0], torch.from_numpy(ramp.astype(np.float32) / 65535), atol=1e-7)
    assert len(torch.unique(img)) == 4096  # more levels than 8 bits could hold


def test_load_alpha_becomes_mask(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load(tmp_path / "a.png")
    assert torch.equal(out.alpha[0, 0, :4], torch.zeros(4, 8)) and torch.equal(out.alpha[0, 0, 4:], torch.ones(4, 8))


def test_load_webp_lossless(tmp_path, photo_path):
    PILImage.open(photo_path).save(tmp_path / "p.webp", lossless=True)
    assert torch.equal(load(tmp_path / "p.webp").image, load(photo_path).image)


def test_load_missing_or_broken_file_is_a_clear_error(tmp_path):
    with pytest.raises(NodeError, match="image file not found: .*nope.png"):
        load(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(NodeError, match="cannot decode image .*bad.png"):
        load(tmp_path / "bad.png")


def test_save_png_round_trip_is_bit_exact(photo_path):
    image = load(photo_path).image
    art = SaveImage(SaveImage.Params(path="x.png")).run(CTX, image=image)
    back = torch.from_numpy(np.asarray(PILImage.open(io.BytesIO(art.files["x.png"]))).copy()).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(back, image)


def test_save_batch_names_each_image():
    art = SaveImage(SaveImage.Params(path="sub/v.png")).run(CTX, image=torch.rand(3, 3, 8, 8))
    assert sorted(art.files) == ["sub/v_0.png", "sub/v_1.png", "sub/v_2.png"]


@pytest.mark.parametrize("bad", ["../x.png", "/etc/x.png", "a/../../x.png", "C:\\x.png", "x.gif"])
def test_save_refuses_paths_outside_the_output_folder(bad):
    with pytest.raises(ValueError):
        SaveImage.Params(path=bad)


def test_resize_keeps_aspect_and_aligns():
    img = torch.rand(2, 3, 400, 600)
    out = ResizeImage(ResizeImage.Params(width=300, multiple_of=8)).run(CTX, image=img)
    assert out.shape == (2, 3, 200, 304)
    assert ResizeImage(ResizeImage.Params(height=400)).run(CTX, image=img) is img  # no-op returns input


def test_scale_by_a_factor_rounds_each_side_and_resamples_as_resize_does():
    img = torch.rand(1, 3, 40, 65)
    out = ScaleImage(ScaleImage.Params(factor=1.5, filter="bilinear")).run(CTX, image=img)
    # round(65 * 1.5) = 98 (banker's rounding of 97.5), round(40 * 1.5) = 60: ComfyUI's ImageScaleBy sizes
    assert out.shape == (1, 3, 60, 98)
    same = ResizeImage(ResizeImage.Params(width=98, height=60, filter="bilinear")).run(CTX, image=img)
    assert torch.equal(out, same)
    with pytest.raises(ValueError, match="exactly one of factor and megapixels"):
        ScaleImage.Params(factor=0)
    with pytest.raises(ValueError, match="exactly one of factor and megapixels"):
        ScaleImage.Params(factor=2, megapixels=1)


def test_scale_to_megapixels_keeps_the_aspect_and_rounds_to_a_multiple():
    img = torch.rand(1, 3, 40, 64)
    # ComfyUI's ImageScaleToTotalPixels: sqrt(int(0.01 * 1024²) / (64 * 40)) = 2.0238...; 130 x 81 px
    out = ScaleImage(ScaleImage.Params(megapixels=0.01)).run(CTX, image=img)
    assert out.shape == (1, 3, 81, 130)
    snapped = ScaleImage(ScaleImage.Params(megapixels=0.01, multiple_of=32)).run(CTX, image=img)
    assert snapped.shape == (1, 3, 96, 128)


def test_composite_keeps_base_bit_exact_where_mask_is_zero():
    base, overlay = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0
    mask[..., 6:10, 6:10] = 0.37
    out = CompositeImage(CompositeImage.Params()).run(CTX, base=base, overlay=overlay, mask=mask)
    outside = (mask == 0).expand_as(base)
    assert torch.equal(out[outside], base[outside])
    inside = (mask == 1).expand_as(base)
    assert torch.equal(out[inside], overlay[inside])
    soft = (mask == 0.37).expand_as(base)
    assert torch.allclose(out[soft], (base + 0.37 * (overlay - base))[soft])


def test_composite_size_mismatch_names_both_sizes():
    with pytest.raises(NodeError, match=r"base is 16x8 but mask is 32x32 \(width x height\)"):
        CompositeImage(CompositeImage.Params()).run(CTX, base=torch.rand(1, 3, 8, 16), overlay=torch.rand(1, 3, 8, 16), mask=torch.ones(1, 1, 32, 32))


def test_saved_png_carries_resolved_workflow_and_is_written_only_in_out(tmp_path, photo_path):
    doc = {
        "format": "editgraph/1",
        "name": "t",
        "params": {"w": {"type": "int", "default": 64}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": str(photo_path)}},
            "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": "$w"}},
            "save": {"type": "image.save", "inputs": {"image": "small"}, "params": {"path": "deep/o.png"}},
        },
    }
    log = EventLog()
    ex = Executor(Cache.default(tmp_path / "cache"), listeners=[log])
    from editgraph.sharing import provenance

    result = ex.run(bind(load_workflow(doc), {"w": "80"}), out_dir=tmp_path / "out", stamp=provenance.stamp)
    assert result.written == [tmp_path / "out" / "deep" / "o.png"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["deep", "o.png"]  # no temp files left
    info = read_provenance((tmp_path / "out/deep/o.png").read_bytes())
    assert info["params"] == {"w": 80} and info["workflow"]["params"]["w"]["default"] == 80
    assert PILImage.open(tmp_path / "out/deep/o.png").size == (80, 53)
