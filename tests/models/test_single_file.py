"""Single-file checkpoints: the original SD layout round-trips bit for bit, the family is read from
the tensors, the shipped config folders describe the real architectures, and bad files are named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from editgraph.models.family_configs import FAMILY_CONFIGS, SHIPPED, config_folder_for, write_config_folder
from editgraph.models.loader import ModelError, load_model, model_hash, models_root
from editgraph.models.single_file import CLIP_PREFIX, inspect_checkpoint, to_single_file
from editgraph.models.tiny import make_tiny


def _assert_same_weights(a, b, comps=("unet", "vae", "text_encoder")):
    for comp in comps:
        sa, sb = getattr(a, comp).state_dict(), getattr(b, comp).state_dict()
        assert sa.keys() == sb.keys(), comp
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{comp}.{key}"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind"), [("tiny-sd", "base"), ("tiny-sd-inpaint", "inpaint"), ("tiny-ip2p", "instruct")])
def test_a_tiny_model_round_trips_through_the_original_layout(tiny_dirs, tmp_path, name, kind):
    ckpt = to_single_file(tiny_dirs[name], tmp_path / f"{name}.safetensors")
    _, _, shapes = inspect_checkpoint(ckpt)
    assert "model.diffusion_model.input_blocks.0.0.weight" in shapes  # the original key names
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in shapes
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in shapes
    folder = load_model(tiny_dirs[name])
    single = load_model(ckpt, config=tiny_dirs[name])
    assert (single.family, single.kind, single.path) == ("sd1", kind, str(ckpt))
    assert single.extra["pipeline"] == folder.extra["pipeline"]
    _assert_same_weights(folder, single)
    assert single.tokenizer("a photo of a cat").input_ids == folder.tokenizer("a photo of a cat").input_ids
    assert single.content_hash != folder.content_hash and single.content_hash == model_hash(ckpt, tiny_dirs[name])


@pytest.mark.slow
def test_medium_round_trips_too(tmp_path):
    # Three UNet levels: an up block with both attention and an upsampler, which tiny lacks.
    folder_path = make_tiny("medium-sd", tmp_path / "medium")
    ckpt = to_single_file(folder_path, tmp_path / "medium.safetensors")
    _assert_same_weights(load_model(folder_path), load_model(ckpt, config=folder_path))


@pytest.mark.slow
def test_sdxl_round_trips_with_its_open_clip_encoder(tmp_path):
    # The second encoder goes to open_clip's names with q, k and v fused; diffusers' converter
    # must split them back and transpose the projection for the weights to come back equal.
    folder_path = make_tiny("tiny-sdxl", tmp_path / "xl")
    ckpt = to_single_file(folder_path, tmp_path / "xl.safetensors")
    family, kind, shapes = inspect_checkpoint(ckpt)
    assert (family, kind) == ("sdxl", "base")
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] == (3 * 64, 64)
    assert shapes["conditioner.embedders.1.model.text_projection"] == (64, 64)
    assert "model.diffusion_model.label_emb.0.0.weight" in shapes
    assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in shapes
    folder, single = load_model(folder_path), load_model(ckpt, config=folder_path)
    assert (single.family, single.kind, single.extra["pipeline"]) == ("sdxl", "base", "StableDiffusionXLPipeline")
    _assert_same_weights(folder, single, ("unet", "vae", "text_encoder", "text_encoder_2"))
    assert single.tokenizer_2("a photo of a cat").input_ids == folder.tokenizer_2("a photo of a cat").input_ids


@pytest.mark.slow
def test_an_sd2_style_open_clip_text_encoder_round_trips(tiny_dirs, tmp_path):
    # SD 2.x checkpoints keep their text encoder in open_clip's names under cond_stage_model.model.
    ckpt = to_single_file(tiny_dirs["tiny-sd"], tmp_path / "sd2.safetensors", open_clip=True)
    _, _, shapes = inspect_checkpoint(ckpt)
    assert shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (3 * 32, 32)
    assert not any(k.startswith(CLIP_PREFIX) for k in shapes)
    _assert_same_weights(load_model(tiny_dirs["tiny-sd"]), load_model(ckpt, config=tiny_dirs["tiny-sd"]))


def test_family_and_kind_are_read_from_the_tensors(tmp_path):
    def fake(name, tensors):
        path = tmp_path / name
        save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in tensors.items()}, str(path))
        return path

    unet = "model.diffusion_model."
    sd1_inpaint = fake("a.safetensors", {unet + "input_blocks.0.0.weight": (320, 9, 3, 3), unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)})
    sd2 = fake("b.safetensors", {unet + "input_blocks.0.0.weight": (320, 4, 3, 3), unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)})
    sdxl = fake("c.safetensors", {unet + "input_blocks.0.0.weight": (320, 4, 3, 3), "conditioner.embedders.1.model.positional_embedding": (77, 8)})
    ip2p = fake("d.safetensors", {unet + "input_blocks.0.0.weight": (320, 8, 3, 3), unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)})
    assert [inspect_checkpoint(p)[:2] for p in (sd1_inpaint, sd2, sdxl, ip2p)] == [("sd1", "inpaint"), ("sd2", "base"), ("sdxl", "base"), ("sd1", "instruct")]
    # A checkpoint whose tensors are incomplete fails in the conversion, and the error says which
    # file and which shipped config it was loading with.
    with pytest.raises(ModelError, match=f"cannot load {sd1_inpaint} with configs from {models_root()}/configs/sd1-inpaint-"):
        load_model(sd1_inpaint)


def test_bad_checkpoints_are_named(tmp_path, tiny_dirs):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 a pickle")
    with pytest.raises(ModelError, match=f"{ckpt} is not a .safetensors file; .*pickle-based .ckpt files can run code"):
        load_model(ckpt)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=f"cannot read {junk} as a safetensors checkpoint"):
        load_model(junk)
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.zeros(1)}, str(lora))
    with pytest.raises(ModelError, match=f"{lora} holds no Stable Diffusion UNet .*is it a LoRA"):
        load_model(lora)
    tiny = to_single_file(tiny_dirs["tiny-sd"], tmp_path / "tiny.safetensors")
    with pytest.raises(ModelError, match="cannot tell the model family from its cross-attention width; pass config="):
        load_model(tiny)
    with pytest.raises(ModelError, match=f"config folder {tmp_path} for {tiny} has no model_index.json"):
        load_model(tiny, config=tmp_path)


def test_shipped_configs_are_what_the_generator_writes(tmp_path):
    for name in FAMILY_CONFIGS:
        fresh = write_config_folder(name, tmp_path / name)
        shipped = {p.relative_to(SHIPPED / name).as_posix(): p.read_bytes() for p in sorted((SHIPPED / name).rglob("*")) if p.is_file()}
        assert {p.relative_to(fresh).as_posix(): p.read_bytes() for p in sorted(fresh.rglob("*")) if p.is_file()} == shipped, name


@pytest.mark.slow
def test_shipped_configs_describe_the_published_models():
    import transformers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    def count(module):
        return sum(p.numel() for p in module.parameters())

    # Parameter counts of the released SD 1.5, 2.1 and SDXL 1.0 components.
    published = {
        "sd1-base": (859_520_964, [123_060_480]),
        "sd2-base": (865_910_724, [340_387_840]),
        "sdxl-base": (2_567_463_684, [123_060_480, 694_659_840]),
    }
    for name, (unet_params, text_params) in published.items():
        folder = SHIPPED / name
        index = json.loads((folder / "model_index.json").read_text())
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            texts = [
                getattr(transformers, index[te][1])(transformers.CLIPTextConfig.from_pretrained(folder / te))
                for te in ("text_encoder", "text_encoder_2")
                if te in index
            ]
        assert (count(unet), count(vae), [count(t) for t in texts]) == (unet_params, 83_653_863, text_params), name


def test_the_assembled_tokenizer_is_clips(tmp_path):
    from transformers import CLIPTokenizer

    folder = config_folder_for("sd2-base", tmp_path)
    assert config_folder_for("sd2-base", tmp_path) == folder  # assembled once
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    assert len(tok) == 49408 and tok.pad_token == "!"  # SD 2.x pads with "!"
    # The ids every SD 1.x/2.x implementation gives this prompt.
    assert tok("a photo of an astronaut riding a horse").input_ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
