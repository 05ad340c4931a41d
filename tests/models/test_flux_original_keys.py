"""Flux Kontext's transformer as people download it: one file in BFL's original keys
(flux1-kontext-dev.safetensors: `double_blocks.0.img_attn.qkv.weight`, `img_in.weight`,
`final_layer.linear.weight`, ...), given to model.load as `transformer=`. The tiny Kontext is written
in that layout (flow_single_file.flux_to_original: fused q/k/v and single-block linear1, norm
`scale`s, the final adaLN's (shift, scale) order) and must load to the folder's exact weights and
edit to the folder's exact picture. diffusers' own Flux 1 converter splits `linear1` at a hard-coded
3072 width, so the loader converts such files itself; the last tests pin that conversion to
diffusers' at the real width, and the GGUF route to the same tensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from editgraph.models.flow_single_file import (
    ORIGINAL_PREFIX,
    _folder_state,
    flux_original_to_diffusers,
    write_gguf,
    write_safetensors,
)
from editgraph.models.loader import load_model, resolve
from editgraph.nodes.builtin.model import LoadModel
from tests.diffusion.flow_support import ctx
from tests.models.test_flow_single_file import _edit


@pytest.mark.slow
def test_kontext_in_bfl_keys_loads_the_folders_weights_and_edits_to_the_same_bytes(tmp_path):
    folder = resolve("tiny-kontext")
    single = write_safetensors(folder, tmp_path / "flux1-kontext-tiny.safetensors", layout="original")
    written, diffusers_state = load_file(str(single)), _folder_state(folder)
    assert {"double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight",
            "final_layer.linear.weight", "final_layer.adaLN_modulation.1.weight", "vector_in.in_layer.weight",
            "guidance_in.in_layer.weight"} <= written.keys()
    assert not any(k.startswith(("transformer_blocks.", "x_embedder", "norm_out")) for k in written)
    scale, shift = diffusers_state["norm_out.linear.weight"].chunk(2)  # diffusers: (scale, shift)
    assert torch.equal(written["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))
    q, k, v = (diffusers_state[f"single_transformer_blocks.0.attn.to_{m}.weight"] for m in "qkv")
    mlp = diffusers_state["single_transformer_blocks.0.proj_mlp.weight"]
    assert torch.equal(written["single_blocks.0.linear1.weight"], torch.cat([q, k, v, mlp]))

    base = load_model(folder)
    from_file = LoadModel(LoadModel.Params(model=str(folder), transformer=str(single))).run(ctx())
    assert from_file.content_hash != base.content_hash  # the file is in the key
    expected_state, got_state = base.transformer.state_dict(), from_file.transformer.state_dict()
    assert got_state.keys() == expected_state.keys()
    for key, value in expected_state.items():
        assert torch.equal(got_state[key], value), key
    # The same weights give the same picture once they sit at the same memory alignment: CPU matmul
    # kernels round by address (measured here: re-allocating the folder's own weights moves the
    # picture by 9e-7; the file's fused q/k/v are new tensors, its renamed ones sit in the file's
    # mmap at other offsets). So: within 1e-5 as loaded, and bit for bit with both re-allocated.
    expected = _edit(base)
    assert (_edit(from_file) - expected).abs().max().item() < 1e-5
    assert torch.equal(_edit(_reallocated(from_file)), _edit(_reallocated(base)))

    # ComfyUI saves the same tensors under model.diffusion_model.: the same weights load
    nested = tmp_path / "comfy-kontext.safetensors"
    save_file({ORIGINAL_PREFIX + k: v for k, v in written.items()}, str(nested))
    for key, value in load_model(folder, transformer=nested).transformer.state_dict().items():
        assert torch.equal(value, expected_state[key]), key


def _reallocated(model):
    """`model` with every transformer tensor copied into fresh (64-byte aligned) memory."""
    transformer = model.transformer
    transformer.load_state_dict({k: v.clone() for k, v in transformer.state_dict().items()}, assign=True)
    return model


def test_bfl_kontext_gguf_holds_the_same_quantized_tensors_as_diffusers_keys(tmp_path):
    folder = resolve("tiny-kontext")
    in_bfl_keys = load_model(folder, transformer=write_gguf(folder, tmp_path / "bfl.gguf", layout="original"))
    in_our_keys = load_model(folder, transformer=write_gguf(folder, tmp_path / "diffusers.gguf"))
    got, expected = in_bfl_keys.transformer.state_dict(), in_our_keys.transformer.state_dict()
    assert got.keys() == expected.keys()
    quantized = [k for k, v in expected.items() if getattr(v, "quant_type", None) is not None and v.quant_type != 0]
    assert quantized  # some rows are quantized, and their blocks survive the split of fused tensors
    for key, value in expected.items():
        assert getattr(got[key], "quant_type", None) == getattr(value, "quant_type", None), key
        assert torch.equal(torch.Tensor(got[key].data), torch.Tensor(value.data)), key


def _bfl_state(width: int, double: int, single: int) -> dict[str, torch.Tensor]:
    """A Flux 1 checkpoint in BFL keys with real row counts at `width` and one column: each row
    holds a distinct number, so any misplaced row shows, at a few KB instead of 12 B parameters."""
    rows = {
        "img_in": width, "txt_in": width, "time_in.in_layer": width, "time_in.out_layer": width,
        "vector_in.in_layer": width, "vector_in.out_layer": width, "guidance_in.in_layer": width,
        "guidance_in.out_layer": width, "final_layer.linear": 64, "final_layer.adaLN_modulation.1": 2 * width,
    }
    for i in range(double):
        for s in ("img", "txt"):
            rows |= {f"double_blocks.{i}.{s}_mod.lin": 6 * width, f"double_blocks.{i}.{s}_attn.qkv": 3 * width,
                     f"double_blocks.{i}.{s}_attn.proj": width, f"double_blocks.{i}.{s}_mlp.0": 4 * width,
                     f"double_blocks.{i}.{s}_mlp.2": width}
    for i in range(single):
        rows |= {f"single_blocks.{i}.modulation.lin": 3 * width, f"single_blocks.{i}.linear1": 7 * width,
                 f"single_blocks.{i}.linear2": width}
    state, start = {}, 0
    for name, n in rows.items():
        for leaf in ("weight", "bias"):
            values = torch.arange(start, start + n, dtype=torch.float32)
            state[f"{name}.{leaf}"] = values.reshape(n, 1) if leaf == "weight" else values
            start += n
    head = 128
    for i in range(double):
        for s in ("img", "txt"):
            for norm in ("query_norm", "key_norm"):
                state[f"double_blocks.{i}.{s}_attn.norm.{norm}.scale"] = torch.arange(start, start + head, dtype=torch.float32)
                start += head
    for i in range(single):
        for norm in ("query_norm", "key_norm"):
            state[f"single_blocks.{i}.norm.{norm}.scale"] = torch.arange(start, start + head, dtype=torch.float32)
            start += head
    return state


@pytest.mark.parametrize("prefix", ["", ORIGINAL_PREFIX], ids=["bfl", "comfy-prefixed"])
def test_our_bfl_conversion_equals_diffusers_at_the_real_width(prefix):
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers,
    )

    state = {prefix + k: v for k, v in _bfl_state(3072, double=2, single=2).items()}
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    ours = flux_original_to_diffusers(dict(state))
    # each double block's 4 fused q/k/v tensors become 3, each single block's 2 linear1 tensors 4
    assert ours.keys() == theirs.keys() and len(ours) == len(state) + 2 * (4 * 2) + 2 * (2 * 3)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def test_a_key_outside_flux_1s_layout_is_refused_by_name():
    from editgraph.models.errors import ModelError

    state = _bfl_state(64, double=1, single=1)
    state["double_blocks.0.img_attn.lora_A.weight"] = torch.zeros(4, 1)
    with pytest.raises(ModelError, match=r"flux1-x\.safetensors: key 'double_blocks\.0\.img_attn\.lora_A\.weight' is not part"):
        flux_original_to_diffusers(state, where="flux1-x.safetensors")
    assert len(flux_original_to_diffusers(_bfl_state(64, double=1, single=1))) == len(state) - 1 + 4 * 2 + 2 * 3


@pytest.mark.slow
def test_qwen_image_transformer_in_comfyuis_prefixed_keys_loads_the_folders_weights(tmp_path):
    # ComfyUI's Qwen-Image modules carry diffusers' names; its saved checkpoints nest them under
    # model.diffusion_model., which diffusers' identity mapping for Qwen-Image would not strip
    folder = resolve("tiny-qwen-edit-plus")
    plain = load_file(str(write_safetensors(folder, tmp_path / "qwen.safetensors")))
    nested = tmp_path / "qwen-comfy.safetensors"
    save_file({ORIGINAL_PREFIX + k: v for k, v in plain.items()}, str(nested))
    expected = load_model(folder).transformer.state_dict()
    got = load_model(folder, transformer=nested).transformer.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
