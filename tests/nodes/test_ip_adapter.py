"""IP-Adapter on SD 1.x and SDXL: ip_adapter.encode -> denoise (ip_scale) -> vae.decode equals
diffusers' pipeline with `load_ip_adapter`, `set_ip_adapter_scale` and `ip_adapter_image` bit for
bit on the tiny builds; the adapter is on the UNet only while an IP denoise runs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image as PILImage

from . import diffusion_support
from .diffusion_support import ASSETS, assert_same, ctx, photo, tiny, tiny_path, to_tensor

from editgraph.nodes.builtin.diffusion import Denoise, EmptyLatent, PromptEncode, VaeDecode, VaeEncode
from editgraph.nodes.builtin.ip_adapter import EncodeIPReference

STEPS, CFG, SEED, PROMPT = 3, 6.0, 5, "a cat sitting on a red chair"
WEIGHTS = {"sd1": ("models", "ip-adapter_sd15.safetensors"), "sdxl": ("sdxl_models", "ip-adapter_sdxl.safetensors")}
MODELS = {"sd1": "tiny-sd", "sdxl": "tiny-sdxl"}


def _reference() -> PILImage.Image:
    return PILImage.open(ASSETS / "chelsea.png").convert("RGB")


def _adapter(family: str):
    from editgraph.models.ip_adapter import load_ip_adapter

    sub, name = WEIGHTS[family]
    return load_ip_adapter(tiny_path("tiny-ip-adapter"), f"{sub}/{name}", device=diffusion_support.DEVICE)


def _pipeline(family: str, scheduler: str):
    """diffusers' own pipeline on its own copy of the tiny model, with the adapter loaded its way."""
    import diffusers

    from editgraph.diffusion.schedules import make_scheduler

    cls = diffusers.StableDiffusionPipeline if family == "sd1" else diffusers.StableDiffusionXLPipeline
    extra = {"safety_checker": None, "requires_safety_checker": False} if family == "sd1" else {}
    pipe = cls.from_pretrained(tiny_path(MODELS[family]), local_files_only=True, **extra).to(diffusion_support.DEVICE)
    pipe.scheduler = make_scheduler(scheduler, dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    sub, name = WEIGHTS[family]
    pipe.load_ip_adapter(str(tiny_path("tiny-ip-adapter")), subfolder=sub, weight_name=name, local_files_only=True)
    return pipe


def _pipe_run(pipe, scale: float, **kw):
    seen = {}

    def grab(p, i, t, tensors):
        seen["latents"] = tensors["latents"]
        return {}

    pipe.set_ip_adapter_scale(scale)
    pixels = pipe(
        prompt=PROMPT, ip_adapter_image=_reference(), num_inference_steps=STEPS, guidance_scale=CFG,
        generator=torch.Generator(diffusion_support.DEVICE).manual_seed(SEED), output_type="pt",
        callback_on_step_end=grab, **kw,
    ).images
    return seen["latents"], pixels


def _engine(family: str, scheduler: str, scale: float, img2img: bool = False):
    model, adapter, c = tiny(MODELS[family]), _adapter(family), ctx()
    cond = PromptEncode(PromptEncode.Params(prompt=PROMPT)).run(c, model=model)
    ip = EncodeIPReference(EncodeIPReference.Params()).run(c, adapter=adapter, image=to_tensor(_reference()))
    if img2img:
        latent = VaeEncode(VaeEncode.Params()).run(c, model=model, image=to_tensor(photo()))
    else:
        latent = EmptyLatent(EmptyLatent.Params(width=64, height=64)).run(c, model=model)
    params = Denoise.Params(steps=STEPS, cfg=CFG, strength=0.7 if img2img else 1.0, seed=SEED, scheduler=scheduler, ip_scale=scale)
    out = Denoise(params).run(c, model=model, cond=cond, latent=latent, ip_adapter=adapter, ip=ip)
    return out.samples, VaeDecode(VaeDecode.Params()).run(c, model=model, latent=out)


@pytest.mark.equivalence
@pytest.mark.slow
@pytest.mark.parametrize(
    "family,scheduler,scale,img2img",
    [("sd1", "euler_a", 0.6, False), ("sd1", "ddim", 1.0, True), ("sdxl", "euler", 0.8, False)],
    ids=["sd1-txt2img-euler_a", "sd1-img2img-ddim", "sdxl-txt2img-euler"],
)
def test_ip_adapter_matches_pipeline(family, scheduler, scale, img2img):
    import diffusers

    pipe = _pipeline(family, scheduler)
    if img2img:
        pipe = (diffusers.StableDiffusionImg2ImgPipeline if family == "sd1" else diffusers.StableDiffusionXLImg2ImgPipeline)(**pipe.components)
        pipe.set_progress_bar_config(disable=True)
        theirs = _pipe_run(pipe, scale, image=photo(), strength=0.7)
    else:
        theirs = _pipe_run(pipe, scale, height=64, width=64)
    assert_same(_engine(family, scheduler, scale, img2img), theirs)


@pytest.mark.slow
def test_reference_and_scale_change_the_picture_and_the_plain_unet_comes_back():
    model, adapter, c = tiny("tiny-sd"), _adapter("sd1"), ctx()
    plain = {k: type(v).__name__ for k, v in model.unet.attn_processors.items()}
    cond = PromptEncode(PromptEncode.Params(prompt=PROMPT)).run(c, model=model)
    latent = EmptyLatent(EmptyLatent.Params(width=64, height=64)).run(c, model=model)
    cat = EncodeIPReference(EncodeIPReference.Params()).run(c, adapter=adapter, image=to_tensor(_reference()))
    cup = EncodeIPReference(EncodeIPReference.Params()).run(c, adapter=adapter, image=to_tensor(photo()))
    assert cat.embeds.shape == (1, 32) and cat.adapter == adapter.content_hash and not torch.equal(cat.embeds, cup.embeds)
    assert torch.count_nonzero(cat.negative) == 0  # the plain IP-Adapter guides away from zeros

    def run(ip=None, scale=1.0):
        params = Denoise.Params(steps=2, cfg=CFG, seed=SEED, scheduler="euler", ip_scale=scale)
        kw = {"ip_adapter": adapter, "ip": ip} if ip is not None else {}
        return Denoise(params).run(c, model=model, cond=cond, latent=latent, **kw).samples

    before = run()
    with_cat, with_cup, weaker = run(cat), run(cup), run(cat, 0.3)
    assert not torch.equal(with_cat, with_cup) and not torch.equal(with_cat, weaker)
    assert torch.equal(run(cat, 0.0), before)  # scale 0: the adapter adds nothing
    # the shared UNet is plain again: same processors, no image projection, same plain result
    assert {k: type(v).__name__ for k, v in model.unet.attn_processors.items()} == plain
    assert model.unet.encoder_hid_proj is None and model.unet.config.encoder_hid_dim_type is None
    assert torch.equal(run(), before)


def test_bad_adapters_are_refused_with_the_reason(tmp_path):
    from safetensors.torch import save_file

    from editgraph.models.errors import ModelError
    from editgraph.models.ip_adapter import load_ip_adapter, resolve_adapter

    root = tiny_path("tiny-ip-adapter")
    with pytest.raises(ModelError, match=r"not a \.safetensors file.*pickle"):
        resolve_adapter(root, "models/ip-adapter_sd15.bin")
    with pytest.raises(ModelError, match=r"not found in .*it holds: models/ip-adapter_sd15.safetensors, sdxl_models/ip-adapter_sdxl.safetensors"):
        resolve_adapter(root, "models/ip-adapter-plus_sd15.safetensors")
    with pytest.raises(ModelError, match="must be a path inside"):
        resolve_adapter(root, "../x.safetensors")
    (tmp_path / "models" / "image_encoder").mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "models" / "image_encoder" / f).write_bytes((root / "models" / "image_encoder" / f).read_bytes())
    save_file({"image_proj.latents": torch.zeros(1, 16, 32), "ip_adapter.1.to_k_ip.weight": torch.zeros(32, 32)}, str(tmp_path / "models" / "plus.safetensors"))
    with pytest.raises(ModelError, match="IP-Adapter Plus.*supports the plain IP-Adapter"):
        load_ip_adapter(tmp_path, "models/plus.safetensors").weights

    # the SDXL adapter on an SD 1.x UNet: named, before any step runs
    from editgraph.errors import NodeError

    model, adapter, c = tiny("tiny-sd"), _adapter("sdxl"), ctx()
    ip = EncodeIPReference(EncodeIPReference.Params()).run(c, adapter=adapter, image=to_tensor(_reference()))
    cond = PromptEncode(PromptEncode.Params(prompt=PROMPT)).run(c, model=model)
    latent = EmptyLatent(EmptyLatent.Params(width=64, height=64)).run(c, model=model)
    with pytest.raises(NodeError, match="cross-attention width 96, but this model's is 32"):
        Denoise(Denoise.Params(steps=1)).run(c, model=model, cond=cond, latent=latent, ip_adapter=adapter, ip=ip)
    with pytest.raises(NodeError, match="connect both or neither"):
        Denoise(Denoise.Params(steps=1)).run(c, model=model, cond=cond, latent=latent, ip=ip)


