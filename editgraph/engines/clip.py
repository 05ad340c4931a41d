"""Text-image similarity with a CLIP model, for scoring candidate edits against the instruction.

A CLIP model is a folder in transformers' layout (config.json, model.safetensors, the tokenizer's
vocab.json + merges.txt): openai/clip-vit-base-patch32 as downloaded, or the tiny seeded one
editgraph.testing.tinyclip builds for tests. It is optional: edit.best uses it only when its
`clip_model` param names one. Loaded once per process; keyed by its files' content hash.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editgraph.errors import NodeError

# The normalisation CLIP's image processor applies (openai/clip-vit-* preprocessor_config.json).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _folder(path: str | Path) -> Path:
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise NodeError(f"CLIP model {str(path)!r}: expected a folder with config.json, weights and tokenizer files")
    return folder


def clip_hash(path: str | Path) -> str:
    from editgraph.models.hashing import content_hash

    folder = _folder(path)
    return content_hash(folder, [p for p in folder.rglob("*") if p.is_file()])


@functools.lru_cache(maxsize=2)
def _load(folder: str) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPTokenizer

    from editgraph.models.tiny import quiet_progress

    try:
        with quiet_progress():
            model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise NodeError(f"CLIP model {folder!r} does not load: {exc}") from None
    return model, tokenizer


def similarity(image: torch.Tensor, text: str, path: str | Path) -> float:
    """Cosine similarity (-1..1) of CLIP's embeddings of `image` (1, 3, H, W) and `text`."""
    model, tokenizer = _load(str(_folder(path).resolve()))
    size = int(model.config.vision_config.image_size)
    # 1. the picture as CLIP sees it: square, at its input size, normalised
    pixels = F.interpolate(image.float(), size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    pixels = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    # 2. the instruction as tokens, cut to the text model's length
    tokens = tokenizer([text], padding=True, truncation=True, max_length=int(model.config.text_config.max_position_embeddings), return_tensors="pt")
    with torch.inference_mode():
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    if not isinstance(img, torch.Tensor):  # newer transformers return an output object
        img, txt = img.pooler_output, txt.pooler_output
    return round(float(F.cosine_similarity(img, txt).item()), 6)
