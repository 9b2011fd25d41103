"""The Matrix rate-limit policy over a generic token-bucket backend.

Which actions are limited, keyed by what: logins per client address and per
account, failed logins per account, registrations per address, messages and
joins per user. Server admins are exempt from the per-user limits; listed
addresses from the per-address ones. Refusals are 429 ``M_LIMIT_EXCEEDED``
with ``retry_after_ms``.

``backend`` is a :class:`bus.ratelimit.RedisRateLimiter` (shared by every
instance) or :class:`bus.ratelimit.MemoryRateLimiter` (the interface is only
``acquire(key, rate, burst, cost) -> Deferred[decision]``). When the backend
fails (Redis restarting), requests are let through and a warning is logged:
losing rate limiting for a moment beats refusing every login.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import limit_exceeded

logger = logging.getLogger(__name__)


class RateLimiter:
    """Per-action checks; ``config`` is a :class:`homeserver.config.accounts.RateLimitsConfig`."""

    def __init__(self, backend: Any, config: Any) -> None:
        self._backend = backend
        self._config = config
        self._exempt = frozenset(config.exempt_addresses)

    async def _check(self, key: str, limit: Any, cost: int = 1) -> None:
        if not self._config.enabled:
            return
        try:
            decision = await self._backend.acquire(key, limit.per_second, limit.burst, cost)
        except Exception as e:  # noqa: BLE001 - any backend failure fails open
            logger.warning("Rate limiter unavailable, allowing %s: %s", key, e)
            return
        if not decision.allowed:
            raise limit_exceeded(decision.retry_after_ms)

    async def check_login_address(self, ip: str) -> None:
        """A login attempt from ``ip``."""
        if ip not in self._exempt:
            await self._check(f"login:ip:{ip}", self._config.login_per_address)

    async def check_login_account(self, account: str) -> None:
        """A login attempt naming ``account`` (a lowercased user id)."""
        await self._check(f"login:account:{account}", self._config.login_per_account)

    async def check_failed_login(self, account: str) -> None:
        """Refuse while ``account`` has no failed attempts left (takes nothing)."""
        await self._check(f"login:failed:{account}", self._config.login_failed_attempts, cost=0)

    async def record_failed_login(self, account: str) -> None:
        """Count one failed login of ``account`` (never raises)."""
        if not self._config.enabled:
            return
        try:
            await self._backend.acquire(
                f"login:failed:{account}",
                self._config.login_failed_attempts.per_second,
                self._config.login_failed_attempts.burst,
                1,
            )
        except Exception as e:  # noqa: BLE001
            logger.warning("Rate limiter unavailable recording a failed login: %s", e)

    async def check_registration_address(self, ip: str, consume: bool = True) -> None:
        """An account about to be created from ``ip``.

        ``consume=False`` only checks that one is still allowed (for the
        requests of a UIA exchange, which must not use up the bucket).
        """
        if ip not in self._exempt:
            await self._check(f"register:ip:{ip}", self._config.registration_per_address, cost=1 if consume else 0)

    async def check_availability_address(self, ip: str) -> None:
        """A username-availability or registration-token validity check from ``ip``."""
        if ip not in self._exempt:
            await self._check(f"available:ip:{ip}", self._config.availability_per_address)

    async def check_message(self, requester: Any) -> None:
        """A message sent by ``requester`` (admins exempt)."""
        if not requester.is_admin:
            await self._check(f"message:user:{requester.user_id}", self._config.message_per_user)

    async def check_join(self, requester: Any) -> None:
        """A room join by ``requester`` (admins exempt)."""
        if not requester.is_admin:
            await self._check(f"join:user:{requester.user_id}", self._config.join_per_user)