@pytest.mark.equivalence
@pytest.mark.slow
def test_ip_adapter_with_a_lora_matches_pipeline(tmp_path):
    """model.lora and the IP-Adapter on one denoise: the pipeline after load_lora_weights +
    set_adapters, then load_ip_adapter + set_ip_adapter_scale, bit for bit (sd1)."""
    from editgraph import api
    from editgraph.models.loader import load_model
    from editgraph.testing.tinylora import write_diffusers_lora

    sd = tiny_path("tiny-sd")
    lora = write_diffusers_lora(load_model(sd), "unet", tmp_path / "style.safetensors", seed=7)
    doc = {"format": "editgraph/1", "name": "lora-ip", "nodes": {
        "model": {"type": "model.load", "params": {"model": str(sd)}},
        "style": {"type": "model.lora", "inputs": {"model": "model"}, "params": {"lora": str(lora), "scale": 0.7}},
        "adapter": {"type": "ip_adapter.load", "params": {"adapter": str(tiny_path("tiny-ip-adapter"))}},
        "look": {"type": "image.load", "params": {"path": str(ASSETS / "chelsea.png")}},
        "ref": {"type": "ip_adapter.encode", "inputs": {"adapter": "adapter", "image": "look"}},
        "text": {"type": "prompt.encode", "inputs": {"model": "style"}, "params": {"prompt": PROMPT}},
        "empty": {"type": "latent.empty", "inputs": {"model": "style"}, "params": {"width": 64, "height": 64}},
        "denoise": {"type": "denoise", "inputs": {"model": "style", "cond": "text", "latent": "empty", "ip_adapter": "adapter", "ip": "ref"},
                    "params": {"steps": STEPS, "cfg": CFG, "seed": SEED, "scheduler": "euler", "ip_scale": 0.6}},
        "pixels": {"type": "vae.decode", "inputs": {"model": "style", "latent": "denoise"}},
    }}
    ours = api.run(doc, cache=False, device="cpu").value("pixels")

    import diffusers

    from editgraph.diffusion.schedules import make_scheduler

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(sd, safety_checker=None, requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = make_scheduler("euler", dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.7])
    pipe.load_ip_adapter(str(tiny_path("tiny-ip-adapter")), subfolder="models", weight_name="ip-adapter_sd15.safetensors", local_files_only=True)
    pipe.set_ip_adapter_scale(0.6)
    with torch.inference_mode():
        theirs = pipe(
            prompt=PROMPT, ip_adapter_image=_reference(), height=64, width=64, num_inference_steps=STEPS, guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED), output_type="pt",
        ).images
    assert ours.shape == theirs.shape and (ours - theirs).abs().max().item() == 0.0
