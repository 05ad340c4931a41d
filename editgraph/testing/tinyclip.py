"""A tiny CLIP model (seeded random weights, transformers layout) for tests of CLIP scoring:
the real code path (from_pretrained, tokenizer, image and text towers) in milliseconds."""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_clip(folder: str | Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    from editgraph.models.tiny import quiet_progress
    from editgraph.models.tokenizers_offline import write_tokenizer

    out = Path(folder)
    vocab = write_tokenizer(out)
    config = CLIPConfig(
        text_config={"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": vocab - 2, "eos_token_id": vocab - 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    torch.manual_seed(0)
    with quiet_progress():
        CLIPModel(config).save_pretrained(out, safe_serialization=True)
    return out
