"""model.lora: LoRA files (diffusers and kohya layouts) on tiny SD 1.x and Flux 2 Klein models.

- the engine's stages with a LoRA equal diffusers' pipeline after pipe.load_lora_weights +
  set_adapters at the same scale, bit for bit;
- changing a scale reruns only the nodes using the parts the LoRA changes (asserted on statuses);
- the base model is loaded once across LoRA changes (the loader's own record), and the plain model
  still paints as before once a LoRA variant ran in the same process;
- a wrong file (pickle suffix, not safetensors, foreign keys, another model's LoRA) is refused
  with the node id, type, JSON path, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editgraph import api
from editgraph.errors import NodeFailed, WorkflowInvalid
from editgraph.models import cache as model_cache
from editgraph.models import flow_loader
from editgraph.models.loader import load_model
from editgraph.testing.tinylora import write_diffusers_lora, write_kohya_flux2_lora, write_kohya_sd_lora
from tests.nodes.diffusion_support import tiny_path

PROMPT, SEED, STEPS, CFG = "a red cup on a wooden table", 3, 3, 7.0


@pytest.fixture(scope="module")
def sd_path() -> Path:
    return tiny_path("tiny-sd")


@pytest.fixture(scope="module")
def sd_loras(sd_path, tmp_path_factory) -> dict[str, Path]:
    model = load_model(sd_path)
    d = tmp_path_factory.mktemp("sd-loras")
    return {
        "unet": write_diffusers_lora(model, "unet", d / "style_unet.safetensors", seed=1),
        "kohya": write_kohya_sd_lora(model, d / "kohya_unet_te.safetensors", text_encoder=True, seed=2),
        "te": write_diffusers_lora(model, "text_encoder", d / "te_only.safetensors", seed=3),
    }


def _sd_doc(model: Path, loras: list[tuple[Path, float]]) -> dict:
    nodes: dict = {"model": {"type": "model.load", "params": {"model": str(model)}}}
    last = "model"
    for i, (path, scale) in enumerate(loras):
        nodes[f"lora{i}"] = {"type": "model.lora", "inputs": {"model": last}, "params": {"lora": str(path), "scale": scale}}
        last = f"lora{i}"
    nodes |= {
        "text": {"type": "prompt.encode", "inputs": {"model": last}, "params": {"prompt": PROMPT}},
        "empty": {"type": "latent.empty", "inputs": {"model": last}, "params": {"width": 64, "height": 64}},
        "denoise": {
            "type": "denoise", "inputs": {"model": last, "cond": "text", "latent": "empty"},
            "params": {"steps": STEPS, "cfg": CFG, "seed": SEED, "scheduler": "euler"},
        },
        "pixels": {"type": "vae.decode", "inputs": {"model": last, "latent": "denoise"}},
    }
    return {"format": "editgraph/1", "name": "lora-txt2img", "nodes": nodes}


def _run(doc: dict, cache_dir: Path | bool):
    return api.run(doc, cache=cache_dir, device="cpu")


def _sd_pipeline(sd_path: Path, loras: list[tuple[Path, float]], xl: bool = False):
    """diffusers' own pipeline, loaded afresh from the same folder (no module shared with the engine)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from editgraph.diffusion.denoise import make_scheduler

    if xl:
        pipe = StableDiffusionXLPipeline.from_pretrained(sd_path, local_files_only=True)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            sd_path, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
    pipe.scheduler = make_scheduler("euler", dict(pipe.scheduler.config))
    names = []
    for i, (path, _) in enumerate(loras):
        pipe.load_lora_weights(str(path), adapter_name=f"lora{i}")
        names.append(f"lora{i}")
    if names:
        pipe.set_adapters(names, adapter_weights=[s for _, s in loras])
    with torch.inference_mode():
        return pipe(
            prompt=PROMPT, height=64, width=64, num_inference_steps=STEPS, guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED), output_type="pt",
        ).images


# --- equivalence ---------------------------------------------------------------------------------


