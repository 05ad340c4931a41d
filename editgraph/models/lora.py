"""LoRA files on a loaded model, without reloading it: adapters through diffusers' own loaders.

A LoRA is untrusted input. `inspect_lora` reads only the safetensors header (size-capped) and
refuses anything but LoRA keys in the diffusers or kohya layouts, before a tensor is read; the
tensors are then converted by the family's diffusers mixin (`lora_state_dict`), exactly as
`pipe.load_lora_weights` converts them, which says which components the LoRA touches.

`LoraModel` is what `model.lora` outputs: the base model plus an ordered list of (LoRA, scale).
Its fingerprint carries one segment per LoRA naming the components it touches, so a node is keyed
only by the LoRAs of the components it uses (values.sockets.fingerprint_for): a UNet-only LoRA
leaves prompt.encode's key alone. The base model's modules are shared by every LoraModel over it;
`activate` (entered by the executor around each node that takes a model) loads a LoRA into a
module the first time one is needed (again after a lazily loaded component was released), sets
the active adapters and their scales, or disables them for the plain model, under a lock per base
model, so two variants never see each other's scales.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editgraph.models.errors import ModelError
from editgraph.values.sockets import Model

MAX_LORA_BYTES = 4 << 30  # the largest Flux/Qwen LoRAs people share are ~1.5 GB
MAX_HEADER_BYTES = 16 << 20  # a LoRA's header lists a few thousand tensors; safetensors caps at 100 MB
LORA_SUFFIX = ".safetensors"

# The tensor names a LoRA may hold. diffusers/PEFT: <component>.<module>.lora_A/lora_B.weight (or
# the older lora.down/lora.up, lora_linear_layer), with an optional alpha; kohya:
# lora_unet_/lora_te[12]_<module_with_underscores>.lora_down/lora_up.weight and .alpha.
_DIFFUSERS_KEY = re.compile(
    r"^(unet|text_encoder|text_encoder_2|transformer|base_model\.model|diffusion_model)\.[\w.]+"
    r"\.(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up|lora_down|lora_up)(\.[\w]+)?\.weight$"
    r"|^(unet|text_encoder|text_encoder_2|transformer|diffusion_model)\.[\w.]+\.alpha$"
)
_KOHYA_KEY = re.compile(r"^lora_(unet|te|te1|te2|transformer)_\w+\.(lora_down\.weight|lora_up\.weight|alpha)$")
ALLOWED_KEYS = (
    "diffusers (unet./text_encoder./text_encoder_2./transformer.<module>.lora_A.weight / lora_B.weight) "
    "or kohya (lora_unet_/lora_te_/lora_te1_/lora_te2_<module>.lora_down.weight / lora_up.weight / alpha)"
)


class LoraError(ModelError):
    """A LoRA file that cannot be used: wrong type, too big, unknown keys, or made for another model."""


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA applied at one scale: what a LoraModel carries and its fingerprint names."""

    path: str
    content_hash: str  # blake3 of the file's bytes
    scale: float
    components: tuple[str, ...]  # what it changes, e.g. ("unet",) or ("text_encoder", "unet")
    layout: str  # "diffusers" | "kohya"

    @property
    def adapter(self) -> str:
        # The adapter's name inside the modules: one per file content, so the same file applied
        # by two nodes (or two workflows) is loaded once.
        return f"eg_{self.content_hash[:20]}"

    @property
    def token(self) -> str:
        return f"+lora[{','.join(self.components)}]{self.content_hash}*{self.scale!r}"


# --- reading -------------------------------------------------------------------------------------


