"""CPU offload modes (models/offload.py) and the dtype param, on tiny SD and Flux-family builds.

- every mode (none, model, group, sequential) paints the same bytes with the same node keys: the
  mode is a run option, never keyed;
- each mode installs its hooks (accelerate's CpuOffload for "model", diffusers' group offloading
  hooks at block or leaf level for "group"/"sequential"), found in the modules' hook registries,
  onloading to the run device (the CPU here: the hooks run, the memory saving is nil); a run with
  mode "none" takes them off again;
- a LoRA loaded into already placed modules is placed again (its layers get hooks too);
- an IP-Adapter's image encoder, loaded lazily inside ip_adapter.encode, is placed as it loads;
- the report, the provenance and the CLI's report record the mode;
- dtype (float32/bfloat16/float16) enters model.load's key and the model's fingerprint, and runs
  on every family's tiny build.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from editgraph import api
from editgraph.errors import EditgraphError
from editgraph.models import cache as model_cache
from editgraph.models.loader import load_model
from editgraph.models.offload import MODES, load_device, mode_of
from editgraph.settings import Settings
from editgraph.sharing import provenance

PROMPT, SEED = "a red cup on a wooden table", 3
# "none" again last: the hooks the other modes left on the shared modules must come off.
SEQUENCE = [*MODES, "none"]


def _sd_doc(model: str = "tiny-sd", dtype: str = "float32") -> dict:
    return {"format": "editgraph/1", "name": "offload-sd", "nodes": {
        "model": {"type": "model.load", "params": {"model": model, "dtype": dtype}},
        "text": {"type": "prompt.encode", "inputs": {"model": "model"}, "params": {"prompt": PROMPT}},
        "empty": {"type": "latent.empty", "inputs": {"model": "model"}, "params": {"width": 64, "height": 64}},
        "denoise": {"type": "denoise", "inputs": {"model": "model", "cond": "text", "latent": "empty"},
                    "params": {"steps": 2, "cfg": 7.0, "seed": SEED, "scheduler": "euler"}},
        "pixels": {"type": "vae.decode", "inputs": {"model": "model", "latent": "denoise"}},
        "save": {"type": "image.save", "inputs": {"image": "pixels"}, "params": {"path": "out.png"}},
    }}


def _flow_doc(model: str = "tiny-flux2-klein", dtype: str = "float32", **denoise) -> dict:
    return {"format": "editgraph/1", "name": "offload-flow", "nodes": {
        "model": {"type": "model.load", "params": {"model": model, "dtype": dtype}},
        "text": {"type": "flow.prompt", "inputs": {"model": "model"}, "params": {"prompt": PROMPT}},
        "denoise": {"type": "flow.denoise", "inputs": {"model": "model", "cond": "text"},
                    "params": {"steps": 2, "guidance": 4.0, "seed": SEED, "width": 64, "height": 64, **denoise}},
        "pixels": {"type": "flow.decode", "inputs": {"model": "model", "latent": "denoise"}},
        "save": {"type": "image.save", "inputs": {"image": "pixels"}, "params": {"path": "out.png"}},
    }}


def _group_hooks(module: torch.nn.Module) -> list[tuple[str, str]]:
    """(submodule name, offload type) of every diffusers group-offloading hook in the module's tree."""
    found = []
    for name, sub in module.named_modules():
        registry = getattr(sub, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        if hook is not None:
            assert hook.config.onload_device == torch.device("cpu")  # the run device
            found.append((name, hook.config.offload_type.value))
    return found


def _check_hooks(model, comps: tuple[str, ...], mode: str) -> None:
    from accelerate.hooks import CpuOffload

    for comp in comps:
        module = model.loaded(comp)
        assert module is not None, comp
        assert mode_of(module) == mode, comp
        hooks = _group_hooks(module)
        accel = getattr(module, "_hf_hook", None)
        if mode == "none":
            assert hooks == [] and accel is None, comp
        elif mode == "model":
            assert isinstance(accel, CpuOffload) and accel.execution_device == torch.device("cpu"), comp
            assert hooks == [], comp
        elif mode == "group":
            levels = {level for _, level in hooks}
            if comp == "vae":  # used via encode()/decode(): every layer onloads itself
                assert levels == {"leaf_level"}, comp
            else:  # one hook per block (ModuleList entries), one on the root for the rest
                assert levels == {"block_level"} and ("", "block_level") in hooks, comp
        else:  # sequential: a hook on every layer
            leaves = [n for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
            assert {n for n, _ in hooks} >= set(leaves) and {level for _, level in hooks} == {"leaf_level"}, comp


CASES = {
    "sd": (_sd_doc, "tiny-sd", ("unet", "vae", "text_encoder")),
    "flux2-klein": (_flow_doc, "tiny-flux2-klein", ("transformer", "vae", "text_encoder")),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CASES), ids=[f"{f}-offload-modes" for f in CASES])
def test_every_offload_mode_gives_the_same_bytes_and_keys_and_installs_its_hooks(family, tmp_path):
    make_doc, name, comps = CASES[family]
    first = None
    for i, mode in enumerate(SEQUENCE):
        out = tmp_path / f"{i}-{mode}"
        result = api.run(make_doc(), out=out, cache=False, device="cpu", offload=mode)
        assert sorted(result.ran) == sorted(make_doc()["nodes"])  # no cache: every node ran
        pixels = result.value("pixels").numpy().tobytes()
        png = np.asarray(Image.open(out / "out.png")).tobytes()
        keys = {nid: line["key"] for nid, line in result.report["nodes"].items()}
        if first is None:
            first = (pixels, png, keys)
        assert (pixels, png, keys) == first, mode  # same bytes, same keys: the mode is never keyed
        assert result.report["offload"] == mode
        assert provenance.read_file(out / "out.png")["offload"] == mode
        _check_hooks(load_model(name), comps, mode)


@pytest.mark.slow
def test_a_lora_loaded_into_offloaded_modules_gets_hooks_and_paints_as_without_offload(tmp_path):
    from editgraph.testing.tinylora import write_diffusers_lora

    model = load_model("tiny-flux2-klein")
    lora = write_diffusers_lora(model, "transformer", tmp_path / "style.safetensors", seed=4)
    doc = _flow_doc()
    doc["nodes"]["lora"] = {"type": "model.lora", "inputs": {"model": "model"}, "params": {"lora": str(lora), "scale": 0.8}}
    for node in ("text", "denoise", "pixels"):
        doc["nodes"][node]["inputs"]["model"] = "lora"
    api.run(_flow_doc(), cache=False, device="cpu", offload="sequential")  # the plain model's modules get placed first
    offloaded = api.run(doc, cache=False, device="cpu", offload="sequential").value("pixels")
    plain = api.run(doc, cache=False, device="cpu", offload="none").value("pixels")
    assert torch.equal(offloaded, plain)
    api.run(doc, cache=False, device="cpu", offload="sequential")
    transformer = model.loaded("transformer")
    hooked = {n for n, _ in _group_hooks(transformer)}
    lora_layers = {n for n, m in transformer.named_modules() if n.endswith(".lora_A.style") or ".lora_A." in n and isinstance(m, torch.nn.Linear)}
    assert lora_layers and lora_layers <= hooked  # the LoRA's own layers onload too
    api.run(doc, cache=False, device="cpu", offload="none")  # leave the shared modules as found


@pytest.mark.slow
def test_the_ip_adapters_image_encoder_is_placed_as_it_loads_and_encodes_alike_in_every_mode():
    """An IP-Adapter loads its parts lazily like a flow model (models/handle.py LazyParts): the
    image encoder, first read inside ip_adapter.encode, is placed for the mode as it loads."""
    from tests.conftest import ASSETS

    doc = {"format": "editgraph/1", "name": "offload-ip", "nodes": {
        "adapter": {"type": "ip_adapter.load"},
        "look": {"type": "image.load", "params": {"path": str(ASSETS / "chelsea.png")}},
        "ref": {"type": "ip_adapter.encode", "inputs": {"adapter": "adapter", "image": "look"}},
    }}
    first = None
    for mode in SEQUENCE:
        result = api.run(doc, cache=False, device="cpu", offload=mode)
        ref = result.value("ref")
        got = (ref.embeds.numpy().tobytes(), ref.negative.numpy().tobytes())
        first = first or got
        assert got == first, mode
        adapter = result.value("adapter")
        _check_hooks(adapter, ("image_encoder",), mode)
        adapter.release()  # the next mode reads the encoder again, so it is placed as it loads
    assert adapter.placing is None  # set only while a node runs


def test_offloaded_weights_load_on_the_cpu_and_the_mode_is_checked():
    assert load_device(torch.device("cuda"), "none") == torch.device("cuda")  # no CUDA needed to name one
    for mode in ("model", "group", "sequential"):
        assert load_device(torch.device("cuda"), mode) == torch.device("cpu")
    with pytest.raises(EditgraphError, match=r"EDITGRAPH_OFFLOAD\) must be one of none, model, group, sequential, got 'gpu'"):
        Settings.from_env({"EDITGRAPH_OFFLOAD": "gpu", "EDITGRAPH_CACHE_DIR": "/tmp"})
    assert Settings.from_env({"EDITGRAPH_OFFLOAD": "group", "EDITGRAPH_CACHE_DIR": "/tmp"}).offload == "group"
    with pytest.raises(EditgraphError, match="got 'leaf'"):
        api.run(_sd_doc(), cache=False, device="cpu", offload="leaf")


@pytest.mark.slow
def test_the_cli_takes_offload_and_its_report_records_it(tmp_path, capsys):
    from editgraph.cli.main import main

    doc = tmp_path / "wf.json"
    doc.write_text(json.dumps(_sd_doc()))
    report = tmp_path / "report.json"
    code = main(["run", str(doc), "--out", str(tmp_path / "out"), "--report", str(report), "--no-cache", "--device", "cpu",
                 "--offload", "group", "-q"])
    assert code == 0
    assert json.loads(report.read_text())["offload"] == "group"
    assert mode_of(load_model("tiny-sd").loaded("unet")) == "group"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(doc), "--offload", "gpu"])
    assert exc.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err
    api.run(_sd_doc(), cache=False, device="cpu", offload="none")


