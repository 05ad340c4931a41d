"""What stands between the network and this machine: the token, body and rate limits, and the
rule that a workflow run by the server reads only from the folders it was started with and
writes only into its job's output folder.

The token and body checks are plain ASGI middleware, so they cover every HTTP route and every
WebSocket before any route code runs; a socket without the token is refused with an HTTP 401
during the handshake (the denial-response extension), never accepted and then closed.
"""

from __future__ import annotations

import collections
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

from editgraph.errors import Issue

PUBLIC_PREFIXES = ("/static/",)  # the page's own code: package data, no secrets, needed to ask for the token
PUBLIC_PATHS = ("/", "/favicon.ico")


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()


async def _send_json(send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def presented_token(scope: dict[str, Any]) -> str | None:
    """The token a request carries: `Authorization: Bearer T`, or `?token=T` (a browser's
    WebSocket and <img src> cannot set headers)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return rest.strip()
    from urllib.parse import parse_qs

    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


class TokenMiddleware:
    """Every /api request and socket must carry the server's token (when it has one)."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if self.token is None or scope["type"] not in ("http", "websocket") or _is_public(scope["path"]):
            return await self.app(scope, receive, send)
        got = presented_token(scope)
        if got is not None and hmac.compare_digest(got.encode(), self.token.encode()):
            return await self.app(scope, receive, send)
        message = "missing token: send 'Authorization: Bearer <token>'" if got is None else "wrong token"
        body = _error_body(401, "unauthorized", message)
        if scope["type"] == "http":
            return await _send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a server without the extension can only refuse the handshake (403)
            await send({"type": "websocket.close", "code": 1008})


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes: at once from Content-Length, else while reading."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _send_json(send, 413, _error_body(413, "too_large", self._message()))
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self._message())
            return message

        return await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body is larger than this server accepts ({self.limit} bytes; --max-body)"


class BodyTooLarge(Exception):
    pass


class RateLimiter:
    """At most `per_minute` submissions per client in any sliding 60 s window."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._seen: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            times = self._seen[client]
            while times and now - times[0] > 60:
                times.popleft()
            if len(times) >= self.per_minute:
                return False
            times.append(now)
            return True


# --- what a workflow may touch ----------------------------------------------------------------


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    real = path.resolve()  # symlinks followed: a link inside a root pointing out is outside
    return any(real.is_relative_to(root) for root in roots)


def check_paths(graph, roots: tuple[Path, ...]) -> list[Issue]:
    """Every file a bound graph would read must be inside `roots`. A node that loads a model (its
    output is a Model) may also name a model the server knows by name (a built-in tiny model or one
    registered by whoever runs the server), never a path outside.
    Saves are already confined by image.save's own validation and the executor's write check."""
    from editgraph.nodes.registry import INPUT_PATH, field_marks

    issues = []
    for nid, node in graph.nodes.items():
        names_models = any(sock.name == "Model" for sock in node.cls.outputs.values())
        for fname in field_marks(node.cls.Params, INPUT_PATH):
            value = getattr(node.params, fname, None)
            if not isinstance(value, str) or not value:
                continue
            path = Path(value)
            if _inside(path, roots):
                continue
            if names_models and not path.exists() and _known_model_name(path.name):
                continue  # "tiny-sd" arrives as <base>/tiny-sd: a name, resolved by the model registry
            issues.append(
                Issue(
                    f"nodes.{nid}.params.{fname}",
                    f"this server reads files only from its uploads folder, the bundled assets and folders it was started with "
                    f"(--allow-dir); refused: {value}",
                    nid,
                    node.type,
                )
            )
    return issues


def _known_model_name(name: str) -> bool:
    from editgraph.models import names
    from editgraph.models.tiny import TINY_NAMES

    return name in TINY_NAMES or name in names.registered()