@pytest.mark.equivalence
@pytest.mark.slow
@pytest.mark.parametrize(
    "which",
    [["unet"], ["kohya"], ["unet", "te"]],
    ids=["sd1-diffusers-unet-lora", "sd1-kohya-unet-te-lora", "sd1-two-loras"],
)
def test_sd_lora_matches_pipeline_load_lora_weights(sd_path, sd_loras, which, tmp_path):
    loras = [(sd_loras[w], s) for w, s in zip(which, (0.7, 1.3))]
    ours = _run(_sd_doc(sd_path, loras), False).value("pixels")
    theirs = _sd_pipeline(sd_path, loras)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() == 0.0
    plain = _run(_sd_doc(sd_path, []), False).value("pixels")
    assert (ours - plain).abs().max().item() > 1e-3  # the LoRA does change the picture


@pytest.mark.equivalence
@pytest.mark.slow
def test_sdxl_lora_on_the_unet_and_the_second_text_encoder_matches_pipeline(tmp_path_factory):
    path = tiny_path("tiny-sdxl")
    model = load_model(path)
    d = tmp_path_factory.mktemp("sdxl-loras")
    loras = [
        (write_diffusers_lora(model, "unet", d / "xl_unet.safetensors", seed=7), 0.9),
        (write_diffusers_lora(model, "text_encoder_2", d / "xl_te2.safetensors", seed=8), 1.1),
    ]
    ours = _run(_sd_doc(path, loras), False).value("pixels")
    theirs = _sd_pipeline(path, loras, xl=True)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() == 0.0
    assert (ours - _run(_sd_doc(path, []), False).value("pixels")).abs().max().item() > 1e-4


@pytest.fixture(scope="module")
def klein(tmp_path_factory):
    model = load_model("tiny-flux2-klein")
    d = tmp_path_factory.mktemp("flux-loras")
    return model, {
        "diffusers": write_diffusers_lora(model, "transformer", d / "klein_style.safetensors", seed=4),
        "kohya": write_kohya_flux2_lora(model, d / "klein_kohya.safetensors", seed=5),
    }


def _klein_doc(loras: list[tuple[Path, float]], model: str = "tiny-flux2-klein", **denoise) -> dict:
    nodes: dict = {"model": {"type": "model.load", "params": {"model": model}}}
    last = "model"
    for i, (path, scale) in enumerate(loras):
        nodes[f"lora{i}"] = {"type": "model.lora", "inputs": {"model": last}, "params": {"lora": str(path), "scale": scale}}
        last = f"lora{i}"
    nodes |= {
        "text": {"type": "flow.prompt", "inputs": {"model": last}, "params": {"prompt": PROMPT}},
        "denoise": {
            "type": "flow.denoise", "inputs": {"model": last, "cond": "text"},
            "params": {"steps": 2, "guidance": 4.0, "seed": SEED, "width": 64, "height": 64, **denoise},
        },
        "pixels": {"type": "flow.decode", "inputs": {"model": last, "latent": "denoise"}},
    }
    return {"format": "editgraph/1", "name": "klein-lora", "nodes": nodes}


@pytest.mark.equivalence
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["diffusers", "kohya"], ids=["flux2-klein-diffusers-lora", "flux2-klein-kohya-lora"])
def test_flux2_klein_lora_matches_pipeline_load_lora_weights(klein, layout):
    from tests.diffusion.flow_support import pipeline_for

    model, files = klein
    ours = _run(_klein_doc([(files[layout], 0.8)]), False).value("pixels")
    from diffusers import Flux2Transformer2DModel

    pipe = pipeline_for(model)
    # A transformer of its own, read from the same files: the pipeline's adapters never meet the engine's.
    pipe.transformer = Flux2Transformer2DModel.from_pretrained(model.path, subfolder="transformer", local_files_only=True)
    pipe.load_lora_weights(str(files[layout]), adapter_name="theirs")
    pipe.set_adapters(["theirs"], adapter_weights=[0.8])
    with torch.inference_mode():
        theirs = pipe(
            prompt=PROMPT, height=64, width=64, num_inference_steps=2, guidance_scale=4.0,
            generator=torch.Generator().manual_seed(SEED), output_type="pt",
        ).images
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() == 0.0
    plain = _run(_klein_doc([]), False).value("pixels")
    assert (ours - plain).abs().max().item() > 1e-4


