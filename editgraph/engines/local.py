"""Local diffusion models as edit engines, so a routing table can send every operation to this
machine (the tiny models in tests; real SD-family weights otherwise) and a workflow runs offline.

A local engine is reproducible: the same seed, model files, thread count and inputs give the
same pixels. Inpainting keeps every pixel outside the mask exactly (the result is composited
over the source through the mask), as the bundled inpaint workflow does.

    local:<model>   model = a model name (tiny-sd-inpaint, tiny-ip2p, tiny-sd, ...) or a path
    options: steps (default 20), cfg (7.5), image_cfg (1.5, instruct models), scheduler (euler)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from editgraph.diffusion import denoise as loops
from editgraph.diffusion import text, vae
from editgraph.engines.base import CallRecord, EditJob, EditResult, Engine, JobShape, Services
from editgraph.errors import NodeError
from editgraph.values.sockets import Conditioning, Latent

_OPS = {"inpaint": frozenset({"inpaint"}), "instruct": frozenset({"instruction"}), "base": frozenset({"inpaint", "generate"})}


class LocalEngine(Engine):
    provider = "local"
    takes_seed = True
    reproducible = True

    def __init__(self, model: str, *, steps: int = 20, cfg: float = 7.5, image_cfg: float = 1.5, scheduler: str = "euler"):
        super().__init__(model)
        if not 1 <= int(steps) <= 1000:
            raise NodeError(f"engine local:{model}: steps must be 1..1000, got {steps}")
        self.steps, self.cfg, self.image_cfg, self.scheduler = int(steps), float(cfg), float(image_cfg), scheduler

    def _model(self) -> Any:
        from editgraph.models.loader import load_model

        return load_model(self.model)

    @property
    def supports(self) -> frozenset[str]:  # type: ignore[override]
        return _OPS[self._model().kind]

    def estimate(self, shape: JobShape) -> float:
        return 0.0

    def run(self, job: EditJob, services: Services) -> EditResult:
        self.check(job)
        m = self._model()
        seed = 0 if job.seed is None else int(job.seed)
        f = m.vae_scale_factor
        source = job.image
        if source is None:
            raise NodeError(f"engine {self.name} needs a source picture")
        h, w = source.shape[-2:]
        H, W = max(f, h // f * f), max(f, w // f * f)  # the VAE wants multiples of its factor
        work = source if (H, W) == (h, w) else F.interpolate(source, size=(H, W), mode="bicubic", antialias=True).clamp(0, 1)
        images, calls = [], []
        with torch.inference_mode():
            cond = self._cond(m, job.instruction)
            moments = vae.encode_moments(m, vae.vae_input(m, work))
            latent = Latent(m.vae.config.scaling_factor * vae.posterior(moments).mode(), m.family, moments)
            for i in range(job.n):
                if services.cancel is not None and services.cancel.is_set():
                    from editgraph.errors import Cancelled

                    raise Cancelled(f"engine {self.name} cancelled")
                if m.kind == "instruct":
                    samples = loops.instruct(
                        m, cond, latent, steps=self.steps, cfg=self.cfg, image_cfg=self.image_cfg, seed=seed + i,
                        scheduler_name=self.scheduler, progress=services.progress,
                    )
                else:
                    mask = None if job.mask is None else F.interpolate(job.mask, size=(H, W), mode="bilinear").clamp(0, 1)
                    samples = loops.denoise(loops.DenoiseJob(
                        model=m, cond=cond, latent=latent, steps=self.steps, cfg=self.cfg, strength=1.0, seed=seed + i,
                        scheduler=self.scheduler, mask=mask, image=work if m.kind == "inpaint" else None, progress=services.progress,
                    ))
                pixels = vae.decode_latents(m, samples, False, vae.is_channels_last(samples)).float().clamp(0, 1)
                if (H, W) != (h, w):
                    pixels = F.interpolate(pixels, size=(h, w), mode="bicubic", antialias=True).clamp(0, 1)
                if job.mask is not None:  # every pixel outside the mask stays the source's
                    pixels = source * (1 - job.mask) + pixels * job.mask
                images.append(pixels.clone())
                calls.append(CallRecord(self.name, "local", self.model, None, {"steps": self.steps}, 0.0, seed + i, True))
        return EditResult(images, calls)

    def _cond(self, m: Any, prompt: str) -> Conditioning:
        if getattr(m, "text_encoder_2", None) is not None:
            embeds, pooled = text.encode_text_sdxl(m, [prompt], None)
            return Conditioning(embeds, torch.zeros_like(embeds), pooled, torch.zeros_like(pooled), family=m.family)
        embeds = text.encode_text(m.tokenizer, m.text_encoder, [prompt], None)
        negative = text.encode_text(m.tokenizer, m.text_encoder, [""], None)
        return Conditioning(embeds, negative, family=m.family)
