"""What a model folder says about itself, and where models live: the helpers the folder loader
(loader.py) and the single-file loader (single_file.py) share, below both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editgraph.models.errors import ModelError
from editgraph.settings import Settings

MARKER = "editgraph.json"  # written beside model_index.json: family/kind the tiny configs cannot reveal


def models_root() -> Path:
    """Where tiny models are built on first use: $EDITGRAPH_MODELS_DIR, else <cache root>/models."""
    return Settings.from_env().models_root


def detect_family(unet_config: dict[str, Any], marker: dict[str, Any] | None = None, where: str = "") -> tuple[str, str]:
    """(family, kind) from a UNet config: in_channels 4/9/8 -> base/inpaint/instruct;
    addition_embed_type "text_time" -> sdxl, cross_attention_dim 768 -> sd1, 1024 -> sd2.
    Tiny models, whose widths say nothing, carry both in editgraph.json (`marker`)."""
    kinds = {4: "base", 9: "inpaint", 8: "instruct"}
    in_channels = unet_config.get("in_channels")
    if marker and marker.get("kind"):
        kind = str(marker["kind"])
    elif in_channels in kinds:
        kind = kinds[in_channels]
    else:
        raise ModelError(f"{where}: UNet in_channels is {in_channels!r}; editgraph knows 4 (base), 9 (inpaint), 8 (instruct)")
    if marker and marker.get("family"):
        return str(marker["family"]), kind
    cross = unet_config.get("cross_attention_dim")
    if unet_config.get("addition_embed_type") == "text_time" or cross == 2048:
        return "sdxl", kind
    if cross == 768:
        return "sd1", kind
    if cross == 1024:
        return "sd2", kind
    raise ModelError(
        f"{where}: cannot tell the model family from cross_attention_dim {cross!r} "
        f"(768 = SD 1.x, 1024 = SD 2.x, 2048 + text_time = SDXL); add an {MARKER} with "
        f'{{"family": "sd1"}} beside model_index.json'
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data