@pytest.fixture(scope="module")
def kontext(tmp_path_factory):
    model = load_model("tiny-kontext")
    d = tmp_path_factory.mktemp("kontext-loras")
    return model, write_diffusers_lora(model, "transformer", d / "kontext_style.safetensors", seed=6)


@pytest.mark.equivalence
@pytest.mark.slow
def test_kontext_lora_matches_pipeline_load_lora_weights(kontext):
    from diffusers import FluxTransformer2DModel

    from tests.diffusion.flow_support import pipeline_for

    model, file = kontext
    ours = _run(_klein_doc([(file, 0.6)], "tiny-kontext", guidance=3.5, width=96), False).value("pixels")
    pipe = pipeline_for(model)
    pipe.transformer = FluxTransformer2DModel.from_pretrained(model.path, subfolder="transformer", local_files_only=True)
    pipe.load_lora_weights(str(file), adapter_name="theirs")
    pipe.set_adapters(["theirs"], adapter_weights=[0.6])
    with torch.inference_mode():
        theirs = pipe(
            prompt=PROMPT, height=64, width=96, max_area=64 * 96, num_inference_steps=2, guidance_scale=3.5,
            generator=torch.Generator().manual_seed(SEED), output_type="pt", _auto_resize=False,
        ).images
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() == 0.0


@pytest.mark.slow
def test_a_transformer_lora_change_with_cached_prompts_never_reads_the_text_encoders(kontext, tmp_path):
    model, file = kontext
    _run(_klein_doc([(file, 0.5)], "tiny-kontext", guidance=3.5, width=96), tmp_path)
    model_cache.release("tiny-kontext")  # a new process, as far as the model goes
    start = len(flow_loader.LOADS)
    again = _run(_klein_doc([(file, 0.9)], "tiny-kontext", guidance=3.5, width=96), tmp_path)
    assert "text" in again.cached and "denoise" in again.ran
    read = {comp for path, comp in flow_loader.LOADS[start:] if path == model.path}
    assert "transformer" in read and not read & {"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"}


# --- what reruns, what loads -------------------------------------------------------------------


@pytest.mark.slow
def test_a_unet_lora_scale_change_reruns_the_denoise_not_the_prompt_encode(sd_path, sd_loras, tmp_path):
    model_cache.release(str(sd_path))
    loads_before = [k for k in model_cache.LOADS if k.path == str(sd_path)]
    first = _run(_sd_doc(sd_path, [(sd_loras["unet"], 0.5)]), tmp_path)
    assert set(first.ran) == {"model", "lora0", "text", "empty", "denoise", "pixels"}
    again = _run(_sd_doc(sd_path, [(sd_loras["unet"], 0.9)]), tmp_path)
    # model.load "runs" again only to hand over the model this process already holds (LOADS below)
    assert set(again.ran) == {"model", "lora0", "denoise", "pixels"}
    assert set(again.cached) == {"text", "empty"}
    # a LoRA that also changes the text encoder: its scale reruns the prompt encode too
    te = _run(_sd_doc(sd_path, [(sd_loras["kohya"], 0.5)]), tmp_path)
    assert {"text", "denoise"} <= set(te.ran)
    te2 = _run(_sd_doc(sd_path, [(sd_loras["kohya"], 0.6)]), tmp_path)
    assert set(te2.ran) == {"model", "lora0", "text", "denoise", "pixels"}
    # the prompt encode under a UNet-only LoRA is the plain model's: shared, not recomputed
    plain = _run(_sd_doc(sd_path, []), tmp_path)
    assert "text" in plain.cached and "empty" in plain.cached
    loads = [k for k in model_cache.LOADS if k.path == str(sd_path)]
    assert len(loads) - len(loads_before) == 1  # one base-model load across every LoRA change


@pytest.mark.slow
def test_the_plain_model_paints_as_before_after_a_lora_ran(sd_path, sd_loras):
    before = _run(_sd_doc(sd_path, []), False).value("pixels")
    with_lora = _run(_sd_doc(sd_path, [(sd_loras["kohya"], 1.0)]), False).value("pixels")
    after = _run(_sd_doc(sd_path, []), False).value("pixels")
    assert torch.equal(before, after)
    assert not torch.equal(before, with_lora)


