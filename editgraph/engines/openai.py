"""OpenAI Images API with the GPT Image models.

Follows https://platform.openai.com/docs/api-reference/images:
- POST {base}/images/edits, multipart/form-data: `image[]` (one file per input picture: the source
  first, then references), optional `mask` (a PNG the size of the first image whose fully
  transparent pixels, alpha 0, mark where to edit), `prompt`, `model`, `n`, `size`
  (1024x1024 | 1536x1024 | 1024x1536 | auto), `quality` (low | medium | high | auto).
- POST {base}/images/generations, JSON {model, prompt, n, size, quality} when there is no source.
- 200: {"created", "data": [{"b64_json"}...], "usage": {"input_tokens", "input_tokens_details":
  {"text_tokens", "image_tokens"}, "output_tokens", "total_tokens"}}; the request id is the
  `x-request-id` response header.
- Errors: {"error": {"message", "type", "param", "code"}}; a refusal by the safety system is a
  400 with code "moderation_blocked".
No seed parameter: candidates differ by call, and nothing replays from a seed.
"""

from __future__ import annotations

import base64
from typing import Any

from editgraph.engines.base import CallRecord, EditJob, JobShape, png_bytes
from editgraph.engines.client import Client
from editgraph.engines.credentials import ProviderConfig
from editgraph.engines.errors import MalformedResponse
from editgraph.engines.hosted import HostedEngine
from editgraph.engines.prices import OPENAI_INPUT_IMAGE_TOKENS_ESTIMATE, OPENAI_OUTPUT_TOKENS, per_m

SIZES = ("1024x1024", "1536x1024", "1024x1536")


def read_error(status: int, body: Any) -> tuple[bool, str]:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return False, str(body)[:500]
    code = str(err.get("code") or "")
    refused = code in ("moderation_blocked", "content_policy_violation")
    return refused, f"{err.get('message') or 'no message'}" + (f" [{code}]" if code else "")


class OpenAIEngine(HostedEngine):
    provider = "openai"
    supports = frozenset({"inpaint", "reference", "instruction", "generate"})
    max_references = 15  # the edits endpoint takes up to 16 images

    def error_reader(self):
        return read_error

    def _size(self, shape: JobShape) -> str:
        if shape.size != "auto":
            return shape.size
        if shape.operation == "generate":
            return "1024x1024"
        # the documented size closest to the source's aspect: the result is resized back to it
        return "1536x1024" if shape.width > shape.height * 1.2 else "1024x1536" if shape.height > shape.width * 1.2 else "1024x1024"

    def estimate(self, shape: JobShape) -> float:
        price = self.price()
        quality = shape.quality if shape.quality in OPENAI_OUTPUT_TOKENS else "high"  # auto may pick high: bound it
        out_tokens = OPENAI_OUTPUT_TOKENS[quality].get(self._size(shape), OPENAI_OUTPUT_TOKENS[quality]["1536x1024"])
        images_in = (0 if shape.operation == "generate" else 1) + shape.references
        text_tokens = shape.instruction_chars / 4
        per_call = (
            per_m(text_tokens, price.text_in_per_m)
            + per_m(images_in * OPENAI_INPUT_IMAGE_TOKENS_ESTIMATE, price.image_in_per_m)
            + per_m(out_tokens * shape.n, price.out_per_m)
        )
        return per_call

    def cost(self, usage: dict[str, Any]) -> float:
        price = self.price()
        details = usage.get("input_tokens_details") or {}
        text = float(details.get("text_tokens", 0) or 0)
        image = float(details.get("image_tokens", 0) or 0)
        cached = float(details.get("cached_tokens", 0) or 0)  # billed at the cached image rate
        if not details:  # only a total: bill it all as image input, the dearer kind
            image = float(usage.get("input_tokens", 0) or 0)
        image = max(0.0, image - cached)
        return (
            per_m(text, price.text_in_per_m) + per_m(image, price.image_in_per_m)
            + per_m(cached, price.image_in_cached_per_m) + per_m(float(usage.get("output_tokens", 0) or 0), price.out_per_m)
        )

    def call(self, client: Client, config: ProviderConfig, job: EditJob) -> tuple[list[bytes], CallRecord]:
        from editgraph.engines.base import shape_of

        headers = {"Authorization": f"Bearer {config.key()}"}
        fields = {"model": self.model, "prompt": job.instruction, "n": str(job.n), "size": self._size(shape_of(job))}
        if job.quality != "auto":
            fields["quality"] = job.quality
        if job.image is None:
            body, resp = client.json("POST", f"{config.base_url}/images/generations", headers=headers, json={**fields, "n": job.n})
        else:
            files: list[tuple[str, tuple[str, bytes, str]]] = [("image[]", ("source.png", png_bytes(job.image), "image/png"))]
            for i, ref in enumerate(job.references, start=1):
                files.append(("image[]", (f"reference-{i}.png", png_bytes(ref), "image/png")))
            if job.mask is not None:
                # OpenAI edits where the mask is transparent: alpha = 1 - ours (1 = change)
                files.append(("mask", ("mask.png", png_bytes(job.image, alpha=1.0 - job.mask.clamp(0, 1)), "image/png")))
            body, resp = client.json("POST", f"{config.base_url}/images/edits", headers=headers, data=fields, files=files)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            raise MalformedResponse(self.provider, f"no 'data' list of images in the response: {str(body)[:200]}", status=resp.status)
        blobs = []
        for i, item in enumerate(data):
            b64 = item.get("b64_json") if isinstance(item, dict) else None
            if not isinstance(b64, str):
                raise MalformedResponse(self.provider, f"data[{i}] has no b64_json image", status=resp.status)
            try:
                blobs.append(base64.b64decode(b64, validate=True))
            except ValueError:
                raise MalformedResponse(self.provider, f"data[{i}].b64_json is not base64", status=resp.status) from None
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        cost = self.cost(usage) if usage else self.estimate(shape_of(job))
        record = CallRecord(
            self.name, self.provider, self.model, resp.headers.get("x-request-id"), usage, round(cost, 6),
            seed=None, reproducible=False, images=len(blobs),
        )
        return blobs, record
