"""A stand-in for the three hosted image APIs: a real HTTP server on 127.0.0.1 that speaks their
documented request and response shapes, for tests, benches and offline demos.

    with StandIn(delay_s=0.2) as s:       # every provider call takes 200 ms
        s.environ()                        # {"EDITGRAPH_OPENAI_BASE_URL": ..., ...} to point engines at it
        s.fail_next("openai", "429", times=3, retry_after=0.1)
        ...
        s.count("openai"), s.max_in_flight["openai"]

Routes (each provider under its own prefix, so counts and concurrency are per provider):
    POST /openai/v1/images/edits              multipart: image[] / image, mask, prompt, model, n, size, quality
    POST /openai/v1/images/generations        JSON
    POST /gemini/v1beta/models/{model}:generateContent
    POST /bfl/v1/{model}                      -> {id, polling_url[, cost, input_mp, output_mp]}
    GET  /bfl/v1/get_result?id=               -> Pending until the task's time is up, then Ready
    GET  /bfl/delivery/{id}.png               the sample (no key needed, like BFL's signed URLs)

Faults, queued per provider with fail_next(): "429" (with Retry-After), "500", "slow" (headers,
then a body slower than any sane read timeout), "drop" (close the connection unanswered),
"malformed" (a 200 that is not JSON), "refuse" (the provider's own refusal shape). An
instruction containing "[refuse]" is always refused, "[malformed]" always malformed.

The "edit" is deterministic and cheap: a tint chosen by (prompt, seed) painted where the mask says
(OpenAI: alpha 0; BFL Fill: white), or blended over the whole picture without a mask. Seeds whose
value is 1 mod 3 also brighten the whole picture a little, so candidates differ in how much they
change outside the mask (what edit.best scores).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import socket
import threading
import time
from collections import Counter, defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image as PILImage

GATHER_WAIT_S = 30.0
FAULTS = ("429", "500", "slow", "drop", "malformed", "refuse")


class StandIn:
    def __init__(self, *, delay_s: float = 0.0, key: str | None = None, bfl_polls: int = 2):
        self.delay_s = delay_s
        self.key = key  # when set, calls must carry it (as each provider expects)
        self.bfl_polls = bfl_polls  # get_result answers Pending this many times first
        self.requests: list[tuple[str, str, str]] = []  # (provider, method, path)
        self.bodies: list[dict[str, Any]] = []  # what each provider call carried (fields, file names, sizes)
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        # hold the first `gather` calls to a provider until that many are in flight at once (or
        # GATHER_WAIT_S passes): a client's concurrency shows whatever the load on the machine
        self.gather = 0
        self._gathered: Counter[str] = Counter()
        self._arrived = threading.Condition()
        self._faults: dict[str, deque] = defaultdict(deque)
        self._tasks: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # --- control ----------------------------------------------------------------------------

    def __enter__(self) -> "StandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def base_url(self, provider: str) -> str:
        return {"openai": f"{self.url}/openai/v1", "gemini": f"{self.url}/gemini/v1beta", "bfl": f"{self.url}/bfl/v1"}[provider]

    def environ(self) -> dict[str, str]:
        return {f"EDITGRAPH_{p.upper()}_BASE_URL": self.base_url(p) for p in ("openai", "gemini", "bfl")}

    def fail_next(self, provider: str, kind: str, *, times: int = 1, retry_after: float | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"fault {kind!r}; known: {FAULTS}")
        with self._lock:
            for _ in range(times):
                self._faults[provider].append((kind, retry_after))

    def count(self, provider: str | None = None, path_contains: str = "") -> int:
        with self._lock:
            return sum(1 for p, _, path in self.requests if (provider is None or p == provider) and path_contains in path)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bodies.clear()
            self.max_in_flight.clear()
            self._gathered.clear()
            self._faults.clear()

    def _gather(self, provider: str) -> None:
        with self._arrived:
            if self._gathered[provider] >= self.gather:
                return
            self._gathered[provider] += 1
            self._arrived.notify_all()
            self._arrived.wait_for(lambda: self._gathered[provider] >= self.gather, timeout=GATHER_WAIT_S)

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids:05d}"

    def _take_fault(self, provider: str) -> tuple[str, float | None] | None:
        with self._lock:
            return self._faults[provider].popleft() if self._faults[provider] else None


# --- the fake edit ------------------------------------------------------------------------------


def _tint(prompt: str, seed: int | None) -> np.ndarray:
    digest = hashlib.sha256(f"{prompt}\0{seed}".encode()).digest()
    return np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32) / 255.0


def edit_pixels(image: bytes | None, prompt: str, seed: int | None, change: np.ndarray | None, size=(64, 64)) -> bytes:
    """The stand-in's 'model': PNG in, PNG out. change: (H, W) 0..1, 1 = paint."""
    if image is None:
        rgb = np.zeros((size[1], size[0], 3), np.float32)
        change = np.ones(rgb.shape[:2], np.float32)
    else:
        with PILImage.open(io.BytesIO(image)) as pil:
            rgb = np.asarray(pil.convert("RGB"), np.float32) / 255.0
    tint = _tint(prompt, seed)
    if change is None:
        out = rgb * 0.7 + tint * 0.3
    else:
        out = rgb * (1 - change[..., None]) + tint * change[..., None]
    if seed is not None and seed % 3 == 1:
        out = out * 0.9 + 0.1  # a drifting candidate: the whole picture lifts
    buf = io.BytesIO()
    PILImage.fromarray((out.clip(0, 1) * 255).round().astype(np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def _plane(data: bytes, channel: str) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as pil:
        if channel == "alpha":
            return np.asarray(pil.convert("RGBA"), np.float32)[..., 3] / 255.0
        return np.asarray(pil.convert("L"), np.float32) / 255.0


# --- HTTP -----------------------------------------------------------------------------------------


def _handler(s: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: tests read counts, not logs
            pass

        # responses
        def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            path = urlsplit(self.path).path
            provider = path.strip("/").split("/", 1)[0]
            with s._lock:
                s.requests.append((provider, method, path))
            body = self._body() if method == "POST" else b""
            main = method == "POST"  # the calls that cost and take time; polls and downloads are quick
            if main:
                with s._lock:
                    s.in_flight[provider] += 1
                    s.max_in_flight[provider] = max(s.max_in_flight[provider], s.in_flight[provider])
            try:
                if main and not self._authorized(provider):
                    return
                fault = s._take_fault(provider) if main else None
                if fault is not None and self._fault(provider, *fault):
                    return
                if main and s.gather:
                    s._gather(provider)
                if main and s.delay_s:
                    time.sleep(s.delay_s)
                if provider == "openai" and method == "POST":
                    self._openai(path, body)
                elif provider == "gemini" and method == "POST":
                    self._gemini(path, body)
                elif provider == "bfl":
                    self._bfl(method, path, body)
                else:
                    self._json(404, {"error": {"message": f"no route {method} {path}"}})
            except Exception as exc:  # a stand-in bug answers 500 (retried) rather than a dropped socket
                self._json(500, {"error": {"message": f"stand-in error: {type(exc).__name__}: {exc}"}})
            finally:
                if main:
                    with s._lock:
                        s.in_flight[provider] -= 1

        def _authorized(self, provider: str) -> bool:
            got = {
                "openai": (self.headers.get("Authorization") or "").removeprefix("Bearer "),
                "gemini": self.headers.get("x-goog-api-key") or "",
                "bfl": self.headers.get("x-key") or "",
            }.get(provider, "")
            if not got or (s.key is not None and got != s.key):
                # OpenAI's 401 echoes part of the key it got: the client must redact it
                shown = f"{got[:8]}****{got[-4:]}" if len(got) > 12 else got
                self._json(401, {"error": {"message": f"Incorrect API key provided: {shown}.", "type": "invalid_request_error", "code": "invalid_api_key"}})
                return False
            return True

        def _fault(self, provider: str, kind: str, retry_after: float | None) -> bool:
            if kind == "429":
                self._json(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                           headers={"Retry-After": f"{retry_after if retry_after is not None else 0.05:g}"})
            elif kind == "500":
                self._json(500, {"error": {"message": "The server had an error while processing your request."}})
            elif kind == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            elif kind == "malformed":
                self._send(200, b'{"data": [ {"b64_json": "trunc', "application/json")
            elif kind == "slow":
                payload = b'{"data": []}' + b" " * 64
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[:4])
                self.wfile.flush()
                time.sleep(2.0)  # past the read timeout tests configure
                try:
                    self.wfile.write(payload[4:])
                except OSError:
                    pass
            elif kind == "refuse":
                return self._refuse(provider)
            return True

        def _refuse(self, provider: str) -> bool:
            if provider == "openai":
                self._json(400, {"error": {
                    "message": "Your request was rejected as a result of our safety system. Your request may contain content that is not allowed by our safety system.",
                    "type": "image_generation_user_error", "param": None, "code": "moderation_blocked"}})
                return True
            if provider == "gemini":
                self._json(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}})
                return True
            return False  # BFL refuses through the task status: see _bfl

        # --- OpenAI ---------------------------------------------------------------------------
        def _openai(self, path: str, body: bytes) -> None:
            if path.endswith("/images/edits"):
                fields, files = _multipart(self.headers.get("Content-Type", ""), body)
                images = files.get("image[]") or files.get("image") or []
                masks = files.get("mask") or []
            elif path.endswith("/images/generations"):
                fields, images, masks = json.loads(body or b"{}"), [], []
            else:
                return self._json(404, {"error": {"message": f"no route {path}"}})
            prompt = str(fields.get("prompt", ""))
            with s._lock:
                s.bodies.append({"provider": "openai", "path": path, "fields": {k: v for k, v in fields.items() if k != "prompt"},
                                 "prompt": prompt, "images": len(images), "mask": bool(masks)})
            if "[refuse]" in prompt:
                return self._refuse("openai") and None
            if "[malformed]" in prompt:
                return self._send(200, b"<html>gateway</html>", "text/html")
            n = int(fields.get("n") or 1)
            change = 1.0 - _plane(masks[0][1], "alpha") if masks else None
            source = images[0][1] if images else None
            data = [{"b64_json": base64.b64encode(edit_pixels(source, prompt, None, change)).decode()} for _ in range(n)]
            text_tokens, image_tokens = max(1, len(prompt) // 4), 323 * len(images)
            usage = {"input_tokens": text_tokens + image_tokens, "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
                     "output_tokens": 1056 * n, "total_tokens": text_tokens + image_tokens + 1056 * n}
            self._json(200, {"created": int(time.time()), "data": data, "usage": usage}, headers={"x-request-id": s._next_id("req")})

        # --- Gemini ---------------------------------------------------------------------------
        def _gemini(self, path: str, body: bytes) -> None:
            if not path.endswith(":generateContent"):
                return self._json(404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}})
            model = path.rsplit("/", 1)[1].split(":")[0]
            req = json.loads(body or b"{}")
            parts = req["contents"][0]["parts"]
            prompt = " ".join(p["text"] for p in parts if "text" in p)
            pictures = [base64.b64decode(p["inline_data"]["data"]) for p in parts if "inline_data" in p]
            seed = (req.get("generationConfig") or {}).get("seed")
            with s._lock:
                s.bodies.append({"provider": "gemini", "path": path, "prompt": prompt, "images": len(pictures), "seed": seed,
                                 "generationConfig": req.get("generationConfig")})
            if "[refuse]" in prompt:
                self._refuse("gemini")
                return
            if "[malformed]" in prompt:
                return self._json(200, {"candidates": [{"content": {"parts": [{"text": "I cannot draw today."}]}, "finishReason": "STOP"}]})
            image = edit_pixels(pictures[0] if pictures else None, prompt, seed, None)
            self._json(200, {
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Here is the edited picture."},
                    {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()}},
                ]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9 + 258 * len(pictures), "candidatesTokenCount": 1290,
                                  "totalTokenCount": 1299 + 258 * len(pictures)},
                "modelVersion": model, "responseId": s._next_id("gem"),
            })

        # --- BFL ------------------------------------------------------------------------------
        def _bfl(self, method: str, path: str, body: bytes) -> None:
            if method == "GET" and path.endswith("/get_result"):
                task_id = parse_qs(urlsplit(self.path).query).get("id", [""])[0]
                with s._lock:
                    task = s._tasks.get(task_id)
                    if task is not None:
                        task["polls"] += 1
                if task is None:
                    return self._json(200, {"id": task_id, "status": "Task not found", "result": None})
                if task["refuse"]:
                    return self._json(200, {"id": task_id, "status": "Request Moderated", "result": None,
                                            "details": {"Moderation Reasons": ["Derivative Works Filter"]}})
                if task["polls"] <= s.bfl_polls:
                    return self._json(200, {"id": task_id, "status": "Pending", "result": None, "progress": 0.5})
                return self._json(200, {"id": task_id, "status": "Ready", "result": {
                    "sample": f"{s.url}/bfl/delivery/{task_id}.png", "prompt": task["prompt"], "seed": task["seed"]}})
            if method == "GET" and "/delivery/" in path:
                task_id = path.rsplit("/", 1)[1].removesuffix(".png")
                with s._lock:
                    task = s._tasks.get(task_id)
                if task is None:
                    return self._send(404, b"expired", "text/plain")
                return self._send(200, task["image"], "image/png")
            if method != "POST":
                return self._json(404, {"detail": "Not Found"})
            model = path.rsplit("/", 1)[1]
            req = json.loads(body or b"{}")
            prompt, seed = str(req.get("prompt", "")), req.get("seed")
            with s._lock:
                s.bodies.append({"provider": "bfl", "path": path, "model": model, "prompt": prompt, "seed": seed,
                                 "fields": sorted(req)})
            if "[malformed]" in prompt:
                return self._json(200, {"polling_url": "nowhere"})
            if model == "flux-pro-1.0-fill":
                source, change = base64.b64decode(req["image"]), _plane(base64.b64decode(req["mask"]), "luma")
            else:
                source, change = (base64.b64decode(req["input_image"]) if req.get("input_image") else None), None
            task_id = s._next_id("bfl")
            with s._lock:
                s._tasks[task_id] = {"polls": 0, "prompt": prompt, "seed": seed, "refuse": "[refuse]" in prompt,
                                     "image": edit_pixels(source, prompt, seed, change)}
            answer: dict[str, Any] = {"id": task_id, "polling_url": f"{s.url}/bfl/v1/get_result?id={task_id}"}
            if model.startswith("flux-2"):
                answer.update({"cost": 4.5, "input_mp": 1.0, "output_mp": 1.0})
            self._json(200, answer)

    return Handler


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, list[tuple[str, bytes]]]]:
    """multipart/form-data -> (text fields, {field: [(filename, bytes)]}) with the stdlib parser."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    files: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name].append((filename, payload))
        else:
            fields[name] = payload.decode()
    return fields, dict(files)


def main(argv: list[str] | None = None) -> None:
    """python -m editgraph.testing.standin [--delay 0.2]: serve until Ctrl-C, printing the env to set."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=float, default=0.2, help="seconds per provider call")
    args = p.parse_args(argv)
    with StandIn(delay_s=args.delay) as s:
        for k, v in s.environ().items():
            print(f"export {k}={v}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
