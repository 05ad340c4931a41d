"""Engine names -> engine objects: "provider:model", optionally with options from a routing
table entry ({"engine": "local:tiny-sd-inpaint", "steps": 4})."""

from __future__ import annotations

from typing import Any

from editgraph.engines.base import Engine
from editgraph.errors import EditgraphError

PROVIDER_NAMES = ("openai", "gemini", "bfl", "local")


def make_engine(name: str, options: dict[str, Any] | None = None) -> Engine:
    provider, sep, model = name.partition(":")
    if not sep or not model:
        raise EditgraphError(f"engine {name!r}: expected 'provider:model', e.g. openai:gpt-image-1; providers: {', '.join(PROVIDER_NAMES)}")
    options = dict(options or {})
    if provider == "local":
        from editgraph.engines.local import LocalEngine

        allowed = {"steps", "cfg", "image_cfg", "scheduler"}
        unknown = set(options) - allowed
        if unknown:
            raise EditgraphError(f"engine {name!r}: unknown options {sorted(unknown)}; allowed: {sorted(allowed)}")
        return LocalEngine(model, **options)
    if options:
        raise EditgraphError(f"engine {name!r}: hosted engines take no options here (got {sorted(options)}); set them on the node")
    if provider == "openai":
        from editgraph.engines.openai import OpenAIEngine

        return OpenAIEngine(model)
    if provider == "gemini":
        from editgraph.engines.gemini import GeminiEngine

        return GeminiEngine(model)
    if provider == "bfl":
        from editgraph.engines.bfl import BFLEngine

        return BFLEngine(model)
    raise EditgraphError(f"engine {name!r}: unknown provider {provider!r}; known: {', '.join(PROVIDER_NAMES)}")
