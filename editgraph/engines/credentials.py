"""Where hosted engines get keys, endpoints and limits: the environment, then the user's config
file. Never the workflow: a shared workflow, its report, provenance and cache carry no key.

Config file (JSON), `$EDITGRAPH_ENGINES_CONFIG` or `<user config dir>/editgraph/engines.json`
(`~/.config/editgraph/engines.json` on Linux):

    {
      "providers": {
        "openai": {"api_key": "sk-...", "base_url": "https://api.openai.com/v1", "max_concurrency": 4},
        "gemini": {"api_key": "...", "timeout_s": 120},
        "bfl":    {"api_key": "...", "poll_deadline_s": 300}
      },
      "routes": {"mine": {"inpaint": ["bfl:flux-pro-1.0-fill", "openai:gpt-image-1"], ...}},
      "prices": {"openai:gpt-image-1": {"image_out_per_m": 40.0, ...}}
    }

Environment variables win over the file: OPENAI_API_KEY, GEMINI_API_KEY (or GOOGLE_API_KEY),
BFL_API_KEY for keys; EDITGRAPH_<PROVIDER>_BASE_URL and EDITGRAPH_<PROVIDER>_MAX_CONCURRENCY
for endpoints (proxies, gateways, the test stand-in) and limits.

Keys are held in `Secret`, whose repr and str never show the value, and every error text a
provider sends back goes through `redact()` (OpenAI's 401 echoes part of the key it was given).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.engines.errors import NotConfigured
from editgraph.errors import EditgraphError
from editgraph.settings import Settings


class Secret:
    """A credential. Its only way out is reveal(), used when building a request header."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):  # a pickled or copied config must not carry the key along
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class ProviderDefaults:
    key_env: tuple[str, ...]
    base_url: str  # the documented public endpoint
    max_concurrency: int = 4  # calls in flight to this provider from this process


PROVIDERS: dict[str, ProviderDefaults] = {
    # https://platform.openai.com/docs/api-reference/images (Bearer key)
    "openai": ProviderDefaults(("OPENAI_API_KEY",), "https://api.openai.com/v1"),
    # https://ai.google.dev/api (x-goog-api-key header)
    "gemini": ProviderDefaults(("GEMINI_API_KEY", "GOOGLE_API_KEY"), "https://generativelanguage.googleapis.com/v1beta"),
    # https://docs.bfl.ai (x-key header); api.eu.bfl.ai / api.us.bfl.ai are regional
    "bfl": ProviderDefaults(("BFL_API_KEY",), "https://api.bfl.ai/v1"),
}


@dataclass(frozen=True)
class ProviderConfig:
    provider: str
    api_key: Secret | None = field(repr=False)
    base_url: str
    max_concurrency: int
    connect_timeout_s: float = 10.0  # a provider that does not accept a connection in 10 s is down
    read_timeout_s: float = 120.0  # an image edit can think for a minute before the first byte
    total_timeout_s: float = 300.0  # one call, retries and body included
    poll_deadline_s: float = 600.0  # an asynchronous task (BFL) must finish within this
    poll_interval_s: float = 0.5  # BFL's examples poll every 0.5 s
    retries: int = 4  # after the first try: 429/5xx/dropped connections only
    backoff_s: float = 1.0  # first wait; doubles each retry, with jitter (BFL's own advice: 1, 2, 4 s)
    backoff_max_s: float = 30.0

    def key(self) -> str:
        if self.api_key is None:
            names = " or ".join(PROVIDERS[self.provider].key_env)
            raise NotConfigured(
                f"no API key for {self.provider}: set {names} or add providers.{self.provider}.api_key to {config_path()}"
            )
        return self.api_key.reveal()


def config_path() -> Path:
    configured = Settings.from_env().engines_config
    if configured is not None:
        return configured
    import platformdirs

    return Path(platformdirs.user_config_dir("editgraph")) / "engines.json"


def load_user_config() -> dict[str, Any]:
    """The config file's contents ({} when there is none). A malformed file is an error naming it."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EditgraphError(f"cannot read the engines config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EditgraphError(f"engines config {path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise EditgraphError(f"engines config {path}: expected a JSON object at the top, got {type(data).__name__}")
    return data


_TUNABLE = {
    "connect_timeout_s": float, "read_timeout_s": float, "total_timeout_s": float, "poll_deadline_s": float,
    "poll_interval_s": float, "retries": int, "backoff_s": float, "backoff_max_s": float,
}


def provider_config(provider: str, user: dict[str, Any] | None = None) -> ProviderConfig:
    """Resolve one provider's key, endpoint and limits: environment, then config file, then defaults."""
    if provider not in PROVIDERS:
        raise EditgraphError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
    defaults = PROVIDERS[provider]
    user = load_user_config() if user is None else user
    section = (user.get("providers") or {}).get(provider) or {}
    if not isinstance(section, dict):
        raise EditgraphError(f"engines config {config_path()}: providers.{provider} must be an object")
    key = next((os.environ[name] for name in defaults.key_env if os.environ.get(name)), None) or section.get("api_key")
    settings = Settings.from_env()
    base_url = settings.engine_endpoints.get(provider) or section.get("base_url") or defaults.base_url
    # `is None`, not `or`: a configured 0 is a mistake to report, not a reason to use the default
    limit_text = next((v for v in (settings.engine_limits.get(provider), section.get("max_concurrency")) if v is not None), defaults.max_concurrency)
    try:
        limit = int(limit_text)
    except (TypeError, ValueError):
        limit = 0
    if limit < 1:
        raise EditgraphError(f"{provider} max_concurrency must be a whole number >= 1, got {limit_text!r}")
    tuned: dict[str, Any] = {}
    for name, kind in _TUNABLE.items():
        if name in section:
            try:
                tuned[name] = kind(section[name])
            except (TypeError, ValueError):
                raise EditgraphError(f"engines config {config_path()}: providers.{provider}.{name} must be a number") from None
    return ProviderConfig(provider, Secret(key) if key else None, str(base_url).rstrip("/"), limit, **tuned)


def known_secrets() -> list[str]:
    """Every key value this process could send, for redaction."""
    found = []
    user = load_user_config()
    for name, defaults in PROVIDERS.items():
        for env in defaults.key_env:
            if os.environ.get(env):
                found.append(os.environ[env])
        key = ((user.get("providers") or {}).get(name) or {}).get("api_key")
        if isinstance(key, str) and key:
            found.append(key)
    return found


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` with every known key, and any 8+ character piece of one, replaced by ***."""
    for secret in secrets if secrets is not None else known_secrets():
        if len(secret) < 8:
            continue
        text = text.replace(secret, "***")
        # providers echo a key partly ("sk-test-****cdef"): hide its head, its tail, and a short
        # tail that follows a run of asterisks
        for piece in (secret[:8], secret[-8:]):
            text = text.replace(piece, "***")
        for n in range(4, 8):
            text = re.sub(r"\*+" + re.escape(secret[-n:]), "***", text)
    return text


# Calls in flight per (provider, endpoint), shared by every node and row in this process.
_LIMITS: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_LIMITS_LOCK = threading.Lock()


def limiter(config: ProviderConfig) -> threading.BoundedSemaphore:
    with _LIMITS_LOCK:
        ident = (config.provider, config.base_url)
        sem = _LIMITS.get(ident)
        if sem is None or getattr(sem, "_initial_value", config.max_concurrency) != config.max_concurrency:
            sem = _LIMITS[ident] = threading.BoundedSemaphore(config.max_concurrency)
        return sem
