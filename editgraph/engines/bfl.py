"""Black Forest Labs FLUX API: submit a task, poll its result URL, download the sample.

Follows https://docs.bfl.ai (OpenAPI at https://api.bfl.ai/openapi.json):
- POST {base}/{model}, header `x-key`, JSON. Models and their fields:
    flux-kontext-pro / flux-kontext-max: prompt, input_image (base64), input_image_2..4
        (experimental multi-reference), seed, aspect_ratio, output_format, safety_tolerance
    flux-2-pro: prompt, input_image, input_image_2..8, seed, width, height, output_format,
        safety_tolerance
    flux-pro-1.0-fill: image (base64), mask (base64, white = inpaint, black = keep), prompt,
        seed, output_format, safety_tolerance
  200: {"id", "polling_url"} (FLUX.2 adds "cost" in credits, "input_mp", "output_mp").
- GET polling_url (or {base}/get_result?id=), header `x-key`: {"id", "status", "result",
  "progress", "details"}; status is one of Ready | Pending | Request Moderated |
  Content Moderated | Task not found | Error. Ready: result.sample is a signed URL to the image,
  valid for 10 minutes; it is fetched without the key.
Moderated tasks are not charged (BFL help: "Request Moderated ... Not charged").
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

from editgraph.engines.base import CallRecord, EditJob, JobShape, png_bytes
from editgraph.engines.client import Client
from editgraph.engines.credentials import ProviderConfig
from editgraph.engines.errors import MalformedResponse, ProviderRefused, ProviderRejected, ProviderUnavailable
from editgraph.engines.hosted import HostedEngine

MODERATED = ("Request Moderated", "Content Moderated")
WORKING = ("Pending", "Processing", "Queued")  # Pending is documented; the others are seen in the wild


def read_error(status: int, body: Any) -> tuple[bool, str]:
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI's 422: [{"loc", "msg", "type"}]
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail if isinstance(d, dict))
        return False, str(detail or body)[:500]
    return False, str(body)[:500]


def _b64(image) -> str:
    return base64.b64encode(png_bytes(image)).decode()


class BFLEngine(HostedEngine):
    provider = "bfl"
    takes_seed = True

    def __init__(self, model: str):
        super().__init__(model)
        if model == "flux-pro-1.0-fill":
            self.supports = frozenset({"inpaint"})
            self.max_references = 0
        elif model.startswith("flux-2"):
            self.supports = frozenset({"reference", "instruction", "generate"})
            self.max_references = 7
        else:  # Kontext
            self.supports = frozenset({"reference", "instruction", "generate"})
            self.max_references = 3

    def error_reader(self):
        return read_error

    def estimate(self, shape: JobShape) -> float:
        price = self.price()
        if price.kind == "megapixel":
            out_mp = max(1.0, shape.width * shape.height / 1e6)
            in_mp = ((0 if shape.operation == "generate" else 1) + shape.references) * out_mp
            return shape.n * (price.first_mp + (out_mp - 1) * price.extra_mp + in_mp * price.input_mp)
        return shape.n * price.per_image

    def _body(self, job: EditJob, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": job.instruction, "output_format": "png"}
        if seed is not None:
            body["seed"] = seed
        if self.model == "flux-pro-1.0-fill":
            body["image"] = _b64(job.image)
            body["mask"] = _b64(job.mask.clamp(0, 1).expand(-1, 3, -1, -1))  # white = inpaint, like ours
            return body
        if job.image is not None:
            body["input_image"] = _b64(job.image)
        for i, ref in enumerate(job.references, start=2):
            body[f"input_image_{i}"] = _b64(ref)
        if self.model.startswith("flux-2"):
            if job.image is not None:
                h, w = job.image.shape[-2:]
                body["width"], body["height"] = int(w) // 16 * 16, int(h) // 16 * 16
        elif ":" in job.size:
            body["aspect_ratio"] = job.size
        return body

    def call(self, client: Client, config: ProviderConfig, job: EditJob) -> tuple[list[bytes], CallRecord]:
        headers = {"x-key": config.key()}
        blobs, ids, credits, usage = [], [], 0.0, {}
        for i in range(job.n):
            seed = None if job.seed is None else (job.seed + i) % 2**32
            task, resp = client.json("POST", f"{config.base_url}/{self.model}", headers=headers, json=self._body(job, seed))
            if not isinstance(task, dict) or not task.get("id"):
                raise MalformedResponse(self.provider, f"submit answered without a task id: {str(task)[:200]}", status=resp.status)
            task_id = str(task["id"])
            ids.append(task_id)
            poll_url = str(task.get("polling_url") or f"{config.base_url}/get_result?id={task_id}")
            poll_headers = headers if _same_site(poll_url, config.base_url) else {}
            sample = client.poll(lambda: self._check(client, poll_url, poll_headers, task_id), f"task {task_id}")
            blobs.append(client.request("GET", sample).content)  # a signed URL: no key goes with it
            if task.get("cost") is not None:
                credits += float(task["cost"])
                usage = {k: task[k] for k in ("cost", "input_mp", "output_mp") if k in task}
        # FLUX.2 reports its cost in credits (1 credit = $0.01); FLUX.1 models are priced per image
        cost = credits * 0.01 if credits else self.price().per_image * len(blobs)
        record = CallRecord(
            self.name, self.provider, self.model, ",".join(ids), usage, round(cost, 6),
            seed=job.seed, reproducible=False, images=len(blobs),
        )
        return blobs, record

    def _check(self, client: Client, url: str, headers: dict[str, str], task_id: str) -> str | None:
        body, resp = client.json("GET", url, headers=headers)
        status = body.get("status") if isinstance(body, dict) else None
        if status == "Ready":
            sample = (body.get("result") or {}).get("sample") if isinstance(body.get("result"), dict) else None
            if not isinstance(sample, str) or not sample:
                raise MalformedResponse(self.provider, f"task {task_id} is Ready without result.sample", status=resp.status, request_id=task_id)
            return sample
        if status in WORKING:
            return None
        details = body.get("details") if isinstance(body, dict) else None
        why = f"{status}" + (f": {details}" if details else "")
        if status in MODERATED:
            raise ProviderRefused(self.provider, why, status=resp.status, request_id=task_id)
        if status == "Task not found":
            raise ProviderRejected(self.provider, why, status=resp.status, request_id=task_id)
        if status == "Error":
            raise ProviderUnavailable(self.provider, why, status=resp.status, request_id=task_id)
        raise MalformedResponse(self.provider, f"unknown task status {status!r}", status=resp.status, request_id=task_id)


def _same_site(url: str, base: str) -> bool:
    """The key goes to the polling URL only on the provider's own domain (BFL answers with a
    regional host such as api.eu2.bfl.ai for base api.bfl.ai)."""
    a, b = urlsplit(url).hostname or "", urlsplit(base).hostname or ""
    if a == b:
        return True
    site = ".".join(b.split(".")[-2:])
    return "." in site and a.endswith("." + site)
