"""A dated price table per hosted model, in USD, priced the way each provider bills.

- OpenAI GPT Image: tokens. Text and image input, cached image input and image output are priced
  per million tokens; the edit response's `usage` reports them, so the spend is exact. Estimates
  use OpenAI's published output-token counts per quality and size (272 / 1056 / 4160 tokens for a
  1024x1024 low / medium / high image).
- Gemini image models: tokens. `usageMetadata.promptTokenCount` and `candidatesTokenCount`; an
  output image of up to 1024 px is 1290 tokens.
- Black Forest Labs: credits (1 credit = $0.01). FLUX.1 Kontext is a flat price per image; FLUX.2
  is priced by megapixel (first output MP, each further MP, each input MP), and its submit
  response reports the `cost` in credits, which is what we charge when present.

Prices change: the table carries the date it was read (AS_OF). Override or add a model in the
engines config file under "prices", e.g. {"openai:gpt-image-1": {"image_out_per_m": 30.0}}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from editgraph.errors import EditgraphError

AS_OF = "2026-11-29"

# OpenAI's image-output token counts per quality and size (platform pricing guide).
OPENAI_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
# Not published as a table: a 1024 px input image at the default fidelity is assumed to be
# about this many input tokens, for estimates only (actual spend uses the reported usage).
OPENAI_INPUT_IMAGE_TOKENS_ESTIMATE = 1000
GEMINI_IMAGE_OUT_TOKENS = 1290  # per output image up to 1024x1024 (Gemini pricing page)
GEMINI_IMAGE_IN_TOKENS = 258  # per input image up to 384 px a side; larger ones tile (estimate)


@dataclass(frozen=True)
class Price:
    kind: Literal["tokens", "image", "megapixel"]
    source: str  # where the number was read
    # tokens: USD per million
    text_in_per_m: float = 0.0
    text_in_cached_per_m: float = 0.0
    image_in_per_m: float = 0.0
    image_in_cached_per_m: float = 0.0
    out_per_m: float = 0.0
    # image: USD per output image
    per_image: float = 0.0
    # megapixel: USD
    first_mp: float = 0.0
    extra_mp: float = 0.0
    input_mp: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)


TABLE: dict[str, Price] = {
    "openai:gpt-image-1": Price(
        "tokens", "https://platform.openai.com/docs/pricing (gpt-image-1)",
        text_in_per_m=5.00, text_in_cached_per_m=1.25, image_in_per_m=10.00, image_in_cached_per_m=2.50, out_per_m=40.00,
    ),
    "gemini:gemini-2.5-flash-image": Price(
        "tokens", "https://ai.google.dev/gemini-api/docs/pricing (Gemini 2.5 Flash Image)",
        text_in_per_m=0.30, image_in_per_m=0.30, out_per_m=30.00,
    ),
    "bfl:flux-kontext-pro": Price("image", "https://bfl.ai/pricing (FLUX.1 Kontext [pro])", per_image=0.04),
    "bfl:flux-kontext-max": Price("image", "https://bfl.ai/pricing (FLUX.1 Kontext [max])", per_image=0.08),
    "bfl:flux-pro-1.0-fill": Price("image", "https://bfl.ai/pricing (FLUX.1 Fill [pro])", per_image=0.05),
    "bfl:flux-2-pro": Price(
        "megapixel", "https://bfl.ai/pricing (FLUX.2 [pro]: 3c first MP, 1.5c each further output or input MP)",
        first_mp=0.03, extra_mp=0.015, input_mp=0.015,
    ),
}


def price_of(engine: str, overrides: dict[str, Any] | None = None) -> Price:
    """The price for 'provider:model', with the config file's overrides applied."""
    base = TABLE.get(engine)
    change = (overrides or {}).get(engine)
    if change is not None:
        if not isinstance(change, dict):
            raise EditgraphError(f"engines config: prices.{engine} must be an object of price fields")
        allowed = {f.name for f in dataclasses.fields(Price)} - {"notes"}
        unknown = set(change) - allowed
        if unknown:
            raise EditgraphError(f"engines config: prices.{engine} has unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        base = dataclasses.replace(base, **change) if base else Price(**{"source": "engines config", **change})
    if base is None:
        raise EditgraphError(
            f"no price for {engine!r} (table of {AS_OF}: {', '.join(TABLE)}); add it under 'prices' in the engines config"
        )
    return base


def per_m(tokens: float, usd_per_million: float) -> float:
    return tokens * usd_per_million / 1_000_000
