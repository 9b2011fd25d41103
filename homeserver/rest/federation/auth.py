"""``FederationAuthenticator``: the X-Matrix check in front of every
inbound federation endpoint.

Spec: server-server-api "Request Authentication". A request is accepted when
one of its ``X-Matrix`` Authorization headers carries a valid signature, by a
key of the origin that is current (not an old key) and valid now, over the
method, the request target as received, origin, our server name and the
JSON body. Every refusal is ``401 M_UNAUTHORIZED``.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Optional

from homeserver.core.errors import SignatureVerifyError
from homeserver.core.ids import is_valid_server_name
from homeserver.errors import Codes, MatrixError
from homeserver.federation.keys import KeyLookupError
from homeserver.federation.request_auth import (
    SCHEME,
    XMatrixAuth,
    parse_authorization_header,
    signed_destination_matches,
    verify_request,
)
from homeserver.http.server import parse_json_value

logger = logging.getLogger(__name__)


def unauthorized(msg: str) -> MatrixError:
    """401 ``M_UNAUTHORIZED``."""
    return MatrixError(401, Codes.UNAUTHORIZED, msg)


class FederationAuthenticator:
    """Authenticates inbound server-server requests; returns the origin.

    ``keyring`` provides ``get_server_key(server, key_id, minimum_valid_until_ts)``
    and ``now_ms()``. ``on_origin_seen(origin)`` (optional) is called after
    each authenticated request: a server that talks to us is up, so the
    federation sender may stop backing off from it.
    """

    def __init__(
        self,
        server_name: str,
        keyring: Any,
        on_origin_seen: Optional[Callable[[str], Any]] = None,
    ) -> None:
        self._server_name = server_name
        self._keyring = keyring
        self._on_origin_seen = on_origin_seen

    async def authenticate(self, request: Any) -> str:
        """The origin server of ``request``, or a 401 :class:`MatrixError`."""
        raw = request.requestHeaders.getRawHeaders(b"Authorization") or []
        values = [v.decode("latin-1") for v in raw]
        content = parse_json_value(request, allow_empty=True)
        method = request.method.decode("ascii")
        uri = request.uri.decode("latin-1")
        origin = await self.authenticate_parts(method, uri, values, content)
        if self._on_origin_seen is not None:
            try:
                self._on_origin_seen(origin)
            except Exception:
                logger.exception("on_origin_seen hook failed for %s", origin)
        return origin

    async def authenticate_parts(self, method: str, uri: str, header_values: list[str], content: Any) -> str:
        """The check itself, on plain values (for tests and non-HTTP callers)."""
        auths: list[XMatrixAuth] = []
        for value in header_values:
            if not value.lower().startswith(SCHEME.lower() + " "):
                continue
            try:
                auths.append(parse_authorization_header(value))
            except ValueError as e:
                raise unauthorized(f"Malformed X-Matrix Authorization header: {e}")
        if not auths:
            raise unauthorized("Missing X-Matrix Authorization header")
        origin = auths[0].origin
        if any(a.origin != origin for a in auths):
            raise unauthorized("X-Matrix headers name different origins")
        if not is_valid_server_name(origin):
            raise unauthorized("Invalid origin server name")
        for a in auths:
            if not signed_destination_matches(a, self._server_name):
                raise unauthorized(f"Request is for {a.destination}, not {self._server_name}")
        now = self._keyring.now_ms()
        reasons = []
        for a in auths:
            try:
                key = await self._keyring.get_server_key(origin, a.key_id, now)
            except KeyLookupError as e:
                reasons.append(f"unknown key {a.key_id}: {e}")
                continue
            if not key.valid_for_request_at(now):
                reasons.append(f"key {a.key_id} is {'old' if key.is_old else 'expired'}")
                continue
            try:
                verify_request(a, method, uri, self._server_name, content, key.verify_key())
            except (SignatureVerifyError, ValueError) as e:
                reasons.append(str(e))
                continue
            return origin
        raise unauthorized(f"Failed to authenticate request from {origin}: {'; '.join(reasons)}")

    def wrap(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """A route handler that authenticates first and passes ``origin=`` on."""

        async def authenticated(request: Any, **kwargs: Any) -> Any:
            origin = await self.authenticate(request)
            return await handler(request, origin=origin, **kwargs)

        authenticated.__name__ = getattr(handler, "__name__", "federation")
        return authenticated
