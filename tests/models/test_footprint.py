"""What a model needs in memory, per component, from its safetensors headers alone (models list)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from editgraph.cli.main import main
from editgraph.models.errors import ModelError
from editgraph.models.footprint import Component, footprint


def _folder(root):
    """A diffusers-layout folder: an F32 unet (with an int64 buffer and an fp16 variant beside
    it), a BF16 text encoder in two shards, a tokenizer without weights."""
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }))
    (root / "unet").mkdir()
    save_file({"conv.weight": torch.zeros(8, 4, 3, 3), "conv.bias": torch.zeros(8), "ids": torch.zeros(5, dtype=torch.int64)},
              str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    save_file({"conv.weight": torch.zeros(8, 4, 3, 3, dtype=torch.float16)}, str(root / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    (root / "text_encoder").mkdir()
    save_file({"a": torch.zeros(10, 10, dtype=torch.bfloat16)}, str(root / "text_encoder" / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(7, dtype=torch.bfloat16), "c": torch.zeros(3)}, str(root / "text_encoder" / "model-00002-of-00002.safetensors"))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text("{}")
    return root


def test_a_diffusers_folder_counts_each_components_weights_at_their_dtype(tmp_path):
    got = {c.name: c for c in footprint(_folder(tmp_path / "m"))}
    assert sorted(got) == ["text_encoder", "unet"]  # no weights: no row for tokenizer or scheduler
    # 8*4*3*3 + 8 float values (the fp16 variant file is not what model.load reads) and 5 int64 ids
    assert got["unet"] == Component("unet", 296, 5, 296 * 4, 5 * 8, ("F32", "I64"))
    assert got["unet"].bytes_at("bfloat16") == 296 * 2 + 40  # buffers keep their dtype
    # two shards: 107 bf16 values and 3 float32 ones
    te = got["text_encoder"]
    assert (te.params, te.stored_bytes, te.dtypes) == (110, 107 * 2 + 3 * 4, ("BF16", "F32"))
    assert te.bytes_at("float32") == 110 * 4 and te.bytes_at(None) == 226


def test_a_single_file_checkpoint_is_split_by_its_key_prefixes(tmp_path):
    path = tmp_path / "sd.safetensors"
    save_file({
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3, dtype=torch.float16),
        "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 4, dtype=torch.float16),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77, dtype=torch.int64),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(16, dtype=torch.float16),
    }, str(path))
    got = {c.name: (c.params, c.other_params, c.stored_bytes) for c in footprint(path)}
    assert got == {"unet": (144, 0, 288), "vae": (12, 0, 24), "text_encoder": (16, 77, 32 + 77 * 8)}
    (only,) = footprint(_folder(tmp_path / "m") / "unet" / "diffusion_pytorch_model.safetensors")
    assert (only.name, only.params) == ("checkpoint", 296)


def test_no_weight_is_read_a_file_cut_after_its_header_measures_the_same(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(256, 256)}, str(path))
    whole = footprint(path)
    n = int.from_bytes(path.read_bytes()[:8], "little")
    path.write_bytes(path.read_bytes()[: 8 + n])  # the 256 KiB of weights are gone
    assert footprint(path) == whole and whole[0].stored_bytes == 256 * 256 * 4


@pytest.mark.parametrize(("content", "message"), [
    (b"\x01", "shorter than its 8-byte header length"),
    ((2**40).to_bytes(8, "little"), "the file is damaged"),
    ((20).to_bytes(8, "little") + b"{", "cut short"),
    ((3).to_bytes(8, "little") + b"[1]", "not a JSON object"),
    ((39).to_bytes(8, "little") + b'{"w": {"dtype": "Q9", "shape": [1, 2]}}', "tensor 'w' has no known dtype"),
])
def test_a_damaged_header_is_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as err:
        footprint(path)
    assert str(path) in str(err.value)


def test_models_list_prints_each_registered_models_memory(tmp_path, capsys, monkeypatch):
    folder = _folder(tmp_path / "models" / "mine")
    (tmp_path / "models" / "broken.safetensors").write_bytes(b"\x01")
    monkeypatch.setenv("EDITGRAPH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("EDITGRAPH_MODELS_FILE", str(tmp_path / "none.json"))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index(f"mine                 {folder}"):].splitlines()[1:5]
    assert block[0].split() == ["component", "parameters", "stored", "on", "disk", "float32", "bf16/fp16"]
    assert block[1].split() == ["text_encoder", "110", "BF16", "226", "B", "440", "B", "220", "B"]
    assert block[2].split() == ["unet", "301", "F32", "1.2", "KiB", "1.2", "KiB", "632", "B"]
    assert block[3].split() == ["total", "411", "1.4", "KiB", "1.6", "KiB", "852", "B"]
    assert "broken" in out and "memory: not measured" in out and "shorter than its 8-byte header length" in out


def test_a_component_with_pickled_weights_is_named_not_measured(tmp_path, capsys, monkeypatch):
    folder = _folder(tmp_path / "models" / "mixed")
    (folder / "vae").mkdir()
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    assert [c.name for c in footprint(folder)] == ["text_encoder", "unet"]
    monkeypatch.setenv("EDITGRAPH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("EDITGRAPH_MODELS_FILE", str(tmp_path / "none.json"))
    assert main(["models", "list"]) == 0
    assert "    not measured (weights not in .safetensors): vae" in capsys.readouterr().out