@pytest.mark.slow
def test_flux_lora_scale_change_loads_the_transformer_once_and_keeps_the_prompt(klein, tmp_path):
    model, files = klein
    start = len(flow_loader.LOADS)
    first = _run(_klein_doc([(files["diffusers"], 0.5)]), tmp_path)
    assert "text" in first.ran
    again = _run(_klein_doc([(files["diffusers"], 1.5)]), tmp_path)
    assert set(again.ran) == {"model", "lora0", "denoise", "pixels"}
    assert "text" in again.cached
    reads = [comp for path, comp in flow_loader.LOADS[start:] if path == model.path]
    assert reads.count("transformer") <= 1  # never re-read for a LoRA change


# --- bad files ------------------------------------------------------------------------------------


def _issues(doc: dict) -> list:
    with pytest.raises(WorkflowInvalid) as err:
        _run(doc, False)
    return err.value.issues


def test_a_pickle_lora_is_refused_before_anything_runs(sd_path, tmp_path):
    bad = tmp_path / "style.ckpt"
    bad.write_bytes(b"\x80\x04not a real pickle")
    (issue,) = _issues(_sd_doc(sd_path, [(bad, 1.0)]))
    assert issue.path == "nodes.lora0.params.lora" and issue.node_id == "lora0" and issue.node_type == "model.lora"
    assert "style.ckpt" in issue.message and ".safetensors files only" in issue.message


def test_a_file_that_is_not_safetensors_is_refused(sd_path, tmp_path):
    bad = tmp_path / "style.safetensors"
    bad.write_bytes(b"\xff" * 64)
    (issue,) = _issues(_sd_doc(sd_path, [(bad, 1.0)]))
    assert issue.path == "nodes.lora0.params.lora" and "not a safetensors file" in issue.message


