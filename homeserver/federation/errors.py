"""Why an outbound federation request failed, and whether retrying may help.

The HTTP client raises these; the sender and the keyring decide from them
whether to back off and retry or to give up. Nothing here knows HTTP
libraries.
"""

from __future__ import annotations

from typing import Any, Optional


class FederationError(Exception):
    """Base class of outbound federation failures."""


class NotRetryingDestination(FederationError):
    """The destination is in backoff; nothing was sent."""

    def __init__(self, destination: str, retry_at_ms: int) -> None:
        super().__init__(f"not retrying {destination} before {retry_at_ms}")
        self.destination = destination
        self.retry_at_ms = retry_at_ms


class RequestSendFailed(FederationError):
    """No usable response: DNS, connection, TLS, timeout, or a body that is
    not JSON. Retrying later may help."""

    def __init__(self, destination: str, reason: str) -> None:
        super().__init__(f"request to {destination} failed: {reason}")
        self.destination = destination
        self.reason = reason


class HttpResponseError(FederationError):
    """The destination answered with a non-2xx status."""

    def __init__(self, destination: str, code: int, body: Any, errcode: Optional[str] = None) -> None:
        super().__init__(f"{destination} answered {code} {errcode or ''}".rstrip())
        self.destination = destination
        self.code = code
        self.body = body
        self.errcode = errcode

    @property
    def retryable(self) -> bool:
        """5xx and 429 may succeed later; other 4xx will not."""
        return self.code >= 500 or self.code == 429