def check_lora_file(path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """(layout, tensor names) of a LoRA file, from its header alone; LoraError for anything else."""
    p = Path(path)
    if p.suffix.lower() != LORA_SUFFIX:
        raise LoraError(
            f"LoRA {str(p)!r}: editgraph reads LoRAs from {LORA_SUFFIX} files only, got {p.suffix or 'no suffix'!r} "
            "(.ckpt/.pt/.bin are pickles, which can run code when loaded)"
        )
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise LoraError(f"LoRA {str(p)!r} is not a regular file")
    except FileNotFoundError:
        raise LoraError(f"LoRA file not found: {p}") from None
    if size > MAX_LORA_BYTES:
        raise LoraError(f"LoRA {str(p)!r} is {size} bytes; at most {MAX_LORA_BYTES} are allowed")
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LoraError(f"LoRA {str(p)!r} is not a safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n + 8 > size:
            raise LoraError(f"LoRA {str(p)!r} is not a safetensors file (header length {n} in a {size}-byte file)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        raise LoraError(f"LoRA {str(p)!r} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise LoraError(f"LoRA {str(p)!r} is not a safetensors file (its header is not a JSON object)")
    names = sorted(k for k in header if k != "__metadata__")
    if not names:
        raise LoraError(f"LoRA {str(p)!r} holds no tensors")
    layouts = {"kohya" if _KOHYA_KEY.match(k) else "diffusers" if _DIFFUSERS_KEY.match(k) else "?" for k in names}
    unknown = [k for k in names if not (_KOHYA_KEY.match(k) or _DIFFUSERS_KEY.match(k))]
    if unknown:
        raise LoraError(
            f"LoRA {str(p)!r} has {len(unknown)} tensor name(s) that are not LoRA weights, e.g. {unknown[0]!r}; "
            f"allowed: {ALLOWED_KEYS}"
        )
    if len(layouts) > 1:
        raise LoraError(f"LoRA {str(p)!r} mixes kohya and diffusers tensor names; allowed: one of {ALLOWED_KEYS}")
    return layouts.pop(), names


def read_tensors(path: str | os.PathLike[str], content_hash: str) -> dict[str, Any]:
    """The file's tensors, from bytes whose hash is checked against the one the run was keyed by."""
    import blake3
    from safetensors.torch import load

    check_lora_file(path)
    data = Path(path).read_bytes()
    found = blake3.blake3(data).hexdigest()
    if found != content_hash:
        raise LoraError(f"LoRA {os.fspath(path)!r} changed while the run was using it (hash {found[:12]}, expected {content_hash[:12]})")
    try:
        return load(data)
    except Exception as exc:  # a torn file: name it, keep the reader's reason
        raise LoraError(f"cannot read LoRA {os.fspath(path)!r}: {type(exc).__name__}: {exc}") from None


# --- which diffusers loader speaks for a model ------------------------------------------------------


def _mixin(model: Any) -> type:
    """The diffusers LoRA loader mixin of the model's pipeline (what pipe.load_lora_weights runs)."""
    import diffusers
    from diffusers.loaders.lora_base import LoraBaseMixin

    pipeline = getattr(model, "pipeline", None)
    if pipeline is None:  # a Stable Diffusion model
        family = getattr(model, "family", "")
        from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

        return StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    cls = getattr(diffusers, pipeline, None)
    for base in getattr(cls, "__mro__", ()):
        if issubclass(base, LoraBaseMixin) and base is not LoraBaseMixin and base.__module__.startswith("diffusers.loaders"):
            return base
    raise LoraError(f"model {model.name!r} is a {pipeline}, which diffusers cannot load LoRAs into")


def _loader(mixin: type, modules: dict[str, Any]) -> Any:
    """A stand-in pipeline holding only `modules`, so the mixin's own load_lora_weights runs on them."""

    class Loader(mixin):  # type: ignore[misc, valid-type]
        hf_device_map = None

        def __init__(self) -> None:
            for comp in mixin._lora_loadable_modules:
                setattr(self, comp, modules.get(comp))

        @property
        def components(self) -> dict[str, Any]:
            return {c: m for c, m in modules.items() if m is not None}

    return Loader()


def lora_components(model: Any, tensors: dict[str, Any], where: str) -> tuple[str, ...]:
    """The components of `model` a LoRA's tensors change, after the family's own conversion."""
    mixin = _mixin(model)
    try:
        converted = mixin.lora_state_dict(dict(tensors))
    except Exception as exc:
        raise LoraError(f"{where}: diffusers cannot read it as a LoRA for {_what(model)}: {type(exc).__name__}: {exc}") from None
    state = converted[0] if isinstance(converted, tuple) else converted
    prefixes = sorted({k.split(".", 1)[0] for k in state})
    loadable = list(mixin._lora_loadable_modules)
    foreign = [p for p in prefixes if p not in loadable]
    if foreign or not prefixes:
        raise LoraError(
            f"{where}: its weights are for {', '.join(foreign) or 'nothing'}, but a LoRA for {_what(model)} "
            f"changes only {', '.join(loadable)}"
        )
    return tuple(prefixes)


def _what(model: Any) -> str:
    return f"model {model.name!r} ({getattr(model, 'pipeline', None) or model.family})"


# --- the model a LoRA'd graph carries ----------------------------------------------------------------


class LoraModel(Model):
    """A base model with LoRAs applied (in order, each at its scale). Everything else is the base's."""

    def __init__(self, base: Any, loras: tuple[LoraSpec, ...]):
        self.__dict__["base"] = base
        self.__dict__["loras"] = loras

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)

    # Model declares these as class attributes: they must come from the base, not from Model.
    name = property(lambda self: self.base.name)  # type: ignore[assignment]
    family = property(lambda self: self.base.family)  # type: ignore[assignment]
    content_hash = property(lambda self: self.base.content_hash)  # type: ignore[assignment]

    def __fingerprint__(self) -> str:
        return self.base.__fingerprint__() + "".join(spec.token for spec in self.loras)

    def using(self, components: tuple[str, ...] | None = None):
        return activate(self.base, self.loras, components)

    def __repr__(self) -> str:
        applied = ", ".join(f"{Path(s.path).name}@{s.scale}" for s in self.loras)
        return f"LoraModel({self.base.name!r}, {applied})"


class _BaseState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.used = False  # whether any LoRA was ever loaded into this base model's modules


_states: weakref.WeakKeyDictionary[Any, _BaseState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(base: Any, create: bool) -> _BaseState | None:
    with _states_lock:
        state = _states.get(base)
        if state is None and create:
            state = _states[base] = _BaseState()
        return state


def base_using(base: Any, components: tuple[str, ...] | None = None):
    """For the plain model: nothing to do unless a LoRA was loaded into its modules, then switch
    those adapters off for the node's duration."""
    state = _state(base, create=False)
    if state is None or not state.used:
        return nullcontext()
    return activate(base, (), components)


def _module(base: Any, comp: str, load: bool) -> Any:
    """The component's module: loading it only when `load` (a lazily loaded model's idle parts stay
    unread); None when the model has no such component or it is not loaded."""
    if hasattr(base, "component"):  # flow models load lazily
        if not base.has(comp):
            return None
        if load or comp in base.loaded_components():
            return base.component(comp)
        return None
    return getattr(base, comp, None)


def _has_adapter(module: Any, adapter: str) -> bool:
    return adapter in (getattr(module, "peft_config", None) or {})


def _lora_layers(module: Any, adapter: str) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for m in module.modules() if isinstance(m, BaseTunerLayer) and adapter in getattr(m, "lora_A", {}))


def _ensure_loaded(base: Any, spec: LoraSpec, state: _BaseState) -> None:
    """Load the LoRA into every component it changes, unless all of them hold it already."""
    mixin = _mixin(base)
    if all(_has_adapter(_module(base, c, load=True), spec.adapter) for c in spec.components):
        return
    # The mixins' load_lora_weights always reach for the denoiser and skip a text encoder the
    # LoRA has no weights for: read what the LoRA changes and the denoiser, pass the rest as they
    # are (a lazily loaded text encoder stays unread for a transformer-only LoRA).
    modules = {
        c: _module(base, c, load=c in spec.components or c in ("unet", "transformer"))
        for c in mixin._lora_loadable_modules
    }
    for comp, m in modules.items():  # a component released and reloaded lost it; the others keep theirs
        if m is not None and _has_adapter(m, spec.adapter):
            _delete(m, spec.adapter)
    tensors = read_tensors(spec.path, spec.content_hash)
    state.used = True
    try:
        _loader(mixin, modules).load_lora_weights(tensors, adapter_name=spec.adapter)
    except Exception as exc:  # peft: "Target modules ... not found", shape mismatches
        for m in modules.values():
            if m is not None and _has_adapter(m, spec.adapter):
                _delete(m, spec.adapter)
        raise LoraError(f"LoRA {spec.path!r} does not fit {_what(base)}: {type(exc).__name__}: {exc}") from None
    # peft only warns about LoRA layers that match no module of the model: count them instead.
    expected = _layer_counts(mixin, tensors)
    short = []
    for comp in spec.components:
        found = _lora_layers(modules[comp], spec.adapter) if modules.get(comp) is not None else 0
        if found == 0 or found < expected.get(comp, 0):
            short.append(f"{expected.get(comp, '?')} LoRA layers for the {comp}, {found} of them found in it")
    if short:
        for m in modules.values():
            if m is not None and _has_adapter(m, spec.adapter):
                _delete(m, spec.adapter)
        raise LoraError(f"LoRA {spec.path!r} does not fit {_what(base)} ({'; '.join(short)}): it was made for another model")


_DOWN_KEY = re.compile(
    r"^(?P<comp>[^.]+)\.(?P<module>.+?)(\.lora_A(\.[^.]+)?|\.lora\.down|_lora\.down|\.lora_linear_layer\.down|\.lora_down)\.weight$"
)


def _layer_counts(mixin: type, tensors: dict[str, Any]) -> dict[str, int]:
    """How many layers the LoRA adapts in each component, from its keys as diffusers converts them."""
    converted = mixin.lora_state_dict(dict(tensors))
    state = converted[0] if isinstance(converted, tuple) else converted
    layers: dict[str, set[str]] = {}
    for key in state:
        m = _DOWN_KEY.match(key)
        if m:
            layers.setdefault(m["comp"], set()).add(m["module"])
    return {comp: len(mods) for comp, mods in layers.items()}


def _delete(module: Any, adapter: str) -> None:
    from diffusers.models.modeling_utils import ModelMixin

    if isinstance(module, ModelMixin):
        module.delete_adapters(adapter)
    else:
        from diffusers.utils.peft_utils import delete_adapter_layers

        delete_adapter_layers(module, adapter)


def _set(module: Any, wanted: list[tuple[str, float]]) -> None:
    """Activate exactly `wanted` (adapter, scale) on the module, or switch its adapters off."""
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.utils.peft_utils import set_adapter_layers

    if not getattr(module, "peft_config", None):
        return  # never held a LoRA: nothing to switch
    if not wanted:
        set_adapter_layers(module, enabled=False)
        return
    names, weights = [n for n, _ in wanted], [w for _, w in wanted]
    set_adapter_layers(module, enabled=True)
    if isinstance(module, ModelMixin):
        module.set_adapters(names, weights)  # what pipe.set_adapters does for a UNet/transformer
    else:
        set_adapters_for_text_encoder(names, module, weights)  # ... and for a text encoder


@contextmanager
def activate(base: Any, loras: tuple[LoraSpec, ...], components: tuple[str, ...] | None) -> Iterator[None]:
    """Hold the base model's modules in the state `loras` asks for (the plain model: no adapters)
    while a node that uses `components` (None: all) runs."""
    state = _state(base, create=True)
    assert state is not None
    with state.lock:
        comps = list(_mixin(base)._lora_loadable_modules) if loras or state.used else []
        if components is not None:
            comps = [c for c in comps if c in components]
        for spec in loras:
            if any(c in comps for c in spec.components):
                _ensure_loaded(base, spec, state)
        for comp in comps:
            module = _module(base, comp, load=False)
            if module is not None:
                _set(module, [(s.adapter, s.scale) for s in loras if comp in s.components])
        yield


# --- names ---------------------------------------------------------------------------------------


def resolve_lora(path: str | os.PathLike[str]) -> Path:
    """The file a workflow's LoRA path names: the path itself (relative ones are already resolved
    against the workflow's folder), else its last part as a name in the model registry (a
    .safetensors file in an EDITGRAPH_MODELS folder is registered under its stem)."""
    from editgraph.models import names

    p = Path(path).expanduser()
    if p.exists():
        return p
    with_suffix = Path(f"{p}{LORA_SUFFIX}")  # "detail" names detail.safetensors beside the workflow
    if p.suffix.lower() != LORA_SUFFIX and with_suffix.is_file():
        return with_suffix
    known = names.registered()
    for name in (p.name, p.stem):
        target = known.get(name)
        if target is not None and target.is_file():
            return target
    raise LoraError(
        f"LoRA file not found: nothing at {p}, and no .safetensors file registered as {p.stem!r} "
        f"(register one with EDITGRAPH_MODELS=/folder/holding/loras or in {names.config_file()})"
    )


_components_memo: dict[tuple[str, str], tuple[str, ...]] = {}


def make_spec(model: Any, path: Path, content_hash: str, scale: float, layout: str) -> LoraSpec:
    """The LoraSpec of a file on `model` (a base model): converts it once per (file, loader) to
    learn which components it changes, and checks that they exist in the model."""
    memo = (content_hash, _mixin(model).__name__)
    components = _components_memo.get(memo)
    if components is None:
        components = lora_components(model, read_tensors(path, content_hash), f"LoRA {str(path)!r}")
        _components_memo[memo] = components
    absent = [c for c in components if _module_exists(model, c) is False]
    if absent:
        raise LoraError(f"LoRA {str(path)!r} changes the {', '.join(absent)}, which {_what(model)} does not have")
    return LoraSpec(str(path), content_hash, float(scale), components, layout)


def _module_exists(model: Any, comp: str) -> bool:
    if hasattr(model, "has"):
        return bool(model.has(comp))
    return getattr(model, comp, None) is not None