DTYPE_CASES = {
    "sd": (_sd_doc, "tiny-sd", {}),
    "sdxl": (_sd_doc, "tiny-sdxl", {}),
    "flux2-klein": (_flow_doc, "tiny-flux2-klein", {}),
    "flux2": (_flow_doc, "tiny-flux2", {}),
    "kontext": (_flow_doc, "tiny-kontext", {"guidance": 3.5}),
    "qwen-edit-plus": (_flow_doc, "tiny-qwen-edit-plus", {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(DTYPE_CASES), ids=[f"{f}-bfloat16" for f in DTYPE_CASES])
def test_dtype_enters_the_keys_and_runs_on_every_family(family):
    make_doc, name, extra = DTYPE_CASES[family]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        doc = make_doc(name, dtype, **extra) if make_doc is _flow_doc else make_doc(name, dtype)
        runs[dtype] = api.run(doc, cache=False, device="cpu")
    half, full = runs["bfloat16"], runs["float32"]
    for nid in half.report["nodes"]:  # the model's fingerprint carries its dtype into every key downstream
        assert half.report["nodes"][nid]["key"] != full.report["nodes"][nid]["key"], nid
    assert load_model(name, dtype="bfloat16").__fingerprint__() != load_model(name).__fingerprint__()
    model = load_model(name, dtype="bfloat16")
    weights = [model.loaded(c) for c in model.component_names()]
    assert {p.dtype for m in weights if isinstance(m, torch.nn.Module) for p in m.parameters()} == {torch.bfloat16}
    pixels = half.value("pixels")
    assert pixels.shape == full.value("pixels").shape and torch.isfinite(pixels).all()
    model_cache.release(name)  # a bfloat16 copy of each tiny model is not kept for later tests
