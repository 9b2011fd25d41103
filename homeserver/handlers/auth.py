"""Authentication of client requests: access tokens to :class:`Requester`.

Tokens are random strings handed to the client once; the database holds only
their SHA-256 digest, so a lookup is "hash, then index lookup by hash" and a
leaked table reveals no usable token. Validated tokens are cached in memory
for a short time (``sessions.token_cache_ms``) so that each request costs no
database round trip. :meth:`Authenticator.invalidate_user` evicts a user's
tokens here at once and tells its ``invalidation_listeners``; ``workers``
wires one that announces it on the bus's ``caches`` stream, whose consumers
call :meth:`Authenticator.evict_user` on every other process (and
:meth:`Authenticator.evict_all` when they may have missed announcements).

``get_user_by_req`` takes the request object but never looks inside it: a
``credentials_of(request) -> RequestCredentials`` reader supplied by the
HTTP edge (``homeserver.rest.client._common.request_credentials``) does, so
this module stays free of ``twisted.web``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import secrets
from typing import Any, Callable, Optional

import attrs

from homeserver.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

#: Prefixes make leaked tokens recognisable by secret scanners.
ACCESS_TOKEN_PREFIX = "est_"
REFRESH_TOKEN_PREFIX = "estr_"
LOGIN_TOKEN_PREFIX = "estl_"

#: Update a device's last-seen columns at most this often per process.
LAST_SEEN_INTERVAL_MS = 5 * 60 * 1000


def generate_token(prefix: str) -> str:
    """A new random secret (256 bits) with a recognisable prefix."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """The SHA-256 digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@attrs.frozen
class RequestCredentials:
    """What authentication needs from a request."""

    access_token: Optional[str]
    client_ip: str
    user_agent: Optional[str] = None


@attrs.frozen
class Requester:
    """Who made an authenticated request."""

    user_id: str
    device_id: Optional[str]
    is_guest: bool
    access_token_id: int
    is_admin: bool


def missing_token() -> MatrixError:
    """401 ``M_MISSING_TOKEN``."""
    return MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")


def unknown_token(soft_logout: bool = False) -> MatrixError:
    """401 ``M_UNKNOWN_TOKEN`` (``soft_logout`` when the token merely expired)."""
    if soft_logout:
        return MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token has expired", soft_logout=True)
    return MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", soft_logout=False)


class Authenticator:
    """Turns access tokens into requesters, with a short-lived cache.

    ``accounts`` is the account store (``get_access_token``,
    ``mark_access_token_used``, ``record_device_seen``); ``clock`` provides
    ``seconds()``; ``credentials_of`` reads a request's
    :class:`RequestCredentials` (needed by :meth:`get_user_by_req` only).
    """

    def __init__(
        self,
        clock: Any,
        accounts: Any,
        cache_ms: int = 2000,
        cache_size: int = 10000,
        credentials_of: Optional[Callable[[Any], RequestCredentials]] = None,
    ) -> None:
        self._clock = clock
        self._accounts = accounts
        self._credentials_of = credentials_of
        self._cache_ms = cache_ms
        self._cache_size = cache_size
        # token hash -> (cached until ms, record)
        self._cache: "collections.OrderedDict[bytes, tuple[int, Any]]" = collections.OrderedDict()
        # (user, device, ip) -> last time we wrote last_seen
        self._seen: dict[tuple[str, str, str], int] = {}
        #: Called with the user ID on every invalidate_user (after the change committed).
        self.invalidation_listeners: list[Callable[[str], Any]] = []

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def get_user_by_req(self, request: Any, allow_guest: bool = False, allow_expired: bool = False) -> Requester:
        """Authenticate a request: ``M_MISSING_TOKEN`` / ``M_UNKNOWN_TOKEN`` / guest refusal.

        ``allow_expired`` accepts an expired (but still stored) token: only
        for ending that very session (``/logout``).
        """
        if self._credentials_of is None:
            raise RuntimeError("Authenticator built without a request reader (credentials_of)")
        creds = self._credentials_of(request)
        if creds.access_token is None:
            raise missing_token()
        requester = await self.get_user_by_access_token(
            creds.access_token, allow_guest=allow_guest, allow_expired=allow_expired
        )
        if requester.device_id is not None:
            self._note_seen(requester, creds.client_ip, creds.user_agent)
        return requester

    async def get_user_by_access_token(self, token: str, allow_guest: bool = False, allow_expired: bool = False) -> Requester:
        """Authenticate a bare access token."""
        record = await self._lookup(hash_token(token))
        if record is None or record.deactivated:
            raise unknown_token()
        now = self._now_ms()
        if not allow_expired and record.valid_until_ms is not None and record.valid_until_ms <= now:
            raise unknown_token(soft_logout=True)
        if record.is_guest and not allow_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access not allowed")
        return Requester(
            user_id=record.user_id,
            device_id=record.device_id,
            is_guest=record.is_guest,
            access_token_id=record.token_id,
            is_admin=record.is_admin,
        )

    async def _lookup(self, token_hash: bytes) -> Any:
        now = self._now_ms()
        hit = self._cache.get(token_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._accounts.get_access_token(token_hash)
        if record is None:
            self._cache.pop(token_hash, None)
            return None
        if record.refresh_token_id is not None and not record.used:
            # First use of a refreshed token ends the grace period of the
            # refresh token it replaced.
            await self._accounts.mark_access_token_used(record.token_id, record.refresh_token_id)
            record = attrs.evolve(record, used=True)
        if self._cache_ms > 0:
            self._cache[token_hash] = (now + self._cache_ms, record)
            self._cache.move_to_end(token_hash)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return record

    def invalidate_user(self, user_id: str) -> None:
        """Forget every cached token of ``user_id`` (after logout, deactivation...), here and,
        through the listeners, on every other process."""
        self.evict_user(user_id)
        for listener in list(self.invalidation_listeners):
            listener(user_id)

    def evict_user(self, user_id: str) -> None:
        """Forget every cached token of ``user_id`` in this process only."""
        for key in [k for k, (_, rec) in self._cache.items() if rec.user_id == user_id]:
            del self._cache[key]

    def evict_all(self) -> None:
        """Forget every cached token in this process."""
        self._cache.clear()

    def invalidate_token(self, token: str) -> None:
        """Forget one cached token."""
        self._cache.pop(hash_token(token), None)

    def _note_seen(self, requester: Requester, ip: str, user_agent: Optional[str]) -> None:
        assert requester.device_id is not None
        key = (requester.user_id, requester.device_id, ip)
        now = self._now_ms()
        last = self._seen.get(key)
        if last is not None and now - last < LAST_SEEN_INTERVAL_MS:
            return
        if len(self._seen) > 100000:
            self._seen.clear()
        self._seen[key] = now
        d = self._accounts.record_device_seen(requester.user_id, requester.device_id, ip, user_agent, now)
        d.addErrback(lambda f: logger.warning("Could not record device last-seen: %s", f.getErrorMessage()))


async def require_admin(authenticator: Authenticator, request: Any) -> Requester:
    """Authenticate and insist on a server admin (``M_FORBIDDEN`` otherwise)."""
    requester = await authenticator.get_user_by_req(request)
    if not requester.is_admin:
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
    return requester
