"""load_model: names build once into the cache, folders load offline, the process cache holds one
copy, and every kind of missing or broken model is an error naming the path and the problem."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from editgraph.errors import EditgraphError
from editgraph.models import cache, hashing, loader
from editgraph.models.handle import DiffusionModel
from editgraph.models.loader import ModelError, detect_family, load_model, model_hash
from editgraph.models.tiny import BUILDER_VERSION


def test_a_name_builds_once_into_the_cache_dir(monkeypatch):
    monkeypatch.delenv("EDITGRAPH_MODELS_DIR")  # the suite shares one models dir; test the default
    builds = []
    real = loader.build_into
    monkeypatch.setattr(loader, "build_into", lambda name, target, *a: builds.append(name) or real(name, target, *a))
    model = load_model("tiny-sd")
    expected = Path(os.environ["EDITGRAPH_CACHE_DIR"]) / "models" / "tiny-sd"
    assert model.path == str(expected) and (expected / "model_index.json").is_file()
    assert (model.name, model.family, model.kind, model.dtype) == ("tiny-sd", "sd1", "base", "float32")
    assert model.latent_channels == 4 and model.vae_scale_factor == 8
    assert model.scheduler_config["_class_name"] == "PNDMScheduler"
    weights = expected / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    cache.release_all()
    again = load_model("tiny-sd")
    assert builds == ["tiny-sd"]  # the second load found the build and did not redo it
    assert weights.stat().st_mtime_ns == stamp
    assert again is not model and again.content_hash == model.content_hash


@pytest.fixture
def own_models(monkeypatch, tmp_path):
    """A models folder of this test's own, holding a copy of the suite's tiny-sd build. The tests
    that damage a build damage this copy: under pytest-xdist the shared folder is being loaded by
    the other worker (a Ray batch once failed on a tiny-sd pruned under it)."""
    shared = Path(os.environ["EDITGRAPH_MODELS_DIR"])
    load_model("tiny-sd")  # built (or found) in the shared folder
    cache.release_all()
    shutil.copytree(shared / "tiny-sd", tmp_path / "models" / "tiny-sd")
    monkeypatch.setenv("EDITGRAPH_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_an_outdated_build_is_rebuilt(own_models):
    first = load_model("tiny-sd")
    assert Path(first.path) == own_models / "tiny-sd"
    marker = Path(first.path) / "editgraph.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "builder_version": 0}))
    cache.release_all()
    second = load_model("tiny-sd")
    assert json.loads(marker.read_text())["builder_version"] == BUILDER_VERSION
    assert second.content_hash == first.content_hash  # rebuilt to the same bytes


def test_a_pruned_build_is_rebuilt(own_models):
    first = load_model("tiny-sd")
    assert Path(first.path) == own_models / "tiny-sd"
    (Path(first.path) / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    cache.release_all()
    second = load_model("tiny-sd")
    assert second.content_hash == first.content_hash
    assert torch.equal(second.unet.conv_in.weight, first.unet.conv_in.weight)


def test_the_process_cache_returns_one_object_and_releases_it():
    a = load_model("tiny-sd")
    assert load_model("tiny-sd") is a
    half = load_model("tiny-sd", dtype="float16")
    assert half is not a and half.dtype == "float16" and half.unet.dtype == torch.float16
    assert half.__fingerprint__() == f"model:{a.content_hash}:float16" and a.__fingerprint__() == f"model:{a.content_hash}"
    assert load_model(a.path) is a  # the same files by path: the same key, whatever the name
    assert len(cache.loaded()) == 2
    assert cache.release("tiny-sd") == 2
    assert cache.loaded() == []
    b = load_model("tiny-sd")
    assert b is not a
    assert cache.release_all() == 1 and cache.release_all() == 0


def test_a_diffusers_folder_loads_by_relative_path(tiny_dirs, tmp_path):
    target = tmp_path / "models" / "mine"
    shutil.copytree(tiny_dirs["tiny-ip2p"], target)
    model = load_model("models/mine", base_dir=tmp_path)
    assert isinstance(model, DiffusionModel)
    assert (model.path, model.kind, model.name) == (str(target), "instruct", "models/mine")
    assert model.unet.config.in_channels == 8 and not model.unet.training
    assert all(not p.requires_grad for p in model.unet.parameters())
    # The same files elsewhere hash alike: the hash is of contents, not places.
    assert model.content_hash == model_hash(tiny_dirs["tiny-ip2p"])


def test_a_missing_path_names_it(tmp_path):
    with pytest.raises(ModelError, match=f"model 'nope/sd15' not found: nothing at {tmp_path}/nope/sd15, .*tiny-sd"):
        load_model("nope/sd15", base_dir=tmp_path)


def test_a_folder_without_model_index_names_what_a_folder_needs(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelError, match=r"no model_index.json in .*/m \(a diffusers folder needs model_index.json, unet/, vae/"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("unet/config.json", r"no unet/config.json in {root} \(a diffusers folder needs"),
        ("vae", r"no vae/ folder in {root}"),
        ("text_encoder/model.safetensors", r"no text_encoder/model.safetensors in {root}$"),
        ("tokenizer/merges.txt", r"no vocab.json \+ merges.txt \(or tokenizer.json\) in {root}/tokenizer"),
        ("scheduler/scheduler_config.json", r"no scheduler/scheduler_config.json in {root}"),
    ],
)
def test_a_missing_component_is_named(tiny_dirs, tmp_path, remove, message):
    root = tmp_path / "broken"
    shutil.copytree(tiny_dirs["tiny-sd"], root)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError, match=message.format(root=root)):
        load_model(root)


def test_pickle_weights_are_refused_by_name(tiny_dirs, tmp_path):
    root = tmp_path / "pickled"
    shutil.copytree(tiny_dirs["tiny-sd"], root)
    (root / "unet" / "diffusion_pytorch_model.safetensors").rename(root / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match=r"no unet/diffusion_pytorch_model.safetensors in .*; it holds only diffusion_pytorch_model.bin, and editgraph loads .safetensors only"):
        load_model(root)


def test_a_corrupt_weight_file_is_named(tiny_dirs, tmp_path):
    root = tmp_path / "torn"
    shutil.copytree(tiny_dirs["tiny-sd"], root)
    weights = root / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    with pytest.raises(ModelError, match=f"cannot load vae from {root}/vae: "):
        load_model(root)


def test_an_unreadable_model_index_is_named(tiny_dirs, tmp_path):
    root = tmp_path / "badjson"
    shutil.copytree(tiny_dirs["tiny-sd"], root)
    (root / "model_index.json").write_text("{not json")
    with pytest.raises(ModelError, match=f"cannot read {root}/model_index.json: "):
        load_model(root)


def test_errors_are_editgraph_errors_and_dtype_is_checked():
    assert issubclass(ModelError, EditgraphError)
    with pytest.raises(ModelError, match="dtype 'int8' is not supported; use one of float32, float16, bfloat16"):
        load_model("tiny-sd", dtype="int8")


def test_family_and_kind_come_from_the_unet_config():
    assert detect_family({"in_channels": 4, "cross_attention_dim": 768}) == ("sd1", "base")
    assert detect_family({"in_channels": 9, "cross_attention_dim": 1024}) == ("sd2", "inpaint")
    assert detect_family({"in_channels": 8, "cross_attention_dim": 768}) == ("sd1", "instruct")
    assert detect_family({"in_channels": 4, "cross_attention_dim": 2048, "addition_embed_type": "text_time"}) == ("sdxl", "base")
    assert detect_family({"in_channels": 4, "cross_attention_dim": 32}, {"family": "sd1", "kind": "base"}) == ("sd1", "base")
    with pytest.raises(ModelError, match="in_channels is 7; editgraph knows 4 \\(base\\), 9 \\(inpaint\\), 8 \\(instruct\\)"):
        detect_family({"in_channels": 7, "cross_attention_dim": 768}, where="/m")
    with pytest.raises(ModelError, match="cannot tell the model family from cross_attention_dim 32"):
        detect_family({"in_channels": 4, "cross_attention_dim": 32}, where="/m")


def test_the_hash_memo_skips_reading_unchanged_files_and_sees_changed_ones(tiny_dirs, tmp_path, monkeypatch):
    root = tmp_path / "m"
    shutil.copytree(tiny_dirs["tiny-sd"], root)
    first = model_hash(root)
    memo = json.loads(hashing.memo_path().read_text())
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    assert memo[str(weights)][:2] == [weights.stat().st_size, weights.stat().st_mtime_ns]

    # 1. A new process (in-memory memo dropped) reads the memo file instead of the weights.
    monkeypatch.setattr(hashing, "_loaded_from", None)
    monkeypatch.setattr(hashing, "file_digest", lambda p: pytest.fail(f"re-read {p}"))
    assert model_hash(root) == first
    monkeypatch.undo()

    # 2. Changing one byte of a weight file (same size) changes the hash.
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    changed = model_hash(root)
    assert changed != first
    # 3. Files a load does not read (a stray .bin) do not enter the hash.
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"junk")
    assert model_hash(root) == changed


def test_a_component_with_only_fp16_weights_loads_that_variant(tiny_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    root = tmp_path / "half"
    shutil.copytree(tiny_dirs["tiny-sd"], root)
    plain = root / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v.half() for k, v in load_file(plain).items()}, str(root / "unet" / "diffusion_pytorch_model.fp16.safetensors"), metadata={"format": "pt"})
    plain.unlink()
    model = load_model(root)
    assert model.extra["variants"] == {"unet": "fp16"}
    reference = load_model(tiny_dirs["tiny-sd"])
    weight = "conv_in.weight"
    # Loaded as float32 (the requested dtype), holding the fp16-rounded values.
    assert model.unet.state_dict()[weight].dtype == torch.float32
    assert torch.equal(model.unet.state_dict()[weight], reference.unet.state_dict()[weight].half().float())
    assert torch.equal(model.vae.state_dict()["encoder.conv_in.weight"], reference.vae.state_dict()["encoder.conv_in.weight"])
