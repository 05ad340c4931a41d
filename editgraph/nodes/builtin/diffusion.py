"""Diffusion nodes: prompt and VAE encode/decode, an empty latent, denoise, refine and instruct.

Each is one typed step, so the cache holds the latents between them: a change after the denoise
(a grade, a composite, the save path) never reruns it. The maths lives in editgraph/editgraph.diffusion
and follows diffusers' pipelines operation for operation, so a workflow reproduces their output
bit for bit on the CPU (tests/nodes/test_diffusion_equivalence.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from editgraph.diffusion import schedules
from editgraph.errors import NodeError
from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import Node, NodeParams, Seed, node
from editgraph.values.sockets import Conditioning, Image, ImageEmbeds, Latent, Mask, Model

if TYPE_CHECKING:
    import torch

# Pixels on a side above which vae.decode works in tiles (tile="auto"): a 2048 px decode in one
# piece needs several GB for the VAE's attention and upsampling activations.
TILE_ABOVE_PX = 1024


def _owned(value: Any) -> Any:
    """Turn inference tensors into ordinary ones, so downstream nodes may modify them in place."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    return value


def _latent_out(samples: torch.Tensor, family: str) -> Latent:
    """A loop's result, stored contiguous, remembering the layout the pipeline would decode from."""
    from editgraph.diffusion import vae

    return Latent(_owned(samples).contiguous(), family=family, channels_last=vae.is_channels_last(samples))


def _needs_model(what: str, model: Model) -> Any:
    for attr in ("unet", "vae", "scheduler_config"):
        if not hasattr(model, attr):
            raise NodeError(f"{what} needs a diffusion model (from model.load), got {type(model).__name__}")
    return model


@node("prompt.encode", version="1.0.0")
class PromptEncode(Node):
    """Turn the prompt (what to paint) and negative prompt (what to steer away from) into the text
    embeddings that guide denoising. SDXL models use both text encoders and add pooled embeddings."""

    cost_class = "expensive"  # model work: always worth a disk entry
    model_components = {"model": ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}  # what keys it: LoRAs on these

    class Params(NodeParams):
        prompt: str = Field("", max_length=4000, description="what the edited region should show")
        negative_prompt: str = Field("", max_length=4000, description="what to steer away from")
        clip_skip: int | None = Field(
            None, ge=1, le=12, description="use the text encoder's output this many layers before the last (as diffusers)"
        )

    def run(self, ctx: RunContext, model: Model) -> Conditioning:
        import torch

        from editgraph.diffusion import text

        m = _needs_model("prompt.encode", model)
        p = self.params
        with torch.inference_mode():
            if getattr(m, "text_encoder_2", None) is not None:
                embeds, pooled = text.encode_text_sdxl(m, [p.prompt], p.clip_skip)
                if p.negative_prompt == "" and m.extra.get("force_zeros_for_empty_prompt", True):
                    # SDXL's pipelines guide away from zeros, not from an encoded empty prompt
                    negative, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
                else:
                    negative, negative_pooled = text.encode_text_sdxl(m, [p.negative_prompt], None)
            else:
                embeds = text.encode_text(m.tokenizer, m.text_encoder, [p.prompt], p.clip_skip)
                # diffusers applies clip_skip to the prompt only, never to the negative prompt.
                negative = text.encode_text(m.tokenizer, m.text_encoder, [p.negative_prompt], None)
                pooled = negative_pooled = None
        return Conditioning(
            embeds=_owned(embeds), negative=_owned(negative), pooled=_owned(pooled),
            negative_pooled=_owned(negative_pooled), family=m.family,
        )


@node("vae.encode", version="1.0.0")
class VaeEncode(Node):
    """Compress the photo into the model's latent space (1/8 of its size). The output keeps the
    VAE's posterior so that denoise can draw from it with its own seed, as diffusers does."""

    cost_class = "expensive"  # model work: always worth a disk entry
    model_components = {"model": ("vae",)}

    class Params(NodeParams):
        pass

    def run(self, ctx: RunContext, model: Model, image: Image) -> Latent:
        import torch

        from editgraph.diffusion import vae

        m = _needs_model("vae.encode", model)
        with torch.inference_mode():
            moments = vae.encode_moments(m, vae.vae_input(m, image))  # (B, 2C, h, w)
            mode = m.vae.config.scaling_factor * vae.posterior(moments).mode()
        return Latent(samples=_owned(mode).contiguous(), family=m.family, moments=_owned(moments).contiguous())


