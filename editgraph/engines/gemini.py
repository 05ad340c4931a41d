"""Google Gemini image models ("Nano Banana": gemini-2.5-flash-image and successors).

Follows https://ai.google.dev/api/generate-content and the image-generation guide
(https://ai.google.dev/gemini-api/docs/image-generation):
- POST {base}/models/{model}:generateContent, header `x-goog-api-key`, JSON
  {"contents": [{"role": "user", "parts": [{"text": ...}, {"inline_data": {"mime_type": "image/png",
  "data": <base64>}}, ...]}], "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
  "imageConfig": {"aspectRatio": "16:9"}, "seed": 7}}.
- 200: {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType", "data"}}, {"text"}]},
  "finishReason"}], "usageMetadata": {"promptTokenCount", "candidatesTokenCount",
  "totalTokenCount"}, "responseId", "modelVersion"}.
- Refusals: "promptFeedback": {"blockReason", "blockReasonMessage"} with no candidates, or a
  candidate whose finishReason is SAFETY / IMAGE_SAFETY / PROHIBITED_CONTENT / ... and no image.
- Errors: {"error": {"code", "message", "status"}}.
No mask parameter: masked edits route to an inpainting engine. One image per call; n > 1 makes
n calls with seeds seed, seed+1, ...
"""

from __future__ import annotations

import base64
from typing import Any

from editgraph.engines.base import CallRecord, EditJob, JobShape, png_bytes
from editgraph.engines.client import Client
from editgraph.engines.credentials import ProviderConfig
from editgraph.engines.errors import MalformedResponse, ProviderRefused
from editgraph.engines.hosted import HostedEngine
from editgraph.engines.prices import GEMINI_IMAGE_IN_TOKENS, GEMINI_IMAGE_OUT_TOKENS, per_m

REFUSAL_FINISH = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})


def read_error(status: int, body: Any) -> tuple[bool, str]:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return False, str(body)[:500]
    return False, f"{err.get('message') or 'no message'}" + (f" [{err['status']}]" if err.get("status") else "")


class GeminiEngine(HostedEngine):
    provider = "gemini"
    supports = frozenset({"reference", "instruction", "generate"})
    takes_seed = True
    max_references = 2  # the guide recommends up to three input images in all

    def error_reader(self):
        return read_error

    def estimate(self, shape: JobShape) -> float:
        price = self.price()
        images_in = (0 if shape.operation == "generate" else 1) + shape.references
        per_call = per_m(shape.instruction_chars / 4, price.text_in_per_m) + per_m(images_in * GEMINI_IMAGE_IN_TOKENS, price.image_in_per_m)
        return shape.n * (per_call + per_m(GEMINI_IMAGE_OUT_TOKENS, price.out_per_m))

    def cost(self, usage: dict[str, Any]) -> float:
        price = self.price()
        return per_m(float(usage.get("promptTokenCount", 0) or 0), price.text_in_per_m) + per_m(
            float(usage.get("candidatesTokenCount", 0) or 0), price.out_per_m
        )

    def call(self, client: Client, config: ProviderConfig, job: EditJob) -> tuple[list[bytes], CallRecord]:
        headers = {"x-goog-api-key": config.key()}
        parts: list[dict[str, Any]] = [{"text": job.instruction}]
        for picture in ([job.image] if job.image is not None else []) + list(job.references):
            parts.append({"inline_data": {"mime_type": "image/png", "data": base64.b64encode(png_bytes(picture)).decode()}})
        blobs, usage_total, ids = [], {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}, []
        for i in range(job.n):
            config_: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
            if ":" in job.size:
                config_["imageConfig"] = {"aspectRatio": job.size}
            if job.seed is not None:
                config_["seed"] = (job.seed + i) % 2**31  # an int32 in the API
            body, resp = client.json(
                "POST", f"{config.base_url}/models/{self.model}:generateContent", headers=headers,
                json={"contents": [{"role": "user", "parts": parts}], "generationConfig": config_},
            )
            blobs.append(self._image(body, resp.status))
            usage = body.get("usageMetadata") or {}
            for k in usage_total:
                usage_total[k] += int(usage.get(k, 0) or 0)
            if body.get("responseId"):
                ids.append(str(body["responseId"]))
        record = CallRecord(
            self.name, self.provider, self.model, ",".join(ids) or None, usage_total, round(self.cost(usage_total), 6),
            seed=job.seed, reproducible=False, images=len(blobs),
        )
        return blobs, record

    def _image(self, body: Any, status: int) -> bytes:
        if not isinstance(body, dict):
            raise MalformedResponse(self.provider, "the response is not a JSON object", status=status)
        feedback = body.get("promptFeedback") or {}
        if feedback.get("blockReason"):
            why = feedback.get("blockReasonMessage") or ""
            raise ProviderRefused(self.provider, f"prompt blocked: {feedback['blockReason']}" + (f" ({why})" if why else ""), status=status)
        candidates = body.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            raise MalformedResponse(self.provider, f"no candidates in the response: {str(body)[:200]}", status=status)
        first = candidates[0] if isinstance(candidates[0], dict) else {}
        texts = []
        for part in (first.get("content") or {}).get("parts") or []:
            inline = part.get("inlineData") or part.get("inline_data") if isinstance(part, dict) else None
            if isinstance(inline, dict) and str(inline.get("mimeType") or inline.get("mime_type") or "").startswith("image/"):
                try:
                    return base64.b64decode(inline.get("data") or "", validate=True)
                except ValueError:
                    raise MalformedResponse(self.provider, "inlineData.data is not base64", status=status) from None
            if isinstance(part, dict) and part.get("text"):
                texts.append(str(part["text"]))
        finish = str(first.get("finishReason") or "")
        said = f"; the model said: {' '.join(texts)[:300]!r}" if texts else ""
        if finish in REFUSAL_FINISH:
            raise ProviderRefused(self.provider, f"no image: finishReason {finish}{said}", status=status)
        raise MalformedResponse(self.provider, f"no image part in the response (finishReason {finish or 'none'}){said}", status=status)
