"""The few Redis Stream commands the bus needs, behind one small interface.

``Bus`` holds all the logic (gap detection, epochs, retries, consumer-group
loops) and talks to Redis only through a ``Backend``. ``RedisBackend`` runs
the commands with ``redis.asyncio``; ``bus.memory.MemoryBackend`` emulates
them in memory on a fake clock, so the logic is tested once, fast, and the
two implementations cannot drift apart in their gap semantics.

Every method returns a ``Deferred``. Failures are translated into
``BusUnavailable`` (connection trouble: retry later), ``NoGroup`` (the
stream or group does not exist) and ``IdNotIncreasing`` (XADD refused the
explicit ID); anything else is a bug and propagates as is.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Mapping, Protocol, Sequence, TypeVar

from twisted.internet.defer import CancelledError, Deferred

from bus.cputime import timed
from bus.errors import BusError, BusUnavailable
from bus.metrics import CPU_SECONDS

# One raw entry as read from Redis: its ID and its field/value pairs. The
# fields are empty for an entry still pending in a group but deleted from
# the stream (trimmed).
RawEntry = tuple[bytes, dict[bytes, bytes]]

T = TypeVar("T")


class NoGroup(BusError):
    """The stream key or the consumer group does not exist (Redis NOGROUP)."""


class IdNotIncreasing(BusError):
    """XADD refused an explicit ID not above the stream's last ID."""


