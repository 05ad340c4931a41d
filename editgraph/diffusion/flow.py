"""What the flow-matching edit families share: the schedule, the loop, pixels in and out.

Flux 2 / Klein (diffusion/flux2.py), Flux Kontext (diffusion/kontext.py) and Qwen-Image-Edit
(diffusion/qwen.py) all denoise packed latent tokens with FlowMatchEulerDiscreteScheduler,
append the references' tokens to the sequence the transformer sees, and keep only the generated
tokens' prediction. Each family module keeps its pipeline's order of operations so that, on the
CPU with the same seed, its stages give the pipeline's own numbers bit for bit
(tests/diffusion/test_flow_equivalence.py). The one random draw is the starting noise: reference
encodes use the VAE posterior's mode and draw nothing, so they can run (and be cached) apart.

Devices: every stage computes where its module computes (`device_of`: the run device, or the
onload device under a CPU offload mode), as the pipelines use their `_execution_device`. Inputs
move there (cached values come back from disk on the CPU), the generator lives there (a CUDA run
draws on the CUDA generator, as the pipeline does when handed one), and so do timesteps, ids,
masks and guidance. Results are bit-identical per device, not across devices. Pixels leave
`decode` on the CPU, where the pixel nodes run.

Pictures cross into the pipelines' preprocessing as PIL images: an Image socket that came from an
8-bit file round-trips exactly (x * 255 rounds back to the same byte), so resizing, cropping and
normalising go through the pipelines' own image processors and give their very tensors.
diffusers is imported inside functions: `editgraph validate` must not pay its import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from editgraph.errors import NodeError
# Where a stage's tensors go: the device `module` computes on (the onload device under offload).
from editgraph.models.offload import execution_device as device_of  # the flow families' name


def generator(seed: int, device: torch.device) -> torch.Generator:
    """The run's generator on the run's device (diffusion/schedules.py: where the pipelines draw
    when handed a generator of that device)."""
    from editgraph.diffusion.schedules import generator_for

    if device.type == "meta":  # shapes only (tests check placement there): no RNG on it, so draw on the
        device = torch.device("cpu")  # CPU and move, as randn_tensor does for a CPU generator
    return generator_for(seed, device)


class Setup(NamedTuple):
    """What each flow family's denoise starts from: the transformer, the device it runs on (the
    pipeline's _execution_device), the run's generator there, the working dtype (the
    conditioning's), the latent channels before 2x2 packing, and the latent grid (lh, lw: even,
    for the packing) of a width x height picture at VAE scale factor f."""

    transformer: Any
    device: torch.device
    generator: torch.Generator
    dtype: torch.dtype
    channels: int
    lh: int
    lw: int


def setup(model: Any, cond: Any, seed: int, width: int, height: int, f: int) -> Setup:
    transformer = model.transformer
    device = device_of(transformer)
    return Setup(transformer, device, generator(seed, device), cond.embeds.dtype, transformer.config.in_channels // 4,
                 2 * (height // (f * 2)), 2 * (width // (f * 2)))


def to_pil(image: torch.Tensor, what: str = "image") -> Any:
    """(1, 3, H, W) 0..1 pixels -> an RGB PIL image (exact for pictures read from 8-bit files)."""
    from PIL import Image as PILImage

    if image.ndim != 4 or image.shape[1] != 3 or image.shape[0] != 1:
        raise NodeError(f"{what} must be one (1, 3, H, W) picture, got shape {tuple(image.shape)}")
    arr = (image[0].detach().cpu().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return PILImage.fromarray(arr, "RGB")


def mask_to_pil(mask: torch.Tensor) -> Any:
    """(1, 1, H, W) 0..1 mask -> an 8-bit grayscale PIL image, as the pipelines take a mask."""
    from PIL import Image as PILImage

    if mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise NodeError(f"mask must be one (1, 1, H, W) mask, got shape {tuple(mask.shape)}")
    arr = (mask[0, 0].detach().cpu().float().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return PILImage.fromarray(arr, "L")


def pil_to_tensor(pil: Any) -> torch.Tensor:
    """An RGB PIL image -> (1, 3, H, W) float32 0..1, as image.load decodes."""
    arr = torch.from_numpy(np.asarray(pil.convert("RGB")).copy())
    return arr.permute(2, 0, 1)[None].float().div_(255.0).contiguous()


def check_size(what: str, width: int, height: int, multiple: int) -> None:
    if width % multiple or height % multiple:
        raise NodeError(
            f"{what}: `height` and `width` have to be divisible by {multiple} but are {height} and {width}; "
            f"resize the picture first, e.g. image.resize with multiple_of={multiple}"
        )


def timesteps_for(scheduler: Any, steps: int, mu: float, device: torch.device, *, flow_sigmas_off: bool = False) -> torch.Tensor:
    """The pipelines' schedule on `device`: sigmas linspace(1, 1/steps), shifted by `mu` (resolution dependent)."""
    from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps

    sigmas = np.linspace(1.0, 1 / steps, steps)
    if flow_sigmas_off and getattr(scheduler.config, "use_flow_sigmas", False):
        sigmas = None
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    return timesteps


