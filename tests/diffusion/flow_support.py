"""Shared by the flow-family tests: tiny models loaded once per test session (on the device of
`pytest --device`, the CPU by default), pipelines assembled from the very same (lazily loaded)
components, and small pictures of the bundled photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from editgraph.nodes.context import RunContext
from tests.nodes import diffusion_support

ASSETS = Path(__file__).resolve().parents[2] / "editgraph" / "workflows" / "assets"

# Small areas for Qwen-Image-Edit's two reference copies (the product's are 384² and 1024²).
QWEN_CONDITION_AREA = 56 * 56
QWEN_VAE_AREA = 64 * 64


def device() -> torch.device:
    """The device the equivalence tests run on (`pytest --device cuda`; tests/conftest.py)."""
    return diffusion_support.DEVICE


def flow_model(name: str):
    """A tiny flow model by name, on the tests' device: built once per session under
    EDITGRAPH_MODELS_DIR (tests/conftest.py)."""
    from editgraph.models.loader import load_model

    return load_model(name, device=device())


def generator(seed: int) -> torch.Generator:
    """The seed's generator for a pipeline call, on the tests' device (where the engine draws too)."""
    return torch.Generator(device()).manual_seed(seed)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """The engine's pixels equal the pipeline's bit for bit (compared on the CPU; logged for --diff-log)."""
    assert diffusion_support.max_diff(ours, theirs) == 0.0


def photo(width: int = 64, height: int = 64, crop: tuple[int, int, int, int] | None = None) -> PILImage.Image:
    img = PILImage.open(ASSETS / "coffee.png").convert("RGB")
    if crop is not None:
        img = img.crop(crop)
    return img.resize((width, height), PILImage.BICUBIC)


def box_mask(width: int = 64, height: int = 64) -> PILImage.Image:
    m = PILImage.new("L", (width, height), 0)
    m.paste(255, (width // 4, height // 4, width * 3 // 4, height * 5 // 8))
    return m


def to_tensor(pil: PILImage.Image) -> torch.Tensor:
    """As image.load / mask.load decode: (1, C, H, W) float32 0..1."""
    arr = torch.from_numpy(np.asarray(pil).copy())
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr.permute(2, 0, 1)[None].float().div_(255.0).contiguous()


def ctx(node_type: str = "test", **kw) -> RunContext:
    kw.setdefault("device", device())
    return RunContext("n", node_type, **kw)


def pipeline_for(model):
    """The model's diffusers pipeline over the model's own components (no copies), fresh scheduler."""
    import diffusers

    from editgraph.diffusion.flow import make_scheduler

    get = model.component
    cls = getattr(diffusers, model.pipeline)
    comps = {"scheduler": make_scheduler(model), "vae": model.vae, "transformer": model.transformer}
    for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "processor"):
        if model.has(name):
            comps[name] = get(name)
    return cls(**comps)
