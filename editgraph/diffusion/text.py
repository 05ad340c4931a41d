"""Prompt encoding for SD 1.x/2.x and SDXL, as their pipelines' encode_prompt does it."""

from __future__ import annotations

from typing import Any

import torch

from editgraph.models.offload import execution_device


def encode_text(tokenizer: Any, text_encoder: Any, prompts: list[str], clip_skip: int | None) -> torch.Tensor:
    """StableDiffusionPipeline.encode_prompt for one list of prompts: (B, tokens, dim)."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    device = execution_device(text_encoder)
    mask = ids.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    input_ids = ids.input_ids.to(device)
    if clip_skip is None:
        embeds = text_encoder(input_ids, attention_mask=mask)[0]
    else:
        # hidden_states[-(clip_skip + 1)], then the final layer norm the last hidden state also gets.
        hidden = text_encoder(input_ids, attention_mask=mask, output_hidden_states=True)[-1]
        # transformers 5 flattened CLIPTextModel (no .text_model); diffusers 0.42 still reaches for
        # .text_model here and fails, so its pipelines cannot run clip_skip on this stack.
        final_layer_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        embeds = final_layer_norm(hidden[-(clip_skip + 1)])
    return embeds.to(dtype=text_encoder.dtype)


def encode_text_sdxl(model: Any, prompts: list[str], clip_skip: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """StableDiffusionXLPipeline.encode_prompt for one side: both encoders' penultimate hidden states
    concatenated (B, tokens, 768 + 1280) and the second encoder's pooled output (B, 1280)."""
    pairs = [(model.tokenizer, model.text_encoder), (model.tokenizer_2, model.text_encoder_2)]
    pairs = [(t, e) for t, e in pairs if t is not None and e is not None]
    parts, pooled = [], None
    for tokenizer, encoder in pairs:
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        out = encoder(ids.input_ids.to(execution_device(encoder)), output_hidden_states=True)
        pooled = out[0]  # the last encoder's projected pooled output is what SDXL uses
        # SDXL always indexes from the penultimate layer: "2" because it never uses the last one.
        parts.append(out.hidden_states[-2] if clip_skip is None else out.hidden_states[-(clip_skip + 2)])
    return torch.cat(parts, dim=-1), pooled
