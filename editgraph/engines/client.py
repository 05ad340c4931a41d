"""One HTTP client for every hosted provider (httpx), so each failure mode is handled once.

- Timeouts: connect and read per attempt (httpx), and a total deadline per call that also bounds
  a body trickling in slower than the read timeout can see (checked per chunk).
- Retries: 429, 5xx, timeouts and dropped connections, with exponential backoff and jitter; a
  `Retry-After` header (seconds or an HTTP date) is honoured as the wait. Nothing else retries:
  a refusal or another 4xx becomes a ProviderRefused / ProviderRejected quoting the provider.
- A success whose body is not JSON (when JSON was expected) is a MalformedResponse.
- Polling (submit-and-poll APIs) runs until the task says done, within a deadline.
- Waits honour the run's cancel event, and every error text is redacted of keys.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from editgraph.engines.credentials import ProviderConfig, redact
from editgraph.engines.errors import MalformedResponse, ProviderRefused, ProviderRejected, ProviderUnavailable
from editgraph.errors import Cancelled

log = logging.getLogger("editgraph.engines")

T = TypeVar("T")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504, 520, 522, 524, 529})
_CHUNK = 1 << 16


@dataclass
class HttpResponse:
    status: int
    headers: httpx.Headers
    content: bytes
    url: str

    def json(self, provider: str) -> Any:
        try:
            return json.loads(self.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            head = self.content[:120].decode("utf-8", "replace")
            raise MalformedResponse(provider, f"expected JSON, got {head!r} ({exc})", status=self.status) from None


# A provider-specific reading of an error body: (is it a refusal?, the reason in its own words).
ErrorReader = Callable[[int, Any], tuple[bool, str]]


def _default_error(status: int, body: Any) -> tuple[bool, str]:
    return False, json.dumps(body)[:500] if not isinstance(body, str) else body[:500]


@dataclass
class Client:
    config: ProviderConfig
    cancel: threading.Event | None = None
    read_error: ErrorReader = _default_error
    rng: random.Random = field(default_factory=random.Random)
    _http: httpx.Client | None = None

    def __enter__(self) -> "Client":
        c = self.config
        timeout = httpx.Timeout(connect=c.connect_timeout_s, read=c.read_timeout_s, write=c.read_timeout_s, pool=c.connect_timeout_s)
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)
        return self

    def __exit__(self, *exc) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def provider(self) -> str:
        return self.config.provider

    # --- one call, with retries ------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, **kw: Any) -> HttpResponse:
        """Send, retrying what may pass (429, 5xx, timeouts, drops); raise on what will not."""
        assert self._http is not None, "use Client as a context manager"
        c = self.config
        deadline = time.monotonic() + c.total_timeout_s
        last = "no attempt made"
        for attempt in range(c.retries + 1):
            self._check_cancel()
            retry_after: float | None = None
            try:
                resp = self._send(method, url, headers or {}, kw, deadline)
            except (httpx.TimeoutException, _TotalTimeout) as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:  # refused or dropped connection, broken protocol
                last = f"connection failed ({type(exc).__name__}: {redact(str(exc))})"
            else:
                if resp.status < 400:
                    return resp
                body = _body_of(resp)
                refused, reason = self.read_error(resp.status, body)
                reason = redact(reason)
                rid = resp.headers.get("x-request-id")
                if resp.status not in RETRY_STATUS:
                    cls = ProviderRefused if refused else ProviderRejected
                    raise cls(self.provider, reason, status=resp.status, request_id=rid)
                last = f"HTTP {resp.status}: {reason}"
                retry_after = _retry_after(resp.headers.get("retry-after"))
            if attempt == c.retries:
                break
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            if time.monotonic() + wait > deadline:
                last += f"; the next try (in {wait:.1f} s) would pass the {c.total_timeout_s:g} s deadline"
                break
            log.info("%s %s: %s; retry %d in %.2f s", method, _path(url), last, attempt + 1, wait)
            self._sleep(wait)
        raise ProviderUnavailable(self.provider, f"gave up after {attempt + 1} tries: {last}")

    def _send(self, method: str, url: str, headers: dict[str, str], kw: dict[str, Any], deadline: float) -> HttpResponse:
        assert self._http is not None
        log.debug("%s %s", method, _path(url))
        with self._http.stream(method, url, headers=headers, **kw) as resp:
            chunks = []
            for chunk in resp.iter_bytes(_CHUNK):
                chunks.append(chunk)
                if time.monotonic() > deadline:  # a body dripping in slower than the read timeout sees
                    raise _TotalTimeout()
                self._check_cancel()
            return HttpResponse(resp.status_code, resp.headers, b"".join(chunks), str(resp.url))

    def _backoff(self, attempt: int) -> float:
        c = self.config
        base = min(c.backoff_max_s, c.backoff_s * 2**attempt)
        return base * (0.5 + self.rng.random())  # jitter: rows that failed together retry apart

    def _sleep(self, seconds: float) -> None:
        if self.cancel is not None:
            if self.cancel.wait(seconds):
                raise Cancelled(f"{self.provider} call cancelled")
        else:
            time.sleep(seconds)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"{self.provider} call cancelled")

    # --- JSON helpers and polling -------------------------------------------------------------

    def json(self, method: str, url: str, **kw: Any) -> tuple[Any, HttpResponse]:
        resp = self.request(method, url, **kw)
        return resp.json(self.provider), resp

    def poll(self, fetch: Callable[[], T | None], what: str) -> T:
        """Call fetch() every poll_interval_s until it returns a result, within poll_deadline_s."""
        c = self.config
        deadline = time.monotonic() + c.poll_deadline_s
        polls = 0
        while True:
            result = fetch()
            polls += 1
            if result is not None:
                return result
            if time.monotonic() + c.poll_interval_s > deadline:
                raise ProviderUnavailable(self.provider, f"{what} not finished after {c.poll_deadline_s:g} s ({polls} polls)")
            self._sleep(c.poll_interval_s)


class _TotalTimeout(Exception):
    pass


def _body_of(resp: HttpResponse) -> Any:
    try:
        return json.loads(resp.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return resp.content[:500].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _path(url: str) -> str:
    """A URL for log lines: no query string (a signed delivery URL carries tokens in it)."""
    return url.split("?", 1)[0]
