"""Tiny Stable Diffusion models the project builds itself, offline and byte for byte the same.

They have real SD 1.x structure (a UNet with cross-attention, a 4-block VAE so latents are 1/8 of
the image, a CLIP text encoder and a CLIP BPE tokenizer) at toy width, with seeded random weights:
tiny-sd, tiny-sd-inpaint (9-channel UNet), tiny-ip2p (8-channel, InstructPix2Pix), medium-sd
(wider, for benchmarks), and tiny-sdxl (SDXL structure: two text encoders, pooled text, time ids).
They make noise-like pictures, but every code path a real model takes (from_pretrained, the
pipelines, encode -> denoise -> decode) runs on them in seconds, which is what CI and the demo need.

    make_tiny("tiny-sd", dir)     # -> dir, holding model_index.json, unet/, vae/, ... editgraph.json

Each build seeds torch's RNG per component (inside fork_rng, so the caller's RNG is untouched),
writes JSON with sorted keys, and trains its tokenizer on a fixed text (CLIP's normalizer and
pre-tokenizer from the `tokenizers` library, a merge loop with a fixed tie order), so two builds
produce identical bytes (tests/models/test_tiny.py checks, across processes too).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editgraph.errors import EditgraphError
from editgraph.models.folders import MARKER

# Bump when a build would produce different bytes: cached builds carrying an older version are rebuilt.
BUILDER_VERSION = 3


# SD 1.x scheduler settings (PNDM as shipped with SD 1.5), so denoise nodes see realistic timesteps.
SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
    "trained_betas": None,
}


# SDXL's Euler scheduler settings.
XL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "trained_betas": None,
}


@dataclass(frozen=True)
class TinySpec:
    name: str
    pipeline: str  # diffusers pipeline class named in model_index.json
    kind: str  # "base" | "inpaint" | "instruct"
    in_channels: int  # UNet input: 4 latents (+1 mask +4 masked latents, or +4 image latents)
    unet_channels: tuple[int, ...]
    vae_channels: tuple[int, ...]  # four entries: three downsamplings, latents at 1/8
    text_width: int  # CLIP hidden size = UNet cross-attention dim
    text_layers: int
    seed: int
    family: str = "sd1"  # "sdxl": two text encoders (the second pooled), size/crop time ids
    text_width_2: int = 0  # SDXL's second encoder; wider than the first, as in the real model,
    # which is also how diffusers' single-file loader tells the two apart


TINY_MODELS: dict[str, TinySpec] = {
    s.name: s
    for s in (
        TinySpec("tiny-sd", "StableDiffusionPipeline", "base", 4, (32, 64), (32, 32, 64, 64), 32, 3, 1000),
        TinySpec("tiny-sd-inpaint", "StableDiffusionInpaintPipeline", "inpaint", 9, (32, 64), (32, 32, 64, 64), 32, 3, 1000),
        TinySpec("tiny-ip2p", "StableDiffusionInstructPix2PixPipeline", "instruct", 8, (32, 64), (32, 32, 64, 64), 32, 3, 1000),
        TinySpec("medium-sd", "StableDiffusionPipeline", "base", 4, (64, 128, 256), (64, 64, 128, 128), 64, 4, 2000),
        TinySpec("tiny-sdxl", "StableDiffusionXLPipeline", "base", 4, (32, 64), (32, 32, 64, 64), 32, 3, 3000, "sdxl", 64),
    )
}

def _flow_names() -> tuple[str, ...]:
    from editgraph.models.tiny_flow import FLOW_MODELS

    return tuple(FLOW_MODELS)


# The SD family (this module) and the 2026 edit families (models/tiny_flow.py).
TINY_NAMES: tuple[str, ...] = (*TINY_MODELS, *_flow_names())

def make_tiny(name: str, directory: str | os.PathLike[str]) -> Path:
    """Build the tiny model `name` (one of TINY_NAMES) into `directory` (created; must be empty
    or absent) and return its path. Offline, deterministic, a second or two for tiny models."""
    # The builders are imported here: naming and finding tiny models (validate) needs none of them.
    from editgraph.models.tiny_flow import FLOW_MODELS, make_flow_tiny
    from editgraph.models.tiny_ip_adapter import TINY_ADAPTERS, make_ip_adapter_tiny
    from editgraph.models.tokenizers_offline import write_json as _write_json
    from editgraph.models.tokenizers_offline import write_tokenizer

    spec = TINY_MODELS.get(name)
    if spec is None and name not in FLOW_MODELS and name not in TINY_ADAPTERS:
        raise EditgraphError(f"unknown tiny model {name!r}; choose one of {', '.join((*TINY_NAMES, *TINY_ADAPTERS))}")
    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise EditgraphError(f"cannot build {name} into {out}: the folder is not empty")
    out.mkdir(parents=True, exist_ok=True)
    if name in TINY_ADAPTERS:
        make_ip_adapter_tiny(out, BUILDER_VERSION, _write_json)
        _normalize_configs(out)
        return out
    if spec is None:
        make_flow_tiny(FLOW_MODELS[name], out, BUILDER_VERSION, _write_json)
        _normalize_configs(out)
        return out

    import torch

    # 1. Tokenizer first: its size fixes the text encoder's vocabulary.
    xl = spec.family == "sdxl"
    vocab_size = write_tokenizer(out / "tokenizer")
    if xl:
        write_tokenizer(out / "tokenizer_2", pad="!")  # SDXL's OpenCLIP tokenizer pads with "!"

    # 2. Components, each under its own seed, without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        unet = _unet(spec)
        torch.manual_seed(spec.seed + 1)
        vae = _vae(spec)
        torch.manual_seed(spec.seed + 2)
        text_encoder = _text_encoder(spec, vocab_size)
        if xl:
            torch.manual_seed(spec.seed + 3)
            _text_encoder(spec, vocab_size, with_projection=True).save_pretrained(out / "text_encoder_2", safe_serialization=True)

    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    scheduler = {"_class_name": "EulerDiscreteScheduler", **XL_SCHEDULER} if xl else {"_class_name": "PNDMScheduler", **SD_SCHEDULER}
    _write_json(out / "scheduler" / "scheduler_config.json", scheduler)

    # 3. model_index.json written by hand: save_pretrained on a pipeline would also rewrite the
    # tokenizer as tokenizer.json, and we want the vocab.json + merges.txt a real SD repo has.
    import diffusers

    index: dict[str, Any] = {
        "_class_name": spec.pipeline,
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if spec.pipeline == "StableDiffusionPipeline":
        index["image_encoder"] = [None, None]
    if xl:
        for key in ("requires_safety_checker", "safety_checker"):
            del index[key]
        index.update(
            {
                "image_encoder": [None, None],
                "force_zeros_for_empty_prompt": True,
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "tokenizer_2": ["transformers", "CLIPTokenizer"],
            }
        )
    _write_json(out / "model_index.json", index)
    _write_json(out / MARKER, {"name": spec.name, "family": spec.family, "kind": spec.kind, "builder_version": BUILDER_VERSION})
    _normalize_configs(out)
    return out


def make_tiny_all(directory: str | os.PathLike[str], names: Iterable[str] = TINY_NAMES) -> list[Path]:
    """Build each of `names` into `directory/<name>` (what `editgraph models make-tiny DIR` does)."""
    root = Path(directory)
    return [make_tiny(name, root / name) for name in names]


def _unet(spec: TinySpec):
    from diffusers import UNet2DConditionModel

    n = len(spec.unet_channels)
    if spec.family == "sdxl":
        # SDXL layout: no attention in the shallowest block; the two encoders' widths concatenated;
        # the second encoder's pooled text + six time ids (8 each) feed the added embedding.
        return UNet2DConditionModel(
            sample_size=32,
            in_channels=spec.in_channels,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=spec.unet_channels,
            layers_per_block=2,
            cross_attention_dim=spec.text_width + spec.text_width_2,
            attention_head_dim=8,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + spec.text_width_2,
            norm_num_groups=32,
        )
    # SD layout: cross-attention in every block but the deepest.
    down = tuple(["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"])
    up = tuple(["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1))
    return UNet2DConditionModel(
        sample_size=32 if n == 2 else 64,
        in_channels=spec.in_channels,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=spec.unet_channels,
        layers_per_block=2,
        cross_attention_dim=spec.text_width,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _vae(spec: TinySpec):
    from diffusers import AutoencoderKL

    n = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=spec.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=256,
        scaling_factor=0.13025 if spec.family == "sdxl" else 0.18215,
    )


def _text_encoder(spec: TinySpec, vocab_size: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    width = spec.text_width_2 if with_projection else spec.text_width
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=width * 4,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=width,
        hidden_act="gelu" if with_projection else "quick_gelu",  # OpenCLIP bigG uses gelu, CLIP ViT-L quick_gelu
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _normalize_configs(out: Path) -> None:
    """Rewrite every config JSON with sorted keys and without fields that name the build machine
    (a source path), so the same model built anywhere has the same bytes."""
    from editgraph.models.tokenizers_offline import write_json as _write_json

    for path in sorted(out.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data.pop("_name_or_path", None)
            _write_json(path, data)


@contextlib.contextmanager
def quiet_progress():
    """Hide transformers' and diffusers' own progress bars ("Loading weights", "Writing model
    shards") while loading or saving: editgraph reports progress through its events, and the bars
    would interleave with the CLI's output. Restores whatever was set before."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    before = (tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled())
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        if before[0]:
            tlog.enable_progress_bar()
        if before[1]:
            dlog.enable_progress_bar()


@contextlib.contextmanager
def build_lock(root: Path, name: str, *, wait: bool = True):
    """Hold the inter-process lock on building `name` under `root` (an flock on a small file
    beside the builds: the kernel releases it when its holder dies, so a crash never leaves it
    held). Yields True when held; with wait=False, yields False at once if another process holds it."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor drops the lock


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:building|old)-\d+$")


def sweep_stale_builds(root: Path, name: str | None = None) -> list[Path]:
    """Remove build folders (".<name>.building-<pid>", ".<name>.old-<pid>") nobody is writing:
    those of a name whose build lock is free. A killed build leaves one; only the lock's holder
    builds, so with the lock free (or held by us: pass `name` while holding it) it is dead."""
    removed = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if m is None or not entry.is_dir():
            continue
        if m["name"] == name:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            continue
        with build_lock(root, m["name"], wait=False) as held:
            if held:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("builder_version") == BUILDER_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def build_into(name: str, target: Path, is_built: Callable[[Path], bool] = _is_current) -> Path:
    """Build `name` into `target`, atomic and idempotent under concurrency: one process at a time
    (build_lock) checks `is_built` and, only if the folder is not a complete current build, builds
    into a sibling temp folder and renames it into place. A complete build is never removed, so a
    process loading it while another arrives late never sees it vanish."""
    root = target.parent
    with build_lock(root, target.name):
        sweep_stale_builds(root, target.name)  # under the lock, any such folder is a dead build's
        if is_built(target):
            return target  # another process built it while we waited
        tmp = root / f".{target.name}.building-{os.getpid()}"
        try:
            with quiet_progress():
                make_tiny(name, tmp)
            if target.exists():  # outdated (older BUILDER_VERSION) or pruned: move aside, then drop
                old = root / f".{target.name}.old-{os.getpid()}"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
