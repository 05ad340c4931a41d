"""Flow-family transformers from one file (models/flow_single_file.py): the tiny transformer written
as one .safetensors file and as a GGUF file, loaded through model.load with the model's folder for
configs and the other components. Each equals diffusers' own pipeline with that file bit for bit
(Flux 2 Klein); against the folder: bit for bit in diffusers' keys, within ~1e-6 in BFL's keys
(same weights, other addresses), within the quantization's error from GGUF Q8_0 (bounded here;
bench/flow_single_file.py prints the measured table)."""

from __future__ import annotations

import pytest
import torch

from editgraph.models import flow_loader
from editgraph.models.errors import ModelError
from editgraph.models.flow_single_file import write_gguf, write_safetensors
from editgraph.models.loader import load_model, resolve
from editgraph.nodes.builtin.flow import FlowDecode, FlowDenoise, FlowPrompt, FlowReference, FlowReferences
from editgraph.nodes.builtin.model import LoadModel
from tests.diffusion.flow_support import QWEN_CONDITION_AREA, QWEN_VAE_AREA, ctx, photo, to_tensor

# (tiny model, transformer class, key layout of the written files). "original": BFL's names, as
# flux2-dev.safetensors and the community GGUFs store them (diffusers converts them on load).
# Kontext in BFL's keys (converted by our loader: diffusers' Flux 1 converter assumes the real 3072
# width) is tested in test_flux_original_keys.py.
FAMILIES = [
    ("tiny-flux2-klein", "Flux2Transformer2DModel", "original"),
    ("tiny-flux2-klein", "Flux2Transformer2DModel", "diffusers"),
    ("tiny-kontext", "FluxTransformer2DModel", "diffusers"),
    ("tiny-qwen-edit-plus", "QwenImageTransformer2DModel", "diffusers"),
]
IDS = ["flux2-klein-original-keys", "flux2-klein-diffusers-keys", "kontext-diffusers-keys", "qwen-edit-plus-diffusers-keys"]


def _edit(model) -> torch.Tensor:
    """prompt + one reference -> denoise -> decode, 2 steps at 64 px."""
    c = ctx()
    qwen = model.family == "qwen-image"
    ref_params = {"condition_area": QWEN_CONDITION_AREA, "vae_area": QWEN_VAE_AREA} if qwen else {"auto_resize": False} if model.family == "flux" else {}
    ref = FlowReference(FlowReference.Params(**ref_params)).run(c, model=model, image=to_tensor(photo(64, 64)))
    refs = FlowReferences(FlowReferences.Params()).run(c, ref1=ref)
    prompt = FlowPrompt(FlowPrompt.Params(prompt="make the cup blue"))
    cond = prompt.run(c, model=model, references=refs) if qwen else prompt.run(c, model=model)
    latent = FlowDenoise(FlowDenoise.Params(steps=2, seed=1, width=64, height=64)).run(c, model=model, cond=cond, references=refs)
    return FlowDecode(FlowDecode.Params()).run(c, model=model, latent=latent)


@pytest.mark.slow
@pytest.mark.parametrize("name,cls_name,layout", FAMILIES, ids=IDS)
def test_single_file_and_gguf_transformers_match_the_folder(name, cls_name, layout, tmp_path):
    folder = resolve(name)
    single = write_safetensors(folder, tmp_path / "transformer.safetensors", layout=layout)
    quant = write_gguf(folder, tmp_path / "transformer-Q8_0.gguf", layout=layout)
    assert quant.stat().st_size < single.stat().st_size  # 8-bit blocks where the rows fit (tiny widths: not all do)

    base = load_model(folder)
    flow_loader.LOADS.clear()
    from_file = LoadModel(LoadModel.Params(model=str(folder), transformer=str(single))).run(ctx())
    from_gguf = load_model(folder, transformer=quant)
    assert len({base.content_hash, from_file.content_hash, from_gguf.content_hash}) == 3  # the file is in the key
    assert type(from_file.transformer).__name__ == cls_name and (str(folder), "transformer") in flow_loader.LOADS
    for key, value in base.transformer.state_dict().items():
        assert torch.equal(value, from_file.transformer.state_dict()[key]), key

    expected = _edit(base)
    got = _edit(from_file)
    if layout == "diffusers":
        assert torch.equal(got, expected)  # the folder's weights, packed as the folder packs them
    else:
        # the same weights at other addresses (and diffusers' q/k/v split as views of one buffer):
        # CPU kernels round differently by address, as they do for diffusers' own loads
        assert 0 <= (got - expected).abs().max().item() < 1e-5
    # Q8_0 rounds weights to 8 bits per 32-value block: measured 2.4e-4 .. 3.0e-3 max abs diff in
    # 0..1 pixels on these tiny builds (bench/flow_single_file.py prints the table)
    quantized = _edit(from_gguf)
    diff = (quantized - expected).abs().max().item()
    assert 0 < diff < 0.02
    if name == "tiny-flux2-klein":  # and each equals diffusers' own pipeline with that file, bit for bit
        for path, picture in ((single, got), (quant, quantized)):
            assert torch.equal(picture, _klein_pipeline_with(from_file, folder, path))


