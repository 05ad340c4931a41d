"""tiny-ip-adapter: h94/IP-Adapter's layout, byte-identical builds (across processes too), made by
`editgraph models make-tiny`, and loadable by diffusers' own load_ip_adapter."""

from __future__ import annotations

import json

import pytest

from editgraph.models.tiny import make_tiny


@pytest.mark.slow
def test_layout_is_h94s_and_a_build_in_another_process_is_byte_identical(tmp_path, tree_bytes, built_in_another_process):
    from safetensors import safe_open

    from editgraph.cli.main import main

    assert main(["models", "make-tiny", str(tmp_path), "--name", "tiny-ip-adapter"]) == 0
    here = tmp_path / "tiny-ip-adapter"
    files = tree_bytes(here)
    assert sorted(files) == [
        "editgraph.json",
        "models/image_encoder/config.json", "models/image_encoder/model.safetensors", "models/ip-adapter_sd15.safetensors",
        "sdxl_models/image_encoder/config.json", "sdxl_models/image_encoder/model.safetensors", "sdxl_models/ip-adapter_sdxl.safetensors",
    ]
    assert json.loads(files["models/image_encoder/config.json"])["architectures"] == ["CLIPVisionModelWithProjection"]
    with safe_open(str(here / "models" / "ip-adapter_sd15.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert tuple(f.get_slice("image_proj.proj.weight").get_shape()) == (4 * 32, 32)  # 4 tokens of tiny-sd's width
    # one pair per cross-attention layer of tiny-sd (2 down, 3 up, 1 mid), numbered as the originals
    assert {k for k in keys if k.startswith("ip_adapter.")} == {f"ip_adapter.{n}.to_{kv}_ip.weight" for n in range(1, 12, 2) for kv in "kv"}

    assert tree_bytes(built_in_another_process / "tiny-ip-adapter") == files


@pytest.mark.slow
def test_diffusers_loads_it_into_the_tiny_models(tmp_path):
    import diffusers

    adapter = make_tiny("tiny-ip-adapter", tmp_path / "ip")
    for model, sub, weight, cls in (
        ("tiny-sd", "models", "ip-adapter_sd15.safetensors", diffusers.StableDiffusionPipeline),
        ("tiny-sdxl", "sdxl_models", "ip-adapter_sdxl.safetensors", diffusers.StableDiffusionXLPipeline),
    ):
        pipe = cls.from_pretrained(make_tiny(model, tmp_path / model), local_files_only=True)
        pipe.load_ip_adapter(str(adapter), subfolder=sub, weight_name=weight, local_files_only=True)
        assert pipe.unet.config.encoder_hid_dim_type == "ip_image_proj"
        assert type(pipe.image_encoder).__name__ == "CLIPVisionModelWithProjection"
