"""Best-effort signals between processes over Redis pub/sub.

A signal says "look now" to whoever listens; it carries no fact that is
not also in PostgreSQL, and a listener must still find the work without
it (by polling). Redis pub/sub keeps nothing: a signal published while a
listener is disconnected is simply lost, which costs that listener one
poll interval of latency and nothing else.

Used by the federation sender: any process that queues a transaction item
for a destination signals the destination's name, and the sender that owns
it starts draining at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from twisted.internet.defer import Deferred

logger = logging.getLogger(__name__)

#: Reconnect delays of a listener (seconds), doubling up to the maximum.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0


class RedisSignals:
    """Publish and listen to named channels (needs the Twisted asyncio reactor)."""

    def __init__(self, url: str, prefix: str = "estuary:signal:") -> None:
        import redis.asyncio

        self._url = url
        self._prefix = prefix
        self._client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=5.0)
        self._listeners: list[asyncio.Task] = []

    def channel(self, name: str) -> str:
        return self._prefix + name

    def publish(self, name: str, message: str) -> "Deferred[None]":
        """Send ``message`` on channel ``name``; failures are logged, never raised."""

        async def go() -> None:
            try:
                await self._client.publish(self.channel(name), message.encode("utf-8"))
            except Exception as e:  # best effort: the listener polls anyway
                logger.debug("signal %s not sent: %s", name, e)

        return Deferred.fromFuture(asyncio.ensure_future(go()))

    def listen(self, name: str, callback: Callable[[str], Any]) -> None:
        """Call ``callback(message)`` for every message on ``name`` until :meth:`close`, reconnecting as needed."""

        async def run() -> None:
            delay = RECONNECT_MIN_S
            while True:
                pubsub = self._client.pubsub()
                try:
                    await pubsub.subscribe(self.channel(name))
                    delay = RECONNECT_MIN_S
                    async for item in pubsub.listen():
                        if item.get("type") != "message":
                            continue
                        data = item.get("data")
                        try:
                            callback(data.decode("utf-8") if isinstance(data, bytes) else str(data))
                        except Exception:
                            logger.exception("signal %s handler failed", name)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    logger.info("signal listener %s lost Redis (%s); retrying in %.1fs", name, e, delay)
                finally:
                    try:
                        await pubsub.aclose()
                    except Exception:
                        pass
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

        self._listeners.append(asyncio.ensure_future(run()))

    def close(self) -> "Deferred[None]":
        """Stop listening and close the connection pool."""

        async def go() -> None:
            for task in self._listeners:
                task.cancel()
            for task in self._listeners:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            self._listeners.clear()
            await self._client.aclose()

        return Deferred.fromFuture(asyncio.ensure_future(go()))