@node("vae.decode", version="1.0.0")
class VaeDecode(Node):
    """Turn a latent back into pixels with the model's VAE (in overlapping tiles when large)."""

    generative = True  # pixels (or latents) made by the trained model
    cost_class = "expensive"  # model work: always worth a disk entry
    model_components = {"model": ("vae",)}

    class Params(NodeParams):
        tile: Literal["auto", "always", "never"] = Field(
            "auto", description=f"decode in tiles: auto = when a side exceeds {TILE_ABOVE_PX} px"
        )

    def run(self, ctx: RunContext, model: Model, latent: Latent) -> Image:
        import torch

        from editgraph.diffusion import vae

        m = _needs_model("vae.decode", model)
        vae.check_model_family("vae.decode", m, latent.family)
        if latent.samples.shape[1] != m.latent_channels:
            raise NodeError(
                f"vae.decode: latent has {latent.samples.shape[1]} channels but the VAE of {m.name!r} takes {m.latent_channels}"
            )
        side = max(latent.samples.shape[-2:]) * m.vae_scale_factor
        tiled = self.params.tile == "always" or (self.params.tile == "auto" and side > TILE_ABOVE_PX)
        with torch.inference_mode():
            image = vae.decode_latents(m, latent.samples, tiled, latent.channels_last)
        return _owned(image.float())


