"""Grade nodes on the bundled photos: identities are exact, each control does what it says."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from editgraph.ops.colour import linear_to_srgb, oklab_to_srgb, srgb_to_linear, srgb_to_oklab
from editgraph.nodes.context import RunContext
from editgraph.errors import NodeError
from editgraph.ops.imaging import read_image, to_uint8
from editgraph.ops.lut import identity_cube_text, parse_cube
from editgraph.nodes.builtin.grade import Grade, MatchColors

CTX = RunContext("n", "grade")


@pytest.fixture
def photo(photo_path) -> torch.Tensor:
    return read_image(photo_path).image


@pytest.fixture
def cat(photo_path) -> torch.Tensor:
    return read_image(photo_path.parent / "chelsea.png").image


def grade(image, **params):
    return Grade(Grade.Params(**params)).run(CTX, image=image)


# ---- colour helpers --------------------------------------------------------------------------


def test_colour_round_trips(photo):
    assert torch.allclose(linear_to_srgb(srgb_to_linear(photo)), photo, atol=1e-6)
    assert torch.allclose(oklab_to_srgb(srgb_to_oklab(photo)), photo, atol=2e-5)
    white = srgb_to_oklab(torch.ones(1, 3, 1, 1)).flatten()
    assert white.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)


# ---- grade -----------------------------------------------------------------------------------


def test_identity_grade_is_bit_exact(photo):
    out = grade(photo)
    assert torch.equal(out, photo)
    assert np.array_equal(to_uint8(out), to_uint8(photo))
    # explicit identity values are skipped too
    out = grade(photo, exposure=0.0, contrast=1.0, lift=[0, 0, 0], gamma=[1, 1, 1], gain=[1, 1, 1], lut="")
    assert torch.equal(out, photo)


def test_plus_one_stop_doubles_linear_light(photo):
    out = grade(photo, exposure=1.0)
    lin_in, lin_out = srgb_to_linear(photo), srgb_to_linear(out)
    unclipped = lin_in < 0.5  # twice these is still below white
    assert unclipped.float().mean() > 0.3
    assert torch.allclose(lin_out[unclipped], 2 * lin_in[unclipped], rtol=1e-4, atol=1e-6)
    assert torch.all(out[lin_in >= 0.5] == 1)
    # -1 stop halves
    half = srgb_to_linear(grade(photo, exposure=-1.0))
    assert torch.allclose(half, lin_in / 2, rtol=1e-4, atol=1e-6)


def test_white_balance_moves_hue_not_grey_luminance():
    grey = torch.full((1, 3, 2, 2), 0.5)
    warm = grade(grey, temperature=0.5)
    r, g, b = warm[0, :, 0, 0].tolist()
    assert r > g > b
    lum = lambda x: (srgb_to_linear(x) * torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)).sum(1)  # noqa: E731
    assert torch.allclose(lum(warm), lum(grey), atol=1e-5)
    cool_magenta = grade(grey, temperature=-0.5, tint=0.5)[0, :, 0, 0].tolist()
    assert cool_magenta[2] > cool_magenta[0] and cool_magenta[1] < 0.5


def test_contrast_pivots_on_mid_grey():
    mid = float(linear_to_srgb(torch.tensor(0.18)))
    x = torch.tensor([mid, 0.2, 0.8]).view(1, 3, 1, 1)
    out = grade(x, contrast=1.5).flatten().tolist()
    assert out[0] == pytest.approx(mid, abs=1e-6)
    assert out[1] == pytest.approx(mid + (0.2 - mid) * 1.5, abs=1e-6)
    assert out[2] == pytest.approx(mid + (0.8 - mid) * 1.5, abs=1e-6)


def test_lift_gamma_gain_per_channel():
    x = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    out = grade(x, lift=[0.1, 0, 0], gamma=[1, 2, 1], gain=[1, 1, 0.5])
    assert out[0, 0, 0].tolist() == pytest.approx([0.1, 0.25 + 0.1 * 0.75, 1.0], abs=1e-6)  # lift raises blacks only
    assert out[0, 1, 0].tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)  # gamma 2: x^(1/2)
    assert out[0, 2, 0].tolist() == pytest.approx([0.0, 0.125, 0.5], abs=1e-6)  # gain halves
    with pytest.raises(ValidationError, match=r"gamma\.0\s+Input should be greater than or equal to 0.01"):
        Grade.Params(gamma=[0, 1, 1])
    with pytest.raises(ValidationError, match="at most 3 items"):
        Grade.Params(lift=[0, 0, 0, 0])


def test_saturation_and_vibrance(photo):
    lab = srgb_to_oklab(photo)
    chroma = lambda t: torch.hypot(t[:, 1], t[:, 2])  # noqa: E731
    grey = srgb_to_oklab(grade(photo, saturation=0.0))
    assert chroma(grey).max() < 2e-3
    assert torch.allclose(grey[:, 0], lab[:, 0], atol=2e-3)  # lightness kept
    more = srgb_to_oklab(grade(photo, saturation=1.3))
    assert chroma(more).mean() > 1.2 * chroma(lab).mean()
    vib = srgb_to_oklab(grade(photo, vibrance=0.5))
    gain = chroma(vib) / chroma(lab).clamp_min(1e-4)
    muted, vivid = chroma(lab) < 0.03, chroma(lab) > 0.12
    assert muted.any() and vivid.any()
    assert gain[muted & (chroma(lab) > 0.01)].mean() > gain[vivid].mean()


def test_identity_cube_lut_returns_input_within_one_level(photo, tmp_path):
    for size in (2, 17, 33):
        path = tmp_path / f"id{size}.cube"
        path.write_text("TITLE \"identity\"\n# comment\n" + identity_cube_text(size))
        out = grade(photo, lut=str(path))
        assert (out - photo).abs().max().item() <= 1 / 255
        assert np.abs(to_uint8(out).astype(int) - to_uint8(photo).astype(int)).max() <= 1


def test_cube_lut_applies_and_mixes(tmp_path):
    # a LUT that inverts colours, with red fastest
    lines = ["LUT_3D_SIZE 2"] + [f"{1 - r} {1 - g} {1 - b}" for b in (0, 1) for g in (0, 1) for r in (0, 1)]
    path = tmp_path / "invert.cube"
    path.write_text("\n".join(lines))
    x = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    assert grade(x, lut=str(path)).flatten().tolist() == pytest.approx([0.8, 0.5, 0.1], abs=1e-6)
    assert grade(x, lut=str(path), lut_strength=0.5).flatten().tolist() == pytest.approx([0.5, 0.5, 0.5], abs=1e-6)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 1\n", r"line 4: expected 3 numbers"),
        ("LUT_3D_SIZE 2\n0 0 0\n1 0 zero\n", r"line 3: not a number"),
        ("LUT_3D_SIZE 2\n0 0 0\nnan 1 1\n", r"line 3: not a finite number in 'nan 1 1'"),
        ("LUT_3D_SIZE 2\nDOMAIN_MAX inf 1 1\n", r"line 2: not a finite number"),
        ("0 0 0\n", r"line 1: data row before LUT_3D_SIZE"),
        ("TITLE x\nLUT_3D_SIZE 1\n", r"line 2: LUT_3D_SIZE must be one integer"),
        ("LUT_3D_SIZE 2\nFOO 1\n", r"line 2: unknown keyword 'FOO'"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 7, r"line 8: file ends after 7 data rows"),
        ("LUT_1D_SIZE 4\n", r"line 1: 1D LUTs are not supported"),
        ("TITLE only\n", r"no LUT_3D_SIZE line"),
    ],
)
def test_malformed_cube_names_the_line(text, match):
    with pytest.raises(NodeError, match=match):
        parse_cube(text, "bad.cube")


def test_malformed_cube_file_fails_the_grade_node(photo, tmp_path):
    path = tmp_path / "bad.cube"
    path.write_text("LUT_3D_SIZE 2\n0 0 0\n0 0\n")
    with pytest.raises(NodeError, match=r"bad.cube line 3"):
        grade(photo, lut=str(path))


def test_lut_source_token_follows_file_contents(tmp_path):
    path = tmp_path / "a.cube"
    path.write_text(identity_cube_text(2))
    first = Grade.source_token(Grade.Params(lut=str(path)))
    path.write_text(identity_cube_text(3))
    assert Grade.source_token(Grade.Params(lut=str(path))) != first
    assert Grade.source_token(Grade.Params()) is None
    assert "lut" not in json.loads(Grade.key_params(Grade.Params(lut=str(path))))


# ---- grade.match -----------------------------------------------------------------------------


def match(image, reference, **params):
    return MatchColors(MatchColors.Params(**params)).run(CTX, image=image, reference=reference)


def test_match_to_itself_is_identity(photo):
    out = match(photo, photo)
    assert (out - photo).abs().max().item() < 1e-4
    assert np.array_equal(to_uint8(out), to_uint8(photo))
    assert match(photo, photo, strength=0.0) is photo


def test_match_transfers_reference_statistics(photo, cat):
    out = match(photo, cat)
    mean = lambda t: srgb_to_oklab(t).mean((2, 3)).flatten()  # noqa: E731
    std = lambda t: srgb_to_oklab(t).std((2, 3)).flatten()  # noqa: E731
    # clipping to 0..1 keeps it from being exact; it lands much nearer the reference than it started
    assert torch.allclose(mean(out), mean(cat), atol=0.01)
    assert torch.allclose(std(out), std(cat), rtol=0.1, atol=0.005)
    assert (mean(photo) - mean(cat)).abs().max() > 0.02
    half = match(photo, cat, strength=0.5)
    assert torch.allclose(mean(half), (mean(photo) + mean(cat)) / 2, atol=0.01)
    colour_only = srgb_to_oklab(match(photo, cat, channels="color"))
    # lightness kept except where the new colour leaves the sRGB gamut and is clipped
    moved = (colour_only[:, 0] - srgb_to_oklab(photo)[:, 0]).abs()
    assert moved.mean() < 2e-3 and moved.quantile(0.9) < 1e-3


def test_match_batches_and_mask(photo, cat):
    small = cat[..., :400, :450] if cat.shape[-2] >= 400 else torch.nn.functional.interpolate(cat, size=(400, 600))
    batch = torch.cat([photo, torch.nn.functional.interpolate(small, size=(400, 600))])
    out = match(batch, cat)
    assert torch.allclose(out[0:1], match(photo, cat), atol=1e-6)
    with pytest.raises(NodeError, match="reference batch is 2 but image batch is 1"):
        match(photo, batch)
    mask = torch.zeros(1, 1, 400, 600)
    with pytest.raises(NodeError, match="mask is empty"):
        MatchColors(MatchColors.Params()).run(CTX, image=photo, reference=cat, mask=mask)
    mask[..., :, :300] = 1
    masked = MatchColors(MatchColors.Params()).run(CTX, image=photo, reference=cat, mask=mask)
    left_mean = srgb_to_oklab(masked)[..., :300].mean((2, 3)).flatten()
    assert torch.allclose(left_mean, srgb_to_oklab(cat).mean((2, 3)).flatten(), atol=0.015)
