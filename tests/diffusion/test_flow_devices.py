"""The flow families honour the run's device: every tensor a stage hands its model is on the
device that model computes on, never on a device written into the code.

A CPU-only machine cannot tell "on the run device" from "on the CPU" when the run device *is* the
CPU, so these tests run the stages with the model on torch's `meta` device (shapes, no numbers): a
tensor made on a hard-coded device then reaches the transformer (or the VAE) as a CPU tensor, and
a forward pre-hook on the module refuses it, naming the argument. Under an offload mode the weights
sit on the CPU between calls and only the hooks know the onload device
(models/offload.py: execution_device): the same check, with the weights on the CPU and the onload
device `meta`, fails any stage that asks the module where its weights are.

The numbers themselves are checked on the CPU with an explicit device through the public API and
the CLI (test_flow_device_api.py), and on CUDA by bench/gpu_check.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from editgraph.models.loader import load_model
from editgraph.models.offload import place
from editgraph.nodes.builtin.flow import FlowDecode, FlowDenoise, FlowPrompt, FlowReference, FlowReferences
from editgraph.values.sockets import Latent

from .flow_support import QWEN_CONDITION_AREA, QWEN_VAE_AREA, box_mask, ctx, flow_model, photo, to_tensor

pytestmark = pytest.mark.slow

META = torch.device("meta")
PROMPT, SEED, STEPS = "replace the cup with the product in picture 2", 3, 2


def _tensors(value: object, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{path}[{k!r}]")


class Checked(Exception):
    """Raised by a stopping hook once the module's inputs passed: what follows cannot run on `meta`
    (an LLM's data-dependent masks, pixels copied to the CPU) or must not run (offload hooks)."""


@contextmanager
def only_on(module: torch.nn.Module, device: torch.device, what: str, stop: bool = False) -> Iterator[list[str]]:
    """A forward pre-hook on `module` that refuses any tensor argument not on `device`, naming
    each; yields the list of calls seen (so a test also knows the module ran). With `stop`, the
    first call raises Checked after the check."""
    calls: list[str] = []

    def check(_module, args, kwargs):
        named = [*_tensors(list(args), "args"), *(item for k, v in kwargs.items() for item in _tensors(v, k))]
        elsewhere = [f"{name} on {t.device}" for name, t in named if t.device != device]
        assert not elsewhere, f"{what} was handed tensors off the run device {device}: {', '.join(elsewhere)}"
        calls.append(what)
        if stop:
            raise Checked(what)

    handle = module.register_forward_pre_hook(check, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


# name -> (model, reference pictures, masked edit?, negative prompt, flow.denoise params)
CASES = {
    "flux2-klein": ("tiny-flux2-klein", 2, False, None, {"guidance": 4.0, "width": 64, "height": 64}),
    "flux2-dev": ("tiny-flux2", 1, False, None, {"guidance": 4.0, "width": 64, "height": 64}),
    "flux2-klein-inpaint": ("tiny-flux2-klein-inpaint", 1, True, None, {"guidance": 4.0, "strength": 0.6, "steps": STEPS + 1}),
    "kontext": ("tiny-kontext", 1, False, "blurry", {"guidance": 3.5, "true_cfg": 2.0, "width": 96, "height": 64}),
    "kontext-inpaint": ("tiny-kontext-inpaint", 1, True, "blurry", {"guidance": 3.5, "true_cfg": 2.0, "strength": 0.6, "steps": STEPS + 1}),
    "qwen-edit-plus": ("tiny-qwen-edit-plus", 2, False, "blurry", {"true_cfg": 4.0, "width": 64, "height": 64}),
    "qwen-edit-inpaint": ("tiny-qwen-edit-inpaint", 0, True, "blurry", {"true_cfg": 4.0, "strength": 0.6, "steps": STEPS + 1}),
}
REFERENCE = {"auto_resize": False, "condition_area": QWEN_CONDITION_AREA, "vae_area": QWEN_VAE_AREA}


def _denoise_inputs(model, pictures: int, masked: bool, negative: str | None) -> dict:
    """flow.denoise's inputs, made on the CPU by the model's other stages (as the disk cache gives them back)."""
    encode = FlowReference(FlowReference.Params(**REFERENCE))
    qwen = model.family == "qwen-image"
    crops = [(100, 50, 400, 250), (200, 0, 500, 400)]
    refs = [encode.run(ctx(), model=model, image=to_tensor(photo(64, 64, crops[i]))) for i in range(pictures)]
    inputs: dict = {}
    if masked:
        source = encode.run(ctx(), model=model, image=to_tensor(photo(96, 64)))
        inputs = {"source": source, "mask": to_tensor(box_mask(96, 64))}
        if qwen:  # its inpaint pipeline reads the instruction with the source as its one picture
            refs = [source]
    references = FlowReferences(FlowReferences.Params()).run(ctx(), **{f"ref{i + 1}": r for i, r in enumerate(refs)}) if refs else None
    prompt = FlowPrompt(FlowPrompt.Params(prompt=PROMPT, negative_prompt=negative))
    inputs["cond"] = prompt.run(ctx(), model=model, references=references) if qwen else prompt.run(ctx(), model=model)
    if references is not None and not (qwen and masked):
        inputs["references"] = references
    return inputs


@pytest.mark.parametrize("case", list(CASES), ids=[f"{c}-denoise-on-meta" for c in CASES])
def test_flow_denoise_hands_the_transformer_only_tensors_on_its_device(case):
    name, pictures, masked, negative, params = CASES[case]
    inputs = _denoise_inputs(flow_model(name), pictures, masked, negative)
    model = load_model(name, device=META)  # the same model, its weights on `meta`
    node = FlowDenoise(FlowDenoise.Params(**{"seed": SEED, "steps": STEPS, **params}))
    with only_on(model.transformer, META, f"{case} transformer") as calls:
        latent = node.run(ctx(device=META), model=model, **inputs)
    assert calls  # the transformer ran, and saw nothing but tensors on its device
    assert latent.samples.device == META



# name -> (the text encoder the prompt stage hands tensors to, whether the whole stage runs on meta)
PROMPTS = {
    "tiny-flux2-klein": ("text_encoder", False),  # Qwen3: its causal mask reads values (.item())
    "tiny-flux2": ("text_encoder", False),  # Mistral 3: likewise
    "tiny-kontext": ("text_encoder_2", True),  # CLIP then T5: runs through, its embeddings stay on meta
    "tiny-qwen-edit-plus": ("text_encoder", False),  # Qwen2.5-VL: its vision grid is read on the host
}


@pytest.mark.parametrize("name", list(PROMPTS), ids=[f"{n.removeprefix('tiny-')}-prompt-on-meta" for n in PROMPTS])
def test_flow_prompt_hands_the_text_encoder_only_tensors_on_its_device(name):
    component, runs_through = PROMPTS[name]
    references = None
    if name == "tiny-qwen-edit-plus":  # it reads the instruction together with the pictures
        ref = FlowReference(FlowReference.Params(**REFERENCE)).run(ctx(), model=flow_model(name), image=to_tensor(photo(64, 64)))
        references = FlowReferences(FlowReferences.Params()).run(ctx(), ref1=ref)
    model = load_model(name, device=META)
    node = FlowPrompt(FlowPrompt.Params(prompt=PROMPT, negative_prompt=None if "flux2" in name else "blurry"))
    kw = {"references": references} if references is not None else {}
    with only_on(model.component(component), META, f"{name} {component}", stop=not runs_through) as calls:
        try:
            cond = node.run(ctx(device=META), model=model, **kw)
        except Checked:
            cond = None
    assert calls
    if runs_through:
        assert {t.device for t in (cond.embeds, cond.pooled, cond.negative, cond.negative_pooled)} == {META}


@pytest.mark.parametrize("name", ["tiny-flux2-klein", "tiny-kontext", "tiny-qwen-edit-plus", "tiny-qwen-edit"],
                         ids=["flux2-reference-on-meta", "kontext-reference-on-meta", "qwen-edit-plus-reference-on-meta",
                              "qwen-edit-reference-on-meta"])
def test_flow_reference_hands_the_vae_only_tensors_on_its_device(name):
    model = load_model(name, device=META)
    with only_on(model.vae.encoder, META, f"{name} VAE encoder") as calls:
        ref = FlowReference(FlowReference.Params(**REFERENCE)).run(ctx(device=META), model=model, image=to_tensor(photo(64, 64)))
    assert calls and ref.latents.device == META
    assert ref.posterior is None or ref.posterior.device == META


@pytest.mark.parametrize("name", ["tiny-flux2-klein", "tiny-kontext", "tiny-qwen-edit-plus"],
                         ids=["flux2-decode-on-meta", "kontext-decode-on-meta", "qwen-decode-on-meta"])
def test_flow_decode_hands_the_vae_only_tensors_on_its_device(name):
    # Latents as the disk cache gives them back: on the CPU. (Pixels end on the CPU, which meta
    # cannot do: the check stops at the decoder's input.)
    encoded = FlowReference(FlowReference.Params(**REFERENCE)).run(ctx(), model=flow_model(name), image=to_tensor(photo(64, 64)))
    latent = Latent(encoded.latents.cpu(), family=encoded.family)
    model = load_model(name, device=META)
    with only_on(model.vae.decoder, META, f"{name} VAE decoder", stop=True) as calls, pytest.raises(Checked):
        FlowDecode(FlowDecode.Params()).run(ctx(device=META), model=model, latent=latent)
    assert calls


def test_offloaded_transformer_gets_its_inputs_on_the_onload_device():
    """Weights on the CPU between calls, the onload device `meta`: only the offload hook knows where
    the transformer computes (models/offload.py: execution_device reads the mode and onload device
    a module was placed for, the same for every mode); a stage that asks the weights puts its
    tensors on the CPU and is refused before the hook moves a weight. ("model" mode: diffusers'
    group offloading, behind "group" and "sequential", refuses an onload device without an
    accelerator module, such as meta; every mode's bytes are compared in tests/models/test_offload.py.)"""
    mode = "model"
    name, pictures, masked, negative, params = CASES["flux2-klein-inpaint"]
    model = flow_model(name)
    inputs = _denoise_inputs(model, pictures, masked, negative)
    transformer = model.transformer
    place(transformer, "transformer", mode, META)
    try:
        assert {p.device.type for p in transformer.parameters()} == {"cpu"}  # nothing onloaded yet
        node = FlowDenoise(FlowDenoise.Params(**{"seed": SEED, "steps": STEPS, **params}))
        with only_on(transformer, META, f"transformer offloaded ({mode})", stop=True) as calls, pytest.raises(Checked):
            node.run(ctx(device=META), model=model, **inputs)
        assert calls
    finally:
        place(transformer, "transformer", "none", torch.device("cpu"))  # the shared module as it was
