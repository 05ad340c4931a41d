"""The tiny models: deterministic bytes, a working CLIP tokenizer, and real pipelines run on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from editgraph.errors import EditgraphError
from editgraph.models.tiny import BUILDER_VERSION, MARKER, TINY_NAMES, make_tiny, make_tiny_all


def test_two_builds_are_byte_identical(tmp_path, tiny_dirs, tree_bytes):
    again = make_tiny("tiny-sd", tmp_path / "again")
    assert tree_bytes(again) == tree_bytes(tiny_dirs["tiny-sd"])


@pytest.mark.slow
def test_a_build_in_another_process_is_byte_identical(built_in_another_process, tiny_dirs, tree_bytes):
    # Hash randomization differs per process: this is what caught the library BPE trainer's
    # tie order (same process twice agreed, two processes did not).
    assert tree_bytes(built_in_another_process / "tiny-sd") == tree_bytes(tiny_dirs["tiny-sd"])


def test_layout_matches_a_hub_repo(tiny_dirs, tree_bytes):
    folder = tiny_dirs["tiny-sd-inpaint"]
    files = set(tree_bytes(folder))
    assert {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
        MARKER,
    } <= files
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 9
    assert json.loads((folder / MARKER).read_text()) == {"name": "tiny-sd-inpaint", "family": "sd1", "kind": "inpaint", "builder_version": BUILDER_VERSION}


def test_tokenizer_is_clip_style(tiny_dirs):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_dirs["tiny-sd"] / "tokenizer", local_files_only=True)
    vocab = tok.get_vocab()
    assert tok.model_max_length == 77
    # Frequent prompt words are whole tokens with CLIP's end-of-word suffix.
    ids = tok("A photo of a cat").input_ids
    assert ids == [tok.bos_token_id, vocab["a</w>"], vocab["photo</w>"], vocab["of</w>"], vocab["a</w>"], vocab["cat</w>"], tok.eos_token_id]
    # A word never seen still encodes (byte-level pieces), with no unknown token.
    odd = tok("xylophone").input_ids[1:-1]
    assert len(odd) >= 2 and tok.unk_token_id not in odd and tok.decode(odd).replace(" ", "") == "xylophone"
    padded = tok("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77
    assert len(vocab) == 2 * 256 + len((tiny_dirs["tiny-sd"] / "tokenizer" / "merges.txt").read_text().splitlines()) - 1 + 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd-inpaint", "tiny-ip2p"])
def test_pipeline_runs_on_the_tiny_model(tiny_dirs, name):
    import diffusers

    folder = tiny_dirs[name]
    cls = getattr(diffusers, json.loads((folder / "model_index.json").read_text())["_class_name"])
    pipe = cls.from_pretrained(folder, local_files_only=True)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    common = {"num_inference_steps": 2, "generator": gen, "output_type": "np"}
    if name == "tiny-sd":
        out = pipe("a cat", height=64, width=48, **common).images
    elif name == "tiny-sd-inpaint":
        out = pipe("a cat", image=image, mask_image=torch.ones(1, 1, 64, 48), height=64, width=48, **common).images
    else:
        out = pipe("make it snow", image=image, **common).images
    assert out.shape == (1, 64, 48, 3)
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.01
    # Latents are 1/8 of the image, as in real SD.
    latents = pipe.vae.encode(image * 2 - 1).latent_dist.mean
    assert latents.shape == (1, 4, 8, 6)


def test_make_tiny_rejects_bad_requests(tmp_path):
    with pytest.raises(EditgraphError, match="unknown tiny model 'tiny-sdxxl'; choose one of tiny-sd, "):
        make_tiny("tiny-sdxxl", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(EditgraphError, match="folder is not empty"):
        make_tiny("tiny-sd", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_make_tiny_all_builds_each_name(tmp_path):
    built = make_tiny_all(tmp_path, ["tiny-sd", "tiny-ip2p"])
    assert built == [tmp_path / "tiny-sd", tmp_path / "tiny-ip2p"]
    assert json.loads((tmp_path / "tiny-ip2p" / "unet" / "config.json").read_text())["in_channels"] == 8
    assert set(TINY_NAMES) == {
        "tiny-sd", "tiny-sd-inpaint", "tiny-ip2p", "medium-sd", "tiny-sdxl",
        # the flow-matching edit families (tests/models/test_tiny_flow.py)
        "tiny-flux2-klein", "tiny-flux2-klein-inpaint", "tiny-flux2", "tiny-kontext", "tiny-kontext-inpaint",
        "tiny-qwen-edit-plus", "tiny-qwen-edit", "tiny-qwen-edit-inpaint",
    }


@pytest.mark.slow
def test_medium_model_is_larger(tmp_path):
    from diffusers import UNet2DConditionModel

    folder = make_tiny("medium-sd", tmp_path / "medium")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    assert tuple(unet.config.block_out_channels) == (64, 128, 256)
    assert 15_000_000 < sum(p.numel() for p in unet.parameters()) < 25_000_000


@pytest.mark.slow
def test_tiny_sdxl_has_sdxl_structure_and_runs(tmp_path):
    import diffusers

    from editgraph.models.loader import load_model

    model = load_model("tiny-sdxl")
    assert (model.family, model.kind) == ("sdxl", "base")
    assert type(model.text_encoder_2).__name__ == "CLIPTextModelWithProjection" and model.tokenizer_2.pad_token == "!"
    assert model.unet.config.addition_embed_type == "text_time" and model.unet.config.cross_attention_dim == 32 + 64  # both encoders
    assert model.scheduler_config["_class_name"] == "EulerDiscreteScheduler"
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(model.path, local_files_only=True)
    out = pipe("a cat", height=64, width=48, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 64, 48, 3) and np.isfinite(out).all() and out.std() > 0.01
