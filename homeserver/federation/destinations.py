"""Per-destination backoff, persisted in PostgreSQL and shared by every
outbound path (the HTTP client and the transaction sender)."""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Optional, Protocol

from homeserver.federation.backoff import BackoffPolicy, DestinationRetry
from homeserver.federation.errors import NotRetryingDestination

logger = logging.getLogger(__name__)


class RetryStore(Protocol):
    """What :class:`storage.stores.federation.FederationQueueStore` provides for backoff."""

    def get_destination_retry(self, destination: str) -> Any: ...

    def set_destination_retry(self, destination: str, failure_count: int, retry_last_ts: int, retry_interval_ms: int) -> Any: ...


class DestinationBackoff:
    """Decides whether a destination may be contacted and records outcomes."""

    def __init__(
        self,
        clock: Any,
        store: RetryStore,
        policy: BackoffPolicy,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._store = store
        self._policy = policy
        self._jitter = jitter

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def get(self, destination: str) -> DestinationRetry:
        """The stored state (no backoff when there is none)."""
        row: Optional[tuple[int, int, int]] = await self._store.get_destination_retry(destination)
        if row is None:
            return DestinationRetry(destination)
        return DestinationRetry(destination, *row)

    async def check(self, destination: str) -> None:
        """Raise :class:`NotRetryingDestination` while ``destination`` is backing off."""
        state = await self.get(destination)
        if not state.can_retry(self.now_ms()):
            raise NotRetryingDestination(destination, state.retry_at_ms)

    async def record_failure(self, destination: str) -> DestinationRetry:
        """One more failure: grow the interval; returns the new state."""
        state = (await self.get(destination)).after_failure(self._policy, self.now_ms(), self._jitter())
        await self._store.set_destination_retry(destination, state.failure_count, state.retry_last_ts, state.retry_interval_ms)
        logger.info("Backing off %s for %d ms after %d failures", destination, state.retry_interval_ms, state.failure_count)
        return state

    async def record_success(self, destination: str) -> bool:
        """Clear any backoff; returns whether there was some."""
        state = await self.get(destination)
        if state.failure_count == 0 and state.retry_interval_ms == 0:
            return False
        await self._store.set_destination_retry(destination, 0, 0, 0)
        return True