def cut_by_strength(scheduler: Any, steps: int, strength: float) -> torch.Tensor:
    """The img2img/inpaint pipelines' get_timesteps: skip the first (1 - strength) of the schedule
    and point the scheduler at where it now starts."""
    init_timestep = min(steps * strength, steps)
    t_start = int(max(steps - init_timestep, 0))
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    if steps - t_start < 1:
        raise NodeError(f"strength {strength} of {steps} steps leaves no step to run; raise steps or strength")
    return timesteps


def make_scheduler(model: Any) -> Any:
    """A fresh scheduler (they are stateful) from the model's own scheduler config."""
    import diffusers

    config = model.scheduler_config
    cls = getattr(diffusers, config.get("_class_name", "FlowMatchEulerDiscreteScheduler"))
    return cls.from_config(config)


def schedule(model: Any, steps: int, tokens: int, device: torch.device, *, mu: float | None = None,
             strength: float | None = None, flow_sigmas_off: bool = False) -> tuple[Any, torch.Tensor]:
    """A fresh scheduler and the pipelines' timesteps on `device`: `steps` shifted by `mu` for `tokens` image
    tokens (by default the linear shift from the scheduler config, diffusers' `calculate_shift`,
    which the Flux, Kontext and Qwen pipelines share), then cut by `strength` for an edit of
    given latents (img2img / inpaint)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = make_scheduler(model)
    if mu is None:
        c = scheduler.config
        mu = calculate_shift(tokens, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    timesteps = timesteps_for(scheduler, steps, mu, device, flow_sigmas_off=flow_sigmas_off)
    if strength is not None:
        timesteps = cut_by_strength(scheduler, steps, strength)
    return scheduler, timesteps


def noise(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The pipelines' prepare_latents draw: randn_tensor on `device` (on the generator's own device
    when that is the same, as generator() makes it)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


@dataclass
class Loop:
    """One flow-matching run: `predict(latents, t)` returns the guided velocity for the generated
    tokens; `after_step(i, t, latents)` may blend (inpainting) and returns the latents to go on with."""

    scheduler: Any
    timesteps: torch.Tensor
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    after_step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    progress: Callable[[int, int], None] | None = None
    begin_index: int | None = 0  # where the schedule starts (img2img/inpaint: cut by strength); None: already set


def keep_known(scheduler: Any, timesteps: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
    """A masked edit's after-step (the inpaint pipelines' blend): outside the mask, the source's
    packed tokens noised to the next step's level (after the last step, the source itself)."""

    def blend(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        known = source
        if i < len(timesteps) - 1:
            known = scheduler.scale_noise(source, next_timestep(timesteps, i), noise)
        return (1 - mask) * known + mask * latents

    return blend


def next_timestep(timesteps: torch.Tensor, i: int) -> torch.Tensor:
    """The pipelines' `torch.tensor([timesteps[i + 1]])` without the trip through the host: with
    the scheduler's begin index set, scale_noise reads only the step index, never this value, and
    moves it to the sample's device first; a slice stays where the timesteps are (no sync)."""
    return timesteps[i + 1 : i + 2]


def run_loop(loop: Loop, latents: torch.Tensor) -> torch.Tensor:
    """The pipelines' denoising loop: predict, step, (blend), report progress; returns the latents."""
    # 1. index the scheduler from its start, as the pipelines do (no search per step)
    if loop.begin_index is not None and hasattr(loop.scheduler, "set_begin_index"):
        loop.scheduler.set_begin_index(loop.begin_index)
    n = len(loop.timesteps)
    for i, t in enumerate(loop.timesteps):
        # 2. velocity for the generated tokens, guidance applied by the family
        velocity = loop.predict(latents, t)
        # 3. Euler step along the flow
        latents = loop.scheduler.step(velocity, t, latents, return_dict=False)[0]
        # 4. inpainting: put the known region back at this noise level
        if loop.after_step is not None:
            latents = loop.after_step(i, t, latents)
        if loop.progress is not None:
            loop.progress(i + 1, n)  # also raises Cancelled when the run was cancelled
    return latents


def postprocess(image: torch.Tensor) -> torch.Tensor:
    """VAE output (-1..1) -> 0..1 pixels on the CPU, as the pipelines' postprocess(output_type="pt")
    (computed on the VAE's device, then moved: the pixel nodes after a decode run on the CPU)."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(do_resize=False).postprocess(image, output_type="pt").cpu()


def owned(value: Any) -> Any:
    """Inference tensors -> ordinary ones, so downstream nodes may modify them in place."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value.contiguous()
    return value
