"""CPU offload modes: run a model bigger than the accelerator's memory, with diffusers' own hooks.

    none        every component lives on the run device (the default)
    model       enable_model_cpu_offload's way: components live on the CPU; the ones a node uses move
                to the run device while that node runs, and back when it ends (accelerate's
                `cpu_offload_with_hook`, the hook diffusers' pipelines install)
    group       diffusers' `apply_group_offloading(offload_type="block_level")`: each block of the
                UNet / transformer / text encoder moves in just before it runs and out after;
                the VAE, used through encode()/decode() rather than forward(), at leaf level
    sequential  `apply_group_offloading(offload_type="leaf_level")` on every component: one layer
                on the device at a time (what enable_sequential_cpu_offload does, via diffusers' hooks)

A mode is a run option, never a workflow param and never in a cache key: moving weights between
devices changes no arithmetic, so every mode gives the same bytes (tests/models/test_offload.py).
Models load onto the CPU when a mode is on (`load_device`), so a 24 B text encoder is never asked
to fit on a 24 GB card in one piece. On a CPU-only machine the onload device is the CPU itself:
the hooks run but save nothing, so the same command runs unchanged where a GPU is.

Placement is per module and idempotent: a module carries the mode it was placed for, and a run
with another mode (models are shared by every run of a process) takes the old hooks off first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from editgraph.settings import OFFLOAD_MODES as MODES  # noqa: F401  (the modes, named here for callers)

_MARK = "_editgraph_offload"  # (mode, onload device, parameter count) a module was placed for
_GROUP_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")  # diffusers' names


def load_device(run_device: Any, mode: str) -> Any:
    """Where model.load puts weights: the run device, or the CPU (the offload device) when a mode is on."""
    import torch

    return torch.device(run_device if run_device is not None else "cpu") if mode == "none" else torch.device("cpu")


def execution_device(module: Any) -> Any:
    """The device a module computes on: the onload device when it is offloaded (its parameters then
    sit on the CPU between calls, so `module.device` would say cpu), else where its weights are.
    Inputs made for a module go here."""
    import torch

    mark = getattr(module, _MARK, None)
    if mark is not None and mark[0] != "none":
        return torch.device(mark[1])
    return module.device


def _modules(model: Any, components: tuple[str, ...] | None) -> Iterator[tuple[str, Any]]:
    """(component, loaded torch module) for the components named (all when None); unloaded parts of
    a lazily loaded model are skipped (they are placed as they load, see `running`)."""
    import torch

    names = components if components is not None else model.component_names()
    for comp in names:
        module = model.loaded(comp)
        if isinstance(module, torch.nn.Module):
            yield comp, module


def _strip(module: Any) -> None:
    """Take off every offload hook a module carries (accelerate's and diffusers'), on all its submodules."""
    from accelerate.hooks import remove_hook_from_module
    from diffusers.hooks import HookRegistry

    if hasattr(module, "_hf_hook"):
        remove_hook_from_module(module, recurse=True)
    if any(hasattr(m, "_diffusers_hook") for m in module.modules()):
        registry = HookRegistry.check_if_exists_or_initialize(module)
        for name in _GROUP_HOOKS:
            registry.remove_hook(name, recurse=True)


def place(module: Any, comp: str, mode: str, device: Any) -> None:
    """Install `mode`'s hooks on one component's module, onloading to `device` (idempotent).

    The parameter count is part of the mark: a LoRA loaded into a placed module adds layers the
    hooks do not know of, so the module is placed again."""
    import torch

    current = getattr(module, _MARK, None)
    if current is None and mode == "none":
        return  # the common case: never offloaded, nothing to undo
    device = torch.device(device)
    mark = (mode, str(device), sum(1 for _ in module.parameters()))
    if current == mark:
        return
    if current is not None:
        _strip(module)
    if mode == "none":
        module.to(device)
    elif mode == "model":
        from accelerate import cpu_offload_with_hook

        module.to("cpu")
        cpu_offload_with_hook(module, device)  # the hook enable_model_cpu_offload installs
    else:
        from diffusers.hooks import apply_group_offloading

        module.to("cpu")
        # The VAE is called through encode()/decode(), which fire no forward hook of the module
        # itself: at leaf level every layer onloads on its own call.
        level = "block_level" if mode == "group" and not comp.startswith("vae") else "leaf_level"
        blocks = {"num_blocks_per_group": 1} if level == "block_level" else {}
        apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"), offload_type=level, **blocks)
    setattr(module, _MARK, mark)


def mode_of(module: Any) -> str:
    """The mode a module was placed for ("none" when never placed)."""
    mark = getattr(module, _MARK, None)
    return "none" if mark is None else mark[0]


@contextmanager
def running(model: Any, components: tuple[str, ...] | None, mode: str, device: Any) -> Iterator[None]:
    """While a node runs with `model`, using `components` (None: all): every loaded one is placed
    for `mode`; a component the node loads lazily is placed as it loads; in "model" mode the
    components are on `device` for the node's duration and back on the CPU after it."""
    while getattr(model, "base", None) is not None:  # a LoRA variant shares its base's modules
        model = model.base
    if not hasattr(model, "loaded"):  # a Model value holding no torch modules
        yield
        return
    onloaded: list[Any] = []

    def put(comp: str, module: Any) -> None:
        place(module, comp, mode, device)
        if mode == "model":
            module.to(device)  # before the node reads a weight outside forward() (flux2's VAE statistics)
            onloaded.append(module)

    for comp, module in list(_modules(model, components)):
        put(comp, module)
    lazy = hasattr(model, "placing")
    if lazy:
        model.placing = (components, put)
    try:
        yield
    finally:
        if lazy:
            model.placing = None
        for module in onloaded:
            module.to("cpu")  # what the hook's offload() does
