"""What a provider call can end in, sorted by what the caller should do about it.

    ProviderRefused      the provider declined the content (moderation): never retried, never
                         re-routed to another provider; the node fails quoting the reason.
    ProviderRejected     any other 4xx (bad request, bad key, no credit): retrying cannot help.
    ProviderUnavailable  429 / 5xx / timeouts / dropped connections, after the retries ran out:
                         the router may fall back to the next engine.
    MalformedResponse    a 2xx whose body is not the documented shape: an error, never a
                         half-written cache entry; the router may fall back.
    NotConfigured        no key for the provider: the router skips the engine.
    BudgetExhausted      --max-cost was reached: no new call is issued.
"""

from __future__ import annotations

from editgraph.errors import EditgraphError


class ProviderError(EditgraphError):
    """A hosted call failed. `reason` is the provider's own words (already redacted)."""

    def __init__(self, provider: str, reason: str, *, status: int | None = None, request_id: str | None = None):
        self.provider = provider
        self.reason = reason
        self.status = status
        self.request_id = request_id
        where = f"HTTP {status}" if status is not None else "no response"
        rid = f", request id {request_id}" if request_id else ""
        super().__init__(f"{provider} ({where}{rid}): {reason}")


class ProviderRefused(ProviderError):
    """The provider refused the request or its output on content grounds."""


class ProviderRejected(ProviderError):
    """A 4xx other than 429: the request itself is wrong (or the key/credit is)."""


class ProviderUnavailable(ProviderError):
    """Rate limits, server errors or timeouts outlasted the retries."""


class MalformedResponse(ProviderError):
    """A success status with a body that is not the documented shape."""


class NotConfigured(EditgraphError):
    """No credentials for a provider (set its environment variable or the config file)."""


class BudgetExhausted(EditgraphError):
    """The run's --max-cost was reached; no new paid call is issued."""


# Failures after which the router tries the next engine in its table. A refusal is a policy
# decision, and a rejected request would be rejected elsewhere too: those end the node.
FALLBACK_ON = (ProviderUnavailable, MalformedResponse, NotConfigured)