@node("latent.empty", version="1.0.1")
class EmptyLatent(Node):
    """A blank latent of the given picture size: the start of a text-to-image denoise."""
    model_components = {"model": ("vae",)}

    class Params(NodeParams):
        width: int = Field(512, ge=8, le=16384, description="picture width in px (a multiple of the VAE's factor, 8)")
        height: int = Field(512, ge=8, le=16384, description="picture height in px (a multiple of 8)")
        batch: int = Field(1, ge=1, le=64, description="how many pictures")

    @classmethod
    def planned_size(cls, params, connected):
        return params.width, params.height

    def run(self, ctx: RunContext, model: Model) -> Latent:
        import torch

        m = _needs_model("latent.empty", model)
        p, f = self.params, m.vae_scale_factor
        if p.width % f or p.height % f:
            raise NodeError(f"latent.empty: width and height have to be divisible by {f} but are {p.width} and {p.height}")
        return Latent(torch.zeros(p.batch, m.latent_channels, p.height // f, p.width // f), family=m.family)


class _Sampling(NodeParams):
    steps: int = Field(20, ge=1, le=1000, description="denoising steps over the whole schedule")
    cfg: float = Field(7.5, ge=0.0, le=50.0, description="classifier-free guidance scale; <= 1 disables it")
    seed: Seed = Field(0, description="random seed (an integer, or 'random': drawn once and recorded)")
    scheduler: schedules.SchedulerName = Field("euler", description="sampler: " + ", ".join(schedules.SCHEDULER_CLASSES))


@node("denoise", version="1.1.0")
class Denoise(Node):
    """Paint with the diffusion model: from noise (a latent.empty input), from a photo's latent
    (img2img: strength = how much changes), or only inside `mask` (inpainting: latent blending for
    ordinary models, masked-image conditioning for inpainting models). The same wiring runs both:
    an inpainting model takes the masked picture from `image` when connected, else from the
    latent's own decode, and with no mask repaints the whole picture. With an IP-Adapter
    (`ip_adapter` + `ip` from ip_adapter.encode), a reference picture steers it too, `ip_scale` strong."""

    generative = True  # pixels (or latents) made by the trained model
    cost_class = "expensive"  # model work: always worth a disk entry
    # the VAE: an inpainting model's masked picture; an IP-Adapter's weights, converted per UNet
    model_components = {"model": ("unet", "vae"), "ip_adapter": ("weights", "unets")}

    class Params(_Sampling):
        strength: float = Field(1.0, gt=0.0, le=1.0, description="share of the schedule to run; 1.0 repaints fully")
        ip_scale: float = Field(
            1.0, ge=0.0, le=5.0, description="IP-Adapter: how strongly the reference picture steers (0 = not at all)"
        )

    model_kinds = frozenset({"base", "inpaint"})

    def run(
        self, ctx: RunContext, model: Model, cond: Conditioning, latent: Latent,
        mask: Mask | None = None, image: Image | None = None,
        ip_adapter: Model | None = None, ip: ImageEmbeds | None = None,
    ) -> Latent:
        import torch

        from editgraph.diffusion import denoise

        m = _needs_model("denoise", model)
        p = self.params
        if image is not None and mask is None:
            raise NodeError("denoise: `image` is only used with a `mask` (inpainting); connect a mask or drop the image")
        if ip is not None and ip_adapter is not None and ip.adapter != ip_adapter.content_hash:
            raise NodeError(
                f"denoise: `ip` was encoded by another IP-Adapter (content hash {ip.adapter[:12]}) than `ip_adapter` "
                f"({ip_adapter.content_hash[:12]}); encode the reference with the same adapter"
            )
        job = denoise.DenoiseJob(
            model=m, cond=cond, latent=latent, steps=p.steps, cfg=p.cfg, strength=p.strength, seed=int(p.seed),
            scheduler=p.scheduler, mask=mask, image=image, progress=ctx.progress,
            ip_adapter=ip_adapter, ip=ip, ip_scale=p.ip_scale,
        )
        ctx.check_cancelled()
        with torch.inference_mode():
            samples = denoise.denoise(job)
        return _latent_out(samples, m.family)


@node("refine", version="1.0.1")
class Refine(Node):
    """A second, light denoise pass that sharpens detail, optionally at a larger size (upscaling the
    latent, or the decoded picture, first) and optionally with another model (`source` is the model
    whose VAE made `latent` when it is not `model`; the latent then goes through pixels)."""

    generative = True  # pixels (or latents) made by the trained model
    cost_class = "expensive"  # model work: always worth a disk entry
    model_components = {"model": ("unet", "vae"), "source": ("vae",)}

    class Params(_Sampling):
        strength: float = Field(0.3, gt=0.0, le=1.0, description="share of the schedule to rerun; low keeps the picture")
        scale: float = Field(1.0, ge=1.0, le=4.0, description="upscale factor before refining (1 = same size)")
        upscale: Literal["image", "latent"] = Field(
            "image", description="upscale the decoded picture (sharper) or the latent itself (cheaper)"
        )

    model_kinds = frozenset({"base", "inpaint"})

    def run(
        self, ctx: RunContext, model: Model, cond: Conditioning, latent: Latent, source: Model | None = None
    ) -> Latent:
        import torch
        import torch.nn.functional as F

        from editgraph.diffusion import denoise, vae

        m = _needs_model("refine", model)
        src = _needs_model("refine", source) if source is not None else m
        p = self.params
        f = m.vae_scale_factor
        same_vae = src is m or src.content_hash == m.content_hash
        ctx.check_cancelled()
        with torch.inference_mode():
            if p.upscale == "latent" and same_vae:
                vae.check_model_family("refine", m, latent.family)
                h, w = latent.samples.shape[-2:]
                size = (round(h * p.scale), round(w * p.scale))
                samples = latent.samples if size == (h, w) else F.interpolate(latent.samples, size=size, mode="bilinear")
                start = Latent(samples.contiguous(), family=m.family)
            else:
                vae.check_model_family("refine (source)", src, latent.family)
                tiled = max(latent.samples.shape[-2:]) * f > TILE_ABOVE_PX
                pixels = vae.decode_latents(src, latent.samples, tiled, latent.channels_last)
                if p.scale != 1.0:
                    h, w = pixels.shape[-2:]
                    size = (max(f, round(h * p.scale / f) * f), max(f, round(w * p.scale / f) * f))
                    pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True).clamp(0, 1)
                moments = vae.encode_moments(m, vae.vae_input(m, pixels))
                start = Latent(m.vae.config.scaling_factor * vae.posterior(moments).mode(), m.family, moments)
            job = denoise.DenoiseJob(
                model=m, cond=cond, latent=start, steps=p.steps, cfg=p.cfg, strength=p.strength,
                seed=int(p.seed), scheduler=p.scheduler, progress=ctx.progress,
            )
            samples = denoise.denoise(job)
        return _latent_out(samples, m.family)


@node("instruct", version="1.0.1")
class Instruct(Node):
    """Edit the photo by instruction ("make it snowy") with an InstructPix2Pix model: `cfg` pulls
    toward the instruction, `image_cfg` toward the source photo."""

    generative = True  # pixels (or latents) made by the trained model
    cost_class = "expensive"  # model work: always worth a disk entry
    model_components = {"model": ("unet",)}

    class Params(_Sampling):
        image_cfg: float = Field(1.5, ge=0.0, le=20.0, description="image guidance: higher keeps more of the source")

    model_kinds = frozenset({"instruct"})

    def run(self, ctx: RunContext, model: Model, cond: Conditioning, latent: Latent) -> Latent:
        import torch

        from editgraph.diffusion import denoise

        m = _needs_model("instruct", model)
        p = self.params
        ctx.check_cancelled()
        with torch.inference_mode():
            samples = denoise.instruct(
                m, cond, latent, steps=p.steps, cfg=p.cfg, image_cfg=p.image_cfg, seed=int(p.seed),
                scheduler_name=p.scheduler, progress=ctx.progress,
            )
        return _latent_out(samples, m.family)