class Backend(Protocol):
    """The Redis commands used by ``Bus``; see ``RedisBackend`` for their meaning."""

    def xadd(
        self, key: str, entry_id: str, fields: Mapping[bytes, bytes], maxlen: int | None
    ) -> Deferred[None]:
        """XADD key [MAXLEN ~ maxlen] entry_id fields..."""

    def xread(
        self, cursors: Mapping[str, str], count: int, block_ms: int | None
    ) -> Deferred[list[tuple[str, list[RawEntry]]]]:
        """XREAD [COUNT] [BLOCK] STREAMS keys... ids...; keys with no entries are left out."""

    def last_id(self, key: str) -> Deferred[bytes | None]:
        """The ID of the newest entry still in the stream, or None if empty/missing."""

    def ensure_epochs(self, keys: Sequence[str], token: bytes) -> Deferred[list[bytes]]:
        """SET key token NX then GET key, for each key: the epochs now in force."""

    def get_epochs(self, keys: Sequence[str]) -> Deferred[list[bytes | None]]:
        """GET each key."""

    def group_create(self, key: str, group: str) -> Deferred[bool]:
        """XGROUP CREATE key group 0 MKSTREAM; False if the group existed (BUSYGROUP)."""

    def xreadgroup(
        self, key: str, group: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> Deferred[list[RawEntry]]:
        """XREADGROUP GROUP group consumer [COUNT] [BLOCK] STREAMS key start."""

    def xack(self, key: str, group: str, ids: Sequence[bytes]) -> Deferred[int]:
        """XACK key group ids..."""

    def xautoclaim(
        self, key: str, group: str, consumer: str, min_idle_ms: int, start: bytes, count: int
    ) -> Deferred[tuple[bytes, list[RawEntry], list[bytes]]]:
        """XAUTOCLAIM: (next cursor, claimed entries, IDs deleted from the stream)."""

    def raise_marks(self, key: str, marks: Mapping[str, int], ttl_ms: int) -> Deferred[None]:
        """For each field, HSET key field value unless the stored value is higher; then PEXPIRE key ttl_ms."""

    def get_marks(self, key: str) -> Deferred[dict[str, int]]:
        """HGETALL key, values as integers."""

    def ping(self) -> Deferred[None]:
        """PING."""

    def close(self) -> Deferred[None]:
        """Release connections; no command may be sent afterwards."""


def _classify(e: Exception) -> Exception:
    """Map a redis-py exception onto the bus' errors."""
    import redis.exceptions as rx

    if isinstance(e, (rx.ConnectionError, rx.TimeoutError, rx.ReadOnlyError, OSError)):
        # ConnectionError includes BusyLoadingError (Redis loading its
        # dataset after a restart); READONLY means we reached a replica
        # during a failover. Both go away by themselves.
        return BusUnavailable(f"{type(e).__name__}: {e}")
    if isinstance(e, rx.ResponseError):
        msg = str(e)
        if msg.startswith(("NOGROUP", "UNBLOCKED")):
            # UNBLOCKED: Redis >= 7 wakes a blocked XREADGROUP with this
            # error when its stream key is deleted (FLUSHALL, DEL).
            return NoGroup(msg)
        if "equal or smaller than the target stream top item" in msg:
            return IdNotIncreasing(msg)
        if msg.startswith(("MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")):
            return BusUnavailable(msg)
    return e


class RedisBackend:
    """``Backend`` over ``redis.asyncio``; needs the Twisted asyncio reactor.

    Each command runs as an asyncio task and is handed to Twisted code as a
    ``Deferred`` (cancelling the Deferred cancels the task, which makes
    redis-py drop the connection it was using). redis-py's own retries are
    disabled: the bus retries with its own backoff on its injected clock.
    """

    def __init__(self, client) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str, *, command_timeout: float = 30.0) -> "RedisBackend":
        """A backend on ``url`` (``redis://host:port/db``).

        ``command_timeout`` bounds every command, so it must exceed the
        longest XREAD BLOCK the bus issues.
        """
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=command_timeout,
            socket_connect_timeout=min(command_timeout, 5.0),
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=30,
        )
        return cls(client)

    def _run(self, coro: Awaitable[T], op: str = "control") -> Deferred[T]:
        # The command's CPU (redis-py encoding, parsing, our conversion) is
        # counted under ``op`` in estuary_bus_cpu_seconds_total.
        add = CPU_SECONDS.labels(op).inc

        async def guarded():
            try:
                return await timed(coro, add)
            except Exception as e:
                raise _classify(e) from e

        def translate_cancel(failure):
            # Twisted code expects its own CancelledError from a cancelled
            # Deferred, not asyncio's (a BaseException it would not catch).
            failure.trap(asyncio.CancelledError)
            raise CancelledError()

        d = Deferred.fromFuture(asyncio.ensure_future(guarded()))
        d.addErrback(translate_cancel)
        return d

    def xadd(self, key, entry_id, fields, maxlen):
        """See ``Backend.xadd``."""

        async def go():
            await self._client.xadd(
                key, dict(fields), id=entry_id, maxlen=maxlen, approximate=True
            )

        return self._run(go(), "publish")

    def xread(self, cursors, count, block_ms):
        """See ``Backend.xread``."""

        async def go():
            res = await self._client.xread(dict(cursors), count=count, block=block_ms)
            out = []
            for key, entries in res or []:
                name = key.decode("utf-8") if isinstance(key, bytes) else key
                out.append((name, [(eid, fields or {}) for eid, fields in entries]))
            return out

        return self._run(go(), "consume")

    def last_id(self, key):
        """See ``Backend.last_id``."""

        async def go():
            res = await self._client.xrevrange(key, count=1)
            return res[0][0] if res else None

        return self._run(go())

    def ensure_epochs(self, keys, token):
        """See ``Backend.ensure_epochs``."""

        async def go():
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, token, nx=True)
                pipe.get(key)
            res = await pipe.execute()
            return list(res[1::2])

        return self._run(go())

    def get_epochs(self, keys):
        """See ``Backend.get_epochs``."""

        async def go():
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return list(await pipe.execute())

        return self._run(go())

    def group_create(self, key, group):
        """See ``Backend.group_create``; only BUSYGROUP is swallowed."""
        import redis.exceptions as rx

        async def go():
            try:
                await self._client.xgroup_create(key, group, id="0", mkstream=True)
            except rx.ResponseError as e:
                if str(e).startswith("BUSYGROUP"):
                    return False
                raise
            return True

        return self._run(go())

    def xreadgroup(self, key, group, consumer, start, count, block_ms):
        """See ``Backend.xreadgroup``."""

        async def go():
            res = await self._client.xreadgroup(
                group, consumer, {key: start}, count=count, block=block_ms
            )
            out = []
            for _key, entries in res or []:
                out.extend((eid, fields or {}) for eid, fields in entries)
            return out

        return self._run(go(), "consume")

    def xack(self, key, group, ids):
        """See ``Backend.xack``."""
        return self._run(self._client.xack(key, group, *ids), "consume")

    def xautoclaim(self, key, group, consumer, min_idle_ms, start, count):
        """See ``Backend.xautoclaim``."""

        async def go():
            res = await self._client.xautoclaim(
                key, group, consumer, min_idle_ms, start_id=start, count=count
            )
            cursor, entries = res[0], res[1]
            deleted = list(res[2]) if len(res) > 2 else []
            return cursor, [(eid, fields or {}) for eid, fields in entries], deleted

        return self._run(go(), "consume")

    #: KEYS[1] = the marks hash; ARGV = ttl_ms, then field, value pairs. Keeps the maximum per field.
    _RAISE_MARKS = (
        "for i = 2, #ARGV, 2 do "
        "local cur = redis.call('HGET', KEYS[1], ARGV[i]) "
        "if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then "
        "redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end end "
        "redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1"
    )

    def raise_marks(self, key, marks, ttl_ms):
        """See ``Backend.raise_marks`` (one Lua script: atomic, one round trip)."""

        async def go():
            args: list = [int(ttl_ms)]
            for field, value in marks.items():
                args.extend([field, int(value)])
            await self._client.eval(self._RAISE_MARKS, 1, key, *args)

        return self._run(go(), "marks")

    def get_marks(self, key):
        """See ``Backend.get_marks``."""

        async def go():
            raw = await self._client.hgetall(key)
            out = {}
            for field, value in (raw or {}).items():
                name = field.decode("utf-8") if isinstance(field, bytes) else field
                out[name] = int(value)
            return out

        return self._run(go(), "marks")

    def ping(self):
        """See ``Backend.ping``."""

        async def go():
            await self._client.ping()

        return self._run(go())

    def close(self):
        """See ``Backend.close``."""
        return self._run(self._client.aclose())