def _klein_pipeline_with(model, folder, path) -> torch.Tensor:
    """Flux2KleinPipeline over the model's other components, its transformer loaded by diffusers
    itself from `path` (from_single_file; GGUF through GGUFQuantizationConfig), as _edit runs."""
    import diffusers

    from tests.diffusion.flow_support import pipeline_for

    extra = {"quantization_config": diffusers.GGUFQuantizationConfig(compute_dtype=torch.float32)} if path.suffix == ".gguf" else {}
    pipe = pipeline_for(model)
    pipe.transformer = diffusers.Flux2Transformer2DModel.from_single_file(
        str(path), config=str(folder), subfolder="transformer", torch_dtype=torch.float32, local_files_only=True, **extra
    )
    with torch.inference_mode():
        return pipe(
            image=[photo(64, 64)], prompt="make the cup blue", height=64, width=64, num_inference_steps=2,
            guidance_scale=4.0, generator=torch.Generator().manual_seed(1), output_type="pt",
        ).images


def test_pickle_and_misplaced_transformer_files_are_refused(tmp_path):
    from editgraph.graph.validate import bind
    from editgraph.graph.document import load_workflow
    from editgraph.sharing.preflight import check_sources

    ckpt = tmp_path / "flux1-dev.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match=r"not a \.safetensors or \.gguf file.*pickle"):
        load_model("tiny-kontext", transformer=ckpt)
    with pytest.raises(ModelError, match="goes with a Flux 2 / Kontext / Qwen-Image-Edit folder"):
        load_model("tiny-sd", transformer=_touch(tmp_path / "t.safetensors"))
    # another family's transformer with this folder: refused naming both, before any step runs
    kontext = write_safetensors(resolve("tiny-kontext"), tmp_path / "kontext.safetensors")
    with pytest.raises(ModelError, match=r"cannot load .*kontext\.safetensors as the Flux2Transformer2DModel of .*tiny-flux2-klein.*expected shape"):
        load_model("tiny-flux2-klein", transformer=kontext).transformer
    doc = {
        "format": "editgraph/1", "name": "x",
        "nodes": {"m": {"type": "model.load", "params": {"model": "tiny-kontext", "transformer": str(ckpt)}}},
    }
    issues = check_sources(bind(load_workflow(doc), {}, base_dir=tmp_path))
    assert [(i.path, "pickle" in i.message) for i in issues] == [("nodes.m.params.transformer", True)]


def _touch(path):
    path.write_bytes(b"")
    return path


def test_a_registered_name_can_carry_its_transformer_file(tmp_path, monkeypatch, capsys):
    import json

    from editgraph.cli.main import main
    from editgraph.executor.cache import Cache
    from editgraph.executor.run import Executor

    folder = resolve("tiny-kontext")
    single = write_safetensors(folder, tmp_path / "kontext-transformer.safetensors")
    (tmp_path / "models.json").write_text(json.dumps({"kq": {"path": str(folder), "transformer": single.name}}))
    monkeypatch.setenv("EDITGRAPH_MODELS_FILE", str(tmp_path / "models.json"))
    monkeypatch.delenv("EDITGRAPH_MODELS", raising=False)

    doc = {"format": "editgraph/1", "name": "x", "nodes": {"m": {"type": "model.load", "params": {"model": "kq"}}}}
    from editgraph.graph.document import load_workflow
    from editgraph.graph.validate import bind

    result = Executor(Cache.default(tmp_path / "cache")).run(bind(load_workflow(doc), {}, base_dir=tmp_path / "wf"))
    model = result.value("m")
    assert model.transformer_file == str(single) and model.content_hash == load_model(folder, transformer=single).content_hash
    assert model.content_hash != load_model(folder).content_hash
    assert main(["models", "list"]) == 0
    assert f"transformer from {single}" in capsys.readouterr().out
    (tmp_path / "models.json").write_text(json.dumps({"kq": {"path": str(folder), "weights": "x.gguf"}}))
    with pytest.raises(ModelError, match='name -> {"path": ..., "transformer": ...}'):
        resolve("kq")
