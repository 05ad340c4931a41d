"""Tiny builds of the 2026 edit families: Flux 2 Klein, Flux Kontext, Qwen-Image-Edit (and Flux 2).

Each is the family's real structure (transformer, VAE, text encoder, tokenizer, processor, flow
matching scheduler) at toy width with seeded random weights, in diffusers layout, so that
`from_pretrained`, the diffusers pipelines and the engine's own stages all run on it in well under
a second at 64 px. The variants of a family (edit, inpaint) share one seed and so one set of
weights: the inpaint pipelines take the very same components.

Tokenizers and processors come from models/tokenizers_offline.py (fixed vocabularies). The text
encoders' vocabulary size and special ids are read off the tokenizer so they always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# FlowMatchEulerDiscreteScheduler as Flux (Kontext) and Flux 2 ship it: resolution-dependent shift.
FLUX_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
# As Qwen-Image ships it: a longer sequence range, a smaller maximum shift, a terminal sigma.
QWEN_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class FlowSpec:
    name: str
    pipeline: str  # the diffusers pipeline class model_index.json names
    family: str  # the latent space: "flux2" (Flux 2, Klein), "flux" (Kontext), "qwen-image"
    kind: str  # "edit" | "inpaint"
    seed: int
    build: Callable[[Path, int], dict[str, Any]]  # writes the components, returns model_index entries


def _save(module: Any, folder: Path) -> None:
    module.save_pretrained(folder, safe_serialization=True)


def _klein(out: Path, seed: int) -> dict[str, Any]:
    import torch
    from diffusers import Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from editgraph.models.tokenizers_offline import qwen_tokenizer

    vocab = qwen_tokenizer(out / "tokenizer")
    # 28 layers (of width 16) so the pipeline's default text_encoder_out_layers (9, 18, 27) exist:
    # three stacked hidden states of 16 = the transformer's joint_attention_dim of 48.
    config = Qwen3Config(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=28, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=1024, pad_token_id=256, eos_token_id=258,
        bos_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    _save(Qwen3ForCausalLM(config).eval(), out / "text_encoder")
    torch.manual_seed(seed + 1)
    _save(_flux2_transformer(48, guidance=False), out / "transformer")
    torch.manual_seed(seed + 2)
    _save(_flux2_vae(), out / "vae")
    return {
        "is_distilled": False,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2TokenizerFast"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }


def _flux2(out: Path, seed: int) -> dict[str, Any]:
    """Flux 2 [dev]'s structure: a Mistral 3 text encoder (layers 10, 20, 30 stacked, so 31 of them)
    and a guidance-distilled transformer."""
    import torch
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from editgraph.models.tokenizers_offline import MISTRAL_SPECIALS, mistral_tokenizer

    vocab = mistral_tokenizer(out / "tokenizer")
    ids = {token: i for i, token in enumerate(MISTRAL_SPECIALS)}
    special = {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"]}
    config = Mistral3Config(
        text_config={
            "model_type": "mistral", "vocab_size": vocab, "hidden_size": 16, "intermediate_size": 32,
            "max_position_embeddings": 1024, "num_attention_heads": 2, "num_hidden_layers": 31, "num_key_value_heads": 2,
            "head_dim": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000000.0, "sliding_window": None, **special,
        },
        vision_config={
            "model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "image_size": 64, "patch_size": 16, "num_channels": 3, "head_dim": 8,
        },
        image_token_index=ids["[IMG]"], vision_feature_layer=-1, **special,
    )
    torch.manual_seed(seed)
    _save(Mistral3ForConditionalGeneration(config).eval(), out / "text_encoder")
    torch.manual_seed(seed + 1)
    _save(_flux2_transformer(48, guidance=True), out / "transformer")
    torch.manual_seed(seed + 2)
    _save(_flux2_vae(), out / "vae")
    return {
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Mistral3ForConditionalGeneration"],
        "tokenizer": ["transformers", "PixtralProcessor"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }


def _flux2_vae() -> Any:
    """The tiny Flux 2 VAE both Flux 2 builds share (seed it first)."""
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        block_out_channels=(16, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64
    )


def _flux2_transformer(text_width: int, guidance: bool):
    from diffusers import Flux2Transformer2DModel

    # in_channels 16 = the VAE's 4 latent channels in 2x2 patches; RoPE axes sum to the head width.
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=text_width, timestep_guidance_channels=256, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance,
    )


def _kontext(out: Path, seed: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from editgraph.models.tokenizers_offline import write_tokenizer
    from editgraph.models.tokenizers_offline import t5_tokenizer

    clip_vocab = write_tokenizer(out / "tokenizer")
    t5_vocab = t5_tokenizer(out / "tokenizer_2")
    torch.manual_seed(seed)
    clip = CLIPTextConfig(
        vocab_size=clip_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
        bos_token_id=clip_vocab - 2, eos_token_id=clip_vocab - 1, pad_token_id=clip_vocab - 1,
    )
    _save(CLIPTextModel(clip).eval(), out / "text_encoder")
    torch.manual_seed(seed + 1)
    t5 = T5Config(
        vocab_size=t5_vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, is_encoder_decoder=False,
    )
    _save(T5EncoderModel(t5).eval(), out / "text_encoder_2")
    torch.manual_seed(seed + 2)
    _save(
        FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        ),
        out / "transformer",
    )
    torch.manual_seed(seed + 3)
    _save(
        AutoencoderKL(
            block_out_channels=(16, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=4,
            sample_size=64, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
        ),
        out / "vae",
    )
    return {
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _qwen(out: Path, seed: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from editgraph.models.tokenizers_offline import QWEN_SPECIALS, qwen_tokenizer

    vocab = qwen_tokenizer(out / "tokenizer")
    ids = {token: 256 + i for i, token in enumerate(QWEN_SPECIALS)}
    # The real processor's patching (14 px patches, 2x2 merge) with a smaller pixel budget.
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=14, merge_size=2, temporal_patch_size=2).save_pretrained(
        out / "processor"
    )
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab, "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0, "bos_token_id": None, "pad_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    _save(Qwen2_5_VLForConditionalGeneration(config).eval(), out / "text_encoder")
    torch.manual_seed(seed + 1)
    _save(
        QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
            joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
        ),
        out / "transformer",
    )
    torch.manual_seed(seed + 2)
    _save(
        AutoencoderKLQwenImage(
            base_dim=8, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
            latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
        ),
        out / "vae",
    )
    return {
        "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"],
    }


_SCHEDULERS = {"flux2": FLUX_SCHEDULER, "flux": FLUX_SCHEDULER, "qwen-image": QWEN_SCHEDULER}

FLOW_MODELS: dict[str, FlowSpec] = {
    s.name: s
    for s in (
        FlowSpec("tiny-flux2-klein", "Flux2KleinPipeline", "flux2", "edit", 4000, _klein),
        FlowSpec("tiny-flux2-klein-inpaint", "Flux2KleinInpaintPipeline", "flux2", "inpaint", 4000, _klein),
        FlowSpec("tiny-flux2", "Flux2Pipeline", "flux2", "edit", 7000, _flux2),
        FlowSpec("tiny-kontext", "FluxKontextPipeline", "flux", "edit", 5000, _kontext),
        FlowSpec("tiny-kontext-inpaint", "FluxKontextInpaintPipeline", "flux", "inpaint", 5000, _kontext),
        FlowSpec("tiny-qwen-edit-plus", "QwenImageEditPlusPipeline", "qwen-image", "edit", 6000, _qwen),
        FlowSpec("tiny-qwen-edit", "QwenImageEditPipeline", "qwen-image", "edit", 6000, _qwen),
        FlowSpec("tiny-qwen-edit-inpaint", "QwenImageEditInpaintPipeline", "qwen-image", "inpaint", 6000, _qwen),
    )
}


def make_flow_tiny(spec: FlowSpec, out: Path, builder_version: int, write_json: Callable[[Path, dict], None]) -> None:
    """Write `spec`'s components, scheduler, model_index.json and marker into the empty folder `out`."""
    import diffusers
    import torch

    from editgraph.models.folders import MARKER

    with torch.random.fork_rng(devices=[]):
        entries = spec.build(out, spec.seed)
    write_json(out / "scheduler" / "scheduler_config.json", _SCHEDULERS[spec.family])
    write_json(out / "model_index.json", {"_class_name": spec.pipeline, "_diffusers_version": diffusers.__version__, **entries})
    write_json(
        out / MARKER,
        {"name": spec.name, "family": spec.family, "kind": spec.kind, "builder_version": builder_version},
    )
