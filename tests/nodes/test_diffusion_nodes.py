"""The diffusion nodes one by one: shapes, values, progress, cancel, and errors that name the values."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

from editgraph.diffusion import schedules, vae
from editgraph.errors import Cancelled, NodeError
from editgraph.nodes.builtin.diffusion import Denoise, EmptyLatent, Instruct, PromptEncode, Refine, VaeDecode, VaeEncode
from editgraph.values.sockets import Latent

from .diffusion_support import REPO_ROOT, box_mask, ctx, photo, tiny, to_tensor


@pytest.fixture(scope="module")
def sd():
    return tiny("tiny-sd")


@pytest.fixture(scope="module")
def parts(sd):
    c = ctx()
    cond = PromptEncode(PromptEncode.Params(prompt="a cup")).run(c, model=sd)
    latent = VaeEncode(VaeEncode.Params()).run(c, model=sd, image=to_tensor(photo()))
    return cond, latent


def test_listing_nodes_does_not_import_diffusers():
    code = "import sys; from editgraph.nodes.registry import load_builtin_nodes as l; r = l(); " \
           "print('denoise' in r, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_vae_encode_keeps_the_posterior_and_its_mode(sd, parts):
    _, latent = parts
    assert latent.samples.shape == (1, 4, 8, 8) and latent.moments.shape == (1, 8, 8, 8)
    mean = latent.moments[:, :4]
    assert torch.equal(latent.samples, sd.vae.config.scaling_factor * mean)
    assert latent.family == sd.family and latent.channels_last is False


def test_vae_encode_rejects_sizes_the_vae_cannot_take(sd):
    with pytest.raises(NodeError, match=r"image is 60x64 \(width x height\).*divisible by 8"):
        VaeEncode(VaeEncode.Params()).run(ctx(), model=sd, image=torch.rand(1, 3, 64, 60))


def test_latent_empty_is_zeros_of_the_pictures_size(sd):
    out = EmptyLatent(EmptyLatent.Params(width=96, height=64, batch=2)).run(ctx(), model=sd)
    assert out.samples.shape == (2, 4, 8, 12) and not out.samples.any()
    with pytest.raises(NodeError, match="divisible by 8 but are 100 and 64"):
        EmptyLatent(EmptyLatent.Params(width=100, height=64)).run(ctx(), model=sd)


def test_decode_round_trips_and_tiles_large_latents(sd, parts):
    _, latent = parts
    pixels = VaeDecode(VaeDecode.Params()).run(ctx(), model=sd, latent=latent)
    assert pixels.shape == (1, 3, 64, 64) and pixels.dtype == torch.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    big = Latent(F.interpolate(latent.samples, size=(40, 40), mode="bilinear"), sd.family)  # 320 px
    whole = VaeDecode(VaeDecode.Params(tile="never")).run(ctx(), model=sd, latent=big)
    tiles = VaeDecode(VaeDecode.Params(tile="always")).run(ctx(), model=sd, latent=big)
    assert whole.shape == tiles.shape == (1, 3, 320, 320)
    assert not torch.equal(whole, tiles)  # it really went through the tiled path ...
    # ... which is diffusers' own tiled decoding (what vae.enable_tiling() makes pipelines do) ...
    sd.vae.enable_tiling()
    try:
        with torch.inference_mode():
            ref = (sd.vae.decode(big.samples / sd.vae.config.scaling_factor).sample * 0.5 + 0.5).clamp(0, 1)
    finally:
        sd.vae.disable_tiling()
    assert torch.equal(tiles, ref)
    # ... and still the same picture (per-tile GroupNorm statistics of this random VAE shift values)
    assert torch.corrcoef(torch.stack([whole.flatten(), tiles.flatten()]))[0, 1] > 0.6


def test_denoise_reports_each_step_and_stops_on_cancel(sd, parts):
    cond, latent = parts
    seen, cancel = [], threading.Event()

    def on_progress(k, n, latents):
        seen.append((k, n))
        assert latents.shape == latent.samples.shape  # the current latents, for live previews
        if k == 2:
            cancel.set()

    params = Denoise.Params(steps=10, strength=0.5, seed=1, scheduler="ddim")
    with pytest.raises(Cancelled):
        Denoise(params).run(ctx("denoise", on_progress=on_progress, cancel=cancel), model=sd, cond=cond, latent=latent)
    assert seen == [(1, 5), (2, 5)]


def test_denoise_is_deterministic_per_seed(sd, parts):
    cond, latent = parts
    run = lambda seed: Denoise(Denoise.Params(steps=3, seed=seed, scheduler="euler_a")).run(  # noqa: E731
        ctx(), model=sd, cond=cond, latent=latent
    ).samples
    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_latent_blending_keeps_the_image_latents_outside_the_mask(sd, parts):
    cond, latent = parts
    mask = to_tensor(box_mask())
    params = Denoise.Params(steps=4, strength=1.0, seed=9, scheduler="euler")
    out = Denoise(params).run(ctx(), model=sd, cond=cond, latent=latent, mask=mask).samples
    # The loop's first draw is the image latents; outside the (latent-size) mask they survive exactly.
    image_latents = vae.sample_image_latents(sd, latent.moments, schedules.generator_for(9))
    keep = F.interpolate((mask >= 0.5).float(), size=(8, 8)) == 0
    keep = keep.expand_as(out)
    assert torch.equal(out[keep], image_latents[keep])
    assert not torch.equal(out[~keep], image_latents[~keep])


def test_denoise_errors_name_what_is_wrong(sd, parts):
    cond, latent = parts
    run = Denoise(Denoise.Params(steps=2, seed=0)).run
    with pytest.raises(NodeError, match=r"mask is 32x32 but the latent decodes to 64x64"):
        run(ctx(), model=sd, cond=cond, latent=latent, mask=torch.ones(1, 1, 32, 32))
    with pytest.raises(NodeError, match="only used with a `mask`"):
        run(ctx(), model=sd, cond=cond, latent=latent, image=to_tensor(photo()))
    with pytest.raises(NodeError, match="strength 0.1 of 2 steps leaves no step"):
        Denoise(Denoise.Params(steps=2, strength=0.1, seed=0)).run(ctx(), model=sd, cond=cond, latent=latent)
    with pytest.raises(NodeError, match="'sdxl' family but model"):
        run(ctx(), model=sd, cond=cond, latent=Latent(latent.samples, "sdxl"))
    inpaint = tiny("tiny-sd-inpaint")  # runs with or without a mask or image since issue 10
    assert run(ctx(), model=inpaint, cond=cond, latent=latent).samples.shape == latent.samples.shape
    with pytest.raises(NodeError, match="InstructPix2Pix model.*use the `instruct` node"):
        run(ctx(), model=tiny("tiny-ip2p"), cond=cond, latent=latent)
    with pytest.raises(NodeError, match="instruct needs an InstructPix2Pix model"):
        Instruct(Instruct.Params(steps=2)).run(ctx(), model=sd, cond=cond, latent=latent)


def test_refine_upscales_latent_or_image_and_stays_near_its_input(sd, parts):
    cond, latent = parts
    first = Denoise(Denoise.Params(steps=4, strength=0.6, seed=2)).run(ctx(), model=sd, cond=cond, latent=latent)
    by_latent = Refine(Refine.Params(steps=6, strength=0.3, seed=2, scale=2.0, upscale="latent")).run(
        ctx(), model=sd, cond=cond, latent=first
    )
    by_image = Refine(Refine.Params(steps=6, strength=0.3, seed=2, scale=1.5, upscale="image")).run(
        ctx(), model=sd, cond=cond, latent=first, source=sd
    )
    assert by_latent.samples.shape == (1, 4, 16, 16) and by_image.samples.shape == (1, 4, 12, 12)
    same = Refine(Refine.Params(steps=6, strength=0.3, seed=2)).run(ctx(), model=sd, cond=cond, latent=first)
    again = Refine(Refine.Params(steps=6, strength=0.3, seed=2)).run(ctx(), model=sd, cond=cond, latent=first)
    assert torch.equal(same.samples, again.samples)
    # a low-strength pass changes the picture less than a full repaint does
    decode = lambda lat: VaeDecode(VaeDecode.Params()).run(ctx(), model=sd, latent=lat)  # noqa: E731
    full = Denoise(Denoise.Params(steps=6, strength=1.0, seed=2)).run(ctx(), model=sd, cond=cond, latent=first)
    base = decode(first)
    assert (decode(same) - base).abs().mean() < (decode(full) - base).abs().mean()


def test_refine_with_a_model_of_another_family_goes_through_pixels(sd, parts):
    """An SD 1.x result refined by an SDXL model: decoded by its own VAE, re-encoded by the other."""
    cond, latent = parts
    xl = tiny("tiny-sdxl")
    first = Denoise(Denoise.Params(steps=4, strength=0.6, seed=2)).run(ctx(), model=sd, cond=cond, latent=latent)
    xl_cond = PromptEncode(PromptEncode.Params(prompt="a cup")).run(ctx(), model=xl)
    params = Refine.Params(steps=6, strength=0.3, seed=2, scale=1.5, upscale="latent")  # latent upscale cannot cross VAEs
    out = Refine(params).run(ctx(), model=xl, cond=xl_cond, latent=first, source=sd)
    again = Refine(params).run(ctx(), model=xl, cond=xl_cond, latent=first, source=sd)
    assert out.family == "sdxl" and out.samples.shape == (1, 4, 12, 12)
    assert torch.equal(out.samples, again.samples)
    pixels = VaeDecode(VaeDecode.Params()).run(ctx(), model=xl, latent=out)
    assert pixels.shape == (1, 3, 96, 96) and torch.isfinite(pixels).all()
    # the same latent without saying which VAE made it is refused, naming both families
    with pytest.raises(NodeError, match="'sd1'.*'sdxl'|'sdxl'.*'sd1'"):
        Refine(params).run(ctx(), model=xl, cond=xl_cond, latent=first)