def test_foreign_tensor_names_are_refused_naming_one_and_the_allowed_layouts(sd_path, tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "not_a_lora.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(bad))
    (issue,) = _issues(_sd_doc(sd_path, [(bad, 1.0)]))
    assert "'model.diffusion_model.input_blocks.0.0.weight'" in issue.message
    assert "kohya" in issue.message and "lora_A" in issue.message


def test_a_lora_for_another_model_fails_naming_the_file(sd_path, tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other_model.safetensors"
    save_file({
        "unet.mid_block.attentions.7.proj_in.lora_A.weight": torch.ones(4, 3),
        "unet.mid_block.attentions.7.proj_in.lora_B.weight": torch.ones(3, 4),
    }, str(other))
    with pytest.raises(NodeFailed) as err:
        _run(_sd_doc(sd_path, [(other, 1.0)]), False)
    assert "other_model.safetensors" in str(err.value) and "does not fit" in str(err.value)


def test_a_lora_with_layers_the_model_lacks_fails_counting_them(sd_path, sd_loras, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(sd_loras["unet"]))
    tensors["unet.down_blocks.0.attentions.0.transformer_blocks.9.attn1.to_q.lora_A.weight"] = torch.ones(4, 32)
    tensors["unet.down_blocks.0.attentions.0.transformer_blocks.9.attn1.to_q.lora_B.weight"] = torch.ones(32, 4)
    save_file(tensors, str(tmp_path / "partly_other.safetensors"))
    with pytest.raises(NodeFailed) as err:
        _run(_sd_doc(sd_path, [(tmp_path / "partly_other.safetensors", 1.0)]), False)
    n = len([k for k in tensors if k.endswith("lora_A.weight")])
    assert f"{n} LoRA layers for the unet, {n - 1} of them found in it" in str(err.value)
    # the half-loaded adapter is gone: the plain model and a good LoRA still run
    assert _run(_sd_doc(sd_path, [(sd_loras["unet"], 0.5)]), False).value("pixels") is not None


def test_a_missing_lora_names_the_registry(sd_path, tmp_path):
    (issue,) = _issues(_sd_doc(sd_path, [(tmp_path / "nowhere.safetensors", 1.0)]))
    assert issue.path == "nodes.lora0.params.lora" and "not found" in issue.message and "EDITGRAPH_MODELS" in issue.message


@pytest.mark.slow
def test_provenance_names_the_lora_its_hash_and_scale_and_pins_it_for_a_rerun(sd_path, sd_loras, tmp_path):
    from editgraph.filehash import file_digest
    from editgraph.sharing import provenance

    doc = _sd_doc(sd_path, [(sd_loras["unet"], 0.7)])
    doc["nodes"]["save"] = {"type": "image.save", "inputs": {"image": "pixels"}, "params": {"path": "out.png"}}
    api.run(doc, out=tmp_path / "out", cache=False, device="cpu")
    info = provenance.read_file(tmp_path / "out" / "out.png")
    digest = file_digest(sd_loras["unet"])
    (lora,) = [m for m in info["models"] if m["type"] == "model.lora"]
    assert lora["name"] == "style_unet.safetensors" and lora["lora_hash"] == digest
    assert lora["loras"] == [{"content_hash": digest, "scale": 0.7, "components": ["unet"]}]
    (base,) = [m for m in info["models"] if m["type"] == "model.load"]
    assert lora["content_hash"] == base["content_hash"]
    assert {"node": "lora0", "field": "lora", "source_token": digest}.items() <= next(
        i for i in info["inputs"] if i["node"] == "lora0").items()
    assert info["workflow"]["nodes"]["lora0"]["params"]["hash"] == digest


@pytest.mark.equivalence
@pytest.mark.slow
def test_qwen_edit_plus_lora_matches_pipeline_load_lora_weights(tmp_path, monkeypatch):
    from diffusers import QwenImageTransformer2DModel
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    from tests.diffusion.flow_support import QWEN_CONDITION_AREA, QWEN_VAE_AREA, photo, pipeline_for

    # the pipeline hard-codes 384² and 1024² for its two reference copies; both sides use small ones
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", QWEN_CONDITION_AREA)
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", QWEN_VAE_AREA)
    model = load_model("tiny-qwen-edit-plus")
    lora = write_diffusers_lora(model, "transformer", tmp_path / "qwen_style.safetensors", seed=9)
    picture = photo(64, 64)
    picture.save(tmp_path / "ref.png")
    doc = {"format": "editgraph/1", "name": "qwen-lora", "nodes": {
        "model": {"type": "model.load", "params": {"model": "tiny-qwen-edit-plus"}},
        "lora": {"type": "model.lora", "inputs": {"model": "model"}, "params": {"lora": str(lora), "scale": 0.75}},
        "photo": {"type": "image.load", "params": {"path": str(tmp_path / "ref.png")}},
        "ref": {"type": "flow.reference", "inputs": {"model": "lora", "image": "photo.image"},
                "params": {"condition_area": QWEN_CONDITION_AREA, "vae_area": QWEN_VAE_AREA}},
        "refs": {"type": "flow.references", "inputs": {"ref1": "ref"}},
        "text": {"type": "flow.prompt", "inputs": {"model": "lora", "references": "refs"}, "params": {"prompt": PROMPT}},
        "denoise": {"type": "flow.denoise", "inputs": {"model": "lora", "cond": "text", "references": "refs"},
                    "params": {"steps": 2, "true_cfg": 4.0, "seed": SEED, "width": 64, "height": 64}},
        "pixels": {"type": "flow.decode", "inputs": {"model": "lora", "latent": "denoise"}},
    }}
    ours = _run(doc, False).value("pixels")
    pipe = pipeline_for(model)
    pipe.transformer = QwenImageTransformer2DModel.from_pretrained(model.path, subfolder="transformer", local_files_only=True)
    pipe.load_lora_weights(str(lora), adapter_name="theirs")
    pipe.set_adapters(["theirs"], adapter_weights=[0.75])
    with torch.inference_mode():
        theirs = pipe(
            image=[picture], prompt=PROMPT, true_cfg_scale=4.0, height=64, width=64, num_inference_steps=2,
            generator=torch.Generator().manual_seed(SEED), output_type="pt",
        ).images
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() == 0.0
