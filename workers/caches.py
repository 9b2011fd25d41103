"""The ``caches`` stream: cache invalidations every process applies (DESIGN.md §3).

Any instance may change something other instances cache (a logout, a
deactivation, a password change on whichever instance served it), so each
instance publishes on its own shard of ``caches``: shard = the index of its
name among the config's sorted instance names. Positions come from one
PostgreSQL sequence (``estuary_caches_positions``), hence strictly increase
on every shard, across restarts, whoever publishes. Every instance tails all
shards; an entry evicts what it names, and a gap (Redis flushed, trimmed,
a publisher restarted) evicts everything, since what was missed is unknown.

Payloads (JSON objects):

- ``{"kind": "user_tokens", "user_id": "@u:hs"}``: the access tokens of the
  user (after logout, logout-all, deactivation, password change, device
  deletion) must be looked up again.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from twisted.internet import defer

logger = logging.getLogger(__name__)

STREAM = "caches"
SEQUENCE = "estuary_caches_positions"
KIND_USER_TOKENS = "user_tokens"


def caches_shard(instance_names: Any, name: str) -> int:
    """The ``caches`` shard an instance publishes on: its index among the sorted names."""
    return sorted(instance_names).index(name)


def _next_position(txn: Any) -> int:
    # IF NOT EXISTS: the first publisher after install creates it; no migration
    # needed for a sequence whose only contract is "strictly increasing".
    txn.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
    txn.execute(f"SELECT nextval('{SEQUENCE}')")
    return int(txn.fetchone()[0])


class CacheInvalidations:
    """Publishes this instance's invalidations and applies everyone's.

    ``handlers`` maps a payload ``kind`` to ``fn(payload)``; ``evict_all`` is
    called on every gap.
    """

    def __init__(self, database: Any, bus: Any, shard: int, shard_count: int,
                 handlers: Mapping[str, Callable[[Mapping[str, Any]], None]], evict_all: Callable[[], None]) -> None:
        self._database = database
        self._bus = bus
        self._shard = shard
        self._shard_count = shard_count
        self._handlers = dict(handlers)
        self._evict_all = evict_all
        self._lock = defer.DeferredLock()
        self._subscription: Any = None

    def add_handler(self, kind: str, handler: Callable[[Mapping[str, Any]], None]) -> None:
        """Apply entries of ``kind`` with ``handler(payload)``."""
        self._handlers[kind] = handler

    def start(self) -> None:
        """Tail every shard from its start (replaying old evictions is harmless)."""
        from bus import ShardId

        self._subscription = self._bus.subscribe(
            {ShardId(STREAM, s): 0 for s in range(self._shard_count)}, self._on_entry, self._on_gap, name="caches",
        )

    def stop(self) -> Any:
        """Stop tailing."""
        return self._subscription.stop() if self._subscription is not None else defer.succeed(None)

    def publish(self, payload: Mapping[str, Any]) -> "defer.Deferred[None]":
        """Announce an invalidation (call after the change committed). Never fails: a lost
        announcement shows up as a gap (the next one's ``prev``), which evicts everything."""

        async def go() -> None:
            # One at a time: positions reach the bus in the order they were taken.
            await self._lock.acquire()
            try:
                try:
                    position = await self._database.run_interaction("caches_position", _next_position)
                except Exception:
                    # Two processes creating the sequence at the same instant:
                    # one gets a unique violation; by now it exists.
                    position = await self._database.run_interaction("caches_position", _next_position)
                d = self._bus.publish(STREAM, self._shard, position, dict(payload))
            finally:
                self._lock.release()
            try:
                await d
            except Exception as e:
                logger.warning("could not publish cache invalidation %s: %r", payload, e)

        d = defer.ensureDeferred(go())
        d.addErrback(lambda f: logger.warning("cache invalidation %s not published: %s", payload, f.getErrorMessage()))
        return d

    def _on_entry(self, entry: Any) -> None:
        payload = entry.payload
        handler = self._handlers.get(payload.get("kind")) if isinstance(payload, Mapping) else None
        if handler is None:
            logger.debug("ignoring caches entry %s", payload)
            return
        handler(payload)

    def _on_gap(self, gap: Any) -> None:
        logger.info("caches stream gap on shard %s (%s): clearing caches", gap.shard, gap.reason)
        self._evict_all()


def wire_token_invalidation(authenticator: Any, invalidations: CacheInvalidations) -> None:
    """Make ``Authenticator.invalidate_user`` reach every process, and apply the others' here."""

    def on_user_tokens(payload: Mapping[str, Any]) -> None:
        user_id = payload.get("user_id")
        if isinstance(user_id, str):
            authenticator.evict_user(user_id)

    invalidations.add_handler(KIND_USER_TOKENS, on_user_tokens)
    authenticator.invalidation_listeners.append(
        lambda user_id: invalidations.publish({"kind": KIND_USER_TOKENS, "user_id": user_id})
    )
