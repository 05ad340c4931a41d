"""Shared by tests/nodes/test_diffusion*.py: tiny models built once per test process, pipelines
assembled from the very same loaded components, and the test photo at 64 px."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from editgraph.nodes.context import RunContext

ASSETS = Path(__file__).resolve().parents[2] / "editgraph" / "workflows" / "assets"
_ROOT: Path | None = None
# The device the equivalence tests run on: `pytest --device cuda` on a GPU machine (tests/conftest.py).
DEVICE = torch.device("cpu")
# `pytest --diff-log FILE`: every equivalence check appends "test id<TAB>max abs diff" to it
# (bench/gpu_check.py prints them as a table).
DIFF_LOG: Path | None = None
_BUILT: dict[str, Path] = {}


def tiny_path(name: str) -> Path:
    """A tiny model folder built once per process (the loader's own builder, outside any test's cache)."""
    global _ROOT
    from editgraph.models.tiny import build_into

    if name not in _BUILT:
        if _ROOT is None:
            _ROOT = Path(tempfile.mkdtemp(prefix="editgraph-tiny-"))
            atexit.register(shutil.rmtree, _ROOT, True)
        _BUILT[name] = build_into(name, _ROOT / name) or (_ROOT / name)
    return _BUILT[name]


def tiny(name: str):
    from editgraph.models.loader import load_model

    return load_model(tiny_path(name), device=DEVICE)


def pipeline(cls, model, scheduler: str):
    """A diffusers pipeline over the model's own components (no copies) with a fresh scheduler."""
    from editgraph.diffusion.denoise import make_scheduler

    return cls(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=make_scheduler(scheduler, model.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


def photo(size: int = 64) -> PILImage.Image:
    return PILImage.open(ASSETS / "coffee.png").convert("RGB").resize((size, size), PILImage.BICUBIC)


def to_tensor(pil: PILImage.Image) -> torch.Tensor:
    """As image.load decodes: (1, C, H, W) float32 0..1, contiguous."""
    arr = torch.from_numpy(np.asarray(pil).copy())
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr.permute(2, 0, 1)[None].float().div_(255.0).contiguous()


def box_mask(size: int = 64) -> PILImage.Image:
    m = PILImage.new("L", (size, size), 0)
    m.paste(255, (size // 4, size // 4, size * 3 // 4, size * 5 // 8))
    return m


def ctx(node_type: str = "test", **kw) -> RunContext:
    kw.setdefault("device", DEVICE)
    return RunContext("n", node_type, **kw)


REPO_ROOT = Path(__file__).resolve().parents[2]


def max_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Max abs difference of two same-shaped tensors (on the CPU), logged for --diff-log."""
    import os

    ours, theirs = ours.detach().cpu(), theirs.detach().cpu()
    assert ours.shape == theirs.shape
    diff = (ours.float() - theirs.float()).abs().max().item()
    if DIFF_LOG is not None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with DIFF_LOG.open("a", encoding="utf-8") as f:
            f.write(f"{test}\t{tuple(ours.shape)}\t{diff!r}\n")
    return diff


def assert_same(ours, theirs) -> None:
    """(latents, pixels) from the engine equal the pipeline's bit for bit (the equivalence tests' check)."""
    (lat, pix), (plat, ppix) = ours, theirs
    assert max_diff(lat, plat) == 0.0
    assert max_diff(pix, ppix) == 0.0
