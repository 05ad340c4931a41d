"""The value a `model.load` node outputs: loaded diffusers components plus what identifies them.

It flows along `Model` sockets, lives only in memory (one load per process, see models/cache.py),
and is keyed by `content_hash`, the hash of the model's files, so two machines holding the same
weights share cache entries and a changed file invalidates everything made with it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from editgraph.values.sockets import Model

Family = Literal["sd1", "sd2", "sdxl"]


@dataclass(eq=False, kw_only=True)
class LazyParts:
    """Components read on first use (`component`, through each handle's own `_load`) and dropped on
    request, under one re-entrant lock: flow models and IP-Adapters. The executor releases the
    ones no node left in a run needs (executor/components.py)."""

    _parts: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.RLock, repr=False)
    # While a node runs under a CPU offload mode: (its components or None for all, place(comp,
    # module)), so a component it loads lazily is placed too (models/offload.py). None otherwise.
    placing: Any = field(default=None, repr=False, compare=False)

    def _load(self, comp: str) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not say how to load {comp!r}")

    def component(self, comp: str) -> Any:
        """The loaded component `comp`, read from disk the first time it is asked for, and placed
        for the running node's offload mode when that node uses it (torch modules only)."""
        with self._lock:
            if comp not in self._parts:
                module = self._parts[comp] = self._load(comp)
                placing = self.placing
                if placing is not None and (placing[0] is None or comp in placing[0]) and hasattr(module, "requires_grad_"):
                    placing[1](comp, module)
            return self._parts[comp]

    def loaded(self, comp: str) -> Any:
        """A component if it is loaded, else None (never reads from disk)."""
        with self._lock:
            return self._parts.get(comp)

    def loaded_components(self) -> list[str]:
        with self._lock:
            return sorted(self._parts)

    def release(self, *comps: str) -> list[str]:
        """Drop components (all when none named) so their memory can go; returns what was dropped."""
        import gc

        with self._lock:
            doomed = [c for c in (comps or tuple(self._parts)) if c in self._parts]
            for c in doomed:
                del self._parts[c]
        if doomed:
            gc.collect()
        return doomed


Kind = Literal["base", "inpaint", "instruct"]  # UNet in-channels 4, 9, 8


# kw_only: Model's class attributes (name, family, content_hash = "") become inherited defaults,
# and positional dataclass fields without defaults may not follow fields with them.
@dataclass(eq=False, kw_only=True)
class DiffusionModel(Model):
    name: str  # what the workflow called it ("tiny-sd", "sd15", a path)
    path: str  # folder or .safetensors file it was loaded from
    family: Family
    kind: Kind
    content_hash: str  # blake3 over the model's files (names, sizes, bytes)
    # repr=False: a module's repr is its whole layer tree, which would bury any message showing a model.
    unet: Any = field(repr=False)
    vae: Any = field(repr=False)
    text_encoder: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    scheduler_config: dict[str, Any] = field(repr=False)
    text_encoder_2: Any = field(default=None, repr=False)  # SDXL
    tokenizer_2: Any = field(default=None, repr=False)  # SDXL
    extra: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # the weights' dtype as loaded ("float32", "float16", "bfloat16")

    def __fingerprint__(self) -> str:
        # Half-precision weights give other numbers than the same files in float32, so they must
        # not share downstream cache entries. float32 keeps the plain form sockets.Model defines.
        base = f"model:{self.content_hash}"
        return base if self.dtype == "float32" else f"{base}:{self.dtype}"

    def using(self, components: tuple[str, ...] | None = None):
        # A LoRA variant of this model (models/lora.py) may have left adapters on in the shared
        # modules: the plain model runs with them off.
        from editgraph.models.lora import base_using

        return base_using(self, components)

    def component_names(self) -> tuple[str, ...]:
        return ("unet", "vae", "text_encoder", "text_encoder_2")

    def loaded(self, comp: str) -> Any:
        """A component's module (None for one this model has not, like SD 1.x's text_encoder_2)."""
        return getattr(self, comp, None) if comp in self.component_names() else None

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)
