"""The tiny flow-matching edit models (Flux 2 Klein, Flux Kontext, Qwen-Image-Edit): built offline,
byte for byte the same in another process, recognised from model_index.json, loaded lazily."""

from __future__ import annotations

import json

import pytest
import torch

from editgraph.models import flow_loader
from editgraph.models.loader import ensure_tiny, load_model
from editgraph.models.tiny import BUILDER_VERSION, MARKER
from editgraph.models.tiny_flow import FLOW_MODELS

ONE_PER_FAMILY = ("tiny-flux2-klein", "tiny-flux2", "tiny-kontext", "tiny-qwen-edit-plus")


@pytest.mark.slow
def test_a_build_in_another_process_is_byte_identical(built_in_another_process, tree_bytes):
    for name in ONE_PER_FAMILY:
        ours = ensure_tiny(name)
        assert tree_bytes(built_in_another_process / name) == tree_bytes(ours), name


def test_every_flow_model_is_recognised_from_its_model_index(tree_bytes):
    expected = {
        "tiny-flux2-klein": ("flux2", "edit", "Flux2KleinPipeline"),
        "tiny-flux2-klein-inpaint": ("flux2", "inpaint", "Flux2KleinInpaintPipeline"),
        "tiny-flux2": ("flux2", "edit", "Flux2Pipeline"),
        "tiny-kontext": ("flux", "edit", "FluxKontextPipeline"),
        "tiny-kontext-inpaint": ("flux", "inpaint", "FluxKontextInpaintPipeline"),
        "tiny-qwen-edit-plus": ("qwen-image", "edit", "QwenImageEditPlusPipeline"),
        "tiny-qwen-edit": ("qwen-image", "edit", "QwenImageEditPipeline"),
        "tiny-qwen-edit-inpaint": ("qwen-image", "inpaint", "QwenImageEditInpaintPipeline"),
    }
    assert set(expected) == set(FLOW_MODELS)
    for name, (family, kind, pipeline) in expected.items():
        folder = ensure_tiny(name)
        assert not list(folder.parent.glob(f".{name}.building-*"))  # built aside, renamed into place
        assert json.loads((folder / MARKER).read_text())["builder_version"] == BUILDER_VERSION
        model = load_model(name)
        assert (model.family, model.kind, model.pipeline) == (family, kind, pipeline), name
        assert len(model.content_hash) == 64


def test_a_copied_folder_is_recognised_by_its_model_index_alone(tmp_path):
    import shutil

    from editgraph.models.cache import release_all

    copy = tmp_path / "my-kontext"
    shutil.copytree(ensure_tiny("tiny-kontext"), copy)
    (copy / MARKER).unlink()  # a hub download has no marker: model_index.json says what it is
    model = load_model(copy)
    assert (model.family, model.kind, model.pipeline) == ("flux", "edit", "FluxKontextPipeline")
    # The hash covers what a load reads (components, model_index.json), not our marker or the path:
    # the same files elsewhere share cache entries.
    assert model.content_hash == load_model("tiny-kontext").content_hash
    (copy / "transformer" / "config.json").write_text((copy / "transformer" / "config.json").read_text() + " ")
    release_all()
    assert load_model(copy).content_hash != load_model("tiny-kontext").content_hash
    release_all()


def test_components_load_lazily_and_are_recorded(tmp_path):
    import shutil

    from editgraph.models.cache import release_all

    folder = tmp_path / "klein"
    shutil.copytree(ensure_tiny("tiny-flux2-klein"), folder)
    model = load_model(folder)
    assert model.loaded_components() == []
    assert [c for p, c in flow_loader.LOADS if p == str(folder)] == []
    vae = model.vae
    assert model.loaded_components() == ["vae"] and model.vae is vae  # read once
    assert [c for p, c in flow_loader.LOADS if p == str(folder)] == ["vae"]
    assert model.release("vae") == ["vae"] and model.loaded_components() == []
    model.vae
    assert [c for p, c in flow_loader.LOADS if p == str(folder)] == ["vae", "vae"]
    release_all()


def test_a_pickle_only_component_is_refused(tmp_path):
    import shutil

    from editgraph.models.errors import ModelError

    folder = tmp_path / "klein"
    shutil.copytree(ensure_tiny("tiny-flux2-klein"), folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelError, match=r"only diffusion_pytorch_model\.bin, and editgraph loads \.safetensors only"):
        load_model(folder)


def test_offline_tokenizers_speak_their_families_templates():
    from editgraph.models.tokenizers_offline import QWEN_SPECIALS

    klein = load_model("tiny-flux2-klein")
    tok = klein.component("tokenizer")
    text = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    ids = tok(text).input_ids
    assert ids[0] == 256 + QWEN_SPECIALS.index("<|im_start|>") and tok.decode(ids) == text
    assert klein.component("text_encoder").config.vocab_size == len(tok)

    kontext = load_model("tiny-kontext")
    t5 = kontext.component("tokenizer_2")
    ids = t5("a red cup").input_ids
    assert ids[-1] == t5.eos_token_id == 1 and t5.unk_token_id not in ids
    assert kontext.component("text_encoder_2").config.vocab_size == len(t5)

    dev = load_model("tiny-flux2")
    mistral = dev.component("tokenizer")
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input

    text = mistral.apply_chat_template(format_input(["a cat"], "be brief")[0], tokenize=False)
    assert text == "<s>[SYSTEM_PROMPT]be brief[/SYSTEM_PROMPT][INST]a cat[/INST]"
    assert dev.component("text_encoder").config.text_config.vocab_size == len(mistral)

    qwen = load_model("tiny-qwen-edit-plus")
    processor = qwen.component("processor")
    encoder = qwen.component("text_encoder")
    assert encoder.config.image_token_id == processor.image_token_id == 256 + QWEN_SPECIALS.index("<|image_pad|>")
    assert encoder.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-flux2-klein", "tiny-kontext", "tiny-qwen-edit-plus"])
def test_diffusers_loads_the_folder_itself(name):
    # (tiny-flux2 is left out: its model_index names PixtralProcessor, as the real repo does, and
    # without torchvision diffusers' loader trips over that class before taking a passed tokenizer;
    # editgraph's loader reads the tokenizer from the same folder instead.)
    import diffusers

    folder = ensure_tiny(name)
    extra = {}
    if name.startswith("tiny-qwen"):
        # Qwen2VLProcessor's video half needs torchvision: pass the video-free processor explicitly.
        extra["processor"] = load_model(name).component("processor")
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, local_files_only=True, **extra)
    assert type(pipe).__name__ == FLOW_MODELS[name].pipeline
    assert sum(p.numel() for p in pipe.transformer.parameters()) < 2_000_000
    assert isinstance(pipe.vae.config.block_out_channels if hasattr(pipe.vae.config, "block_out_channels") else [], (list, tuple))
    assert torch.isfinite(next(pipe.transformer.parameters())).all()


def test_make_tiny_cli_builds_a_flow_model(tmp_path):
    from editgraph.cli.main import main

    assert main(["models", "make-tiny", str(tmp_path), "--name", "tiny-kontext"]) == 0
    assert json.loads((tmp_path / "tiny-kontext" / "model_index.json").read_text())["_class_name"] == "FluxKontextPipeline"
