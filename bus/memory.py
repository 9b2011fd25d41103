"""An in-memory Redis Streams emulation, for fast unit tests on a fake clock.

``MemoryBroker`` plays the Redis server: streams with explicit IDs and
MAXLEN trimming, consumer groups with pending entries and idle times (read
from the injected clock), blocking reads, string keys for epochs. Tests
drive its failures: ``stop()``/``start()`` (Redis going away and coming
back), ``flushall()``, ``trim()``.

``MemoryBackend`` is one client of a broker and implements
``bus.backend.Backend``; ``MemoryBus`` is a ``Bus`` over it. Because the
``Bus`` logic is shared with the Redis implementation, gap semantics are the
same by construction; the broker only has to agree with Redis on the
commands, which the integration tests check against a real server.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from bus.backend import IdNotIncreasing, NoGroup, RawEntry
from bus.bus import Bus
from bus.errors import BusUnavailable

StreamId = tuple[int, int]


def _parse_id(raw: bytes | str) -> StreamId:
    text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _format_id(sid: StreamId) -> bytes:
    return b"%d-%d" % sid


@attrs.define
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@attrs.define
class _Group:
    last_delivered: StreamId
    pending: dict[StreamId, _Pending] = attrs.Factory(dict)


@attrs.define
class _Stream:
    entries: list[tuple[StreamId, dict[bytes, bytes]]] = attrs.Factory(list)
    last_id: StreamId = (0, 0)
    groups: dict[str, _Group] = attrs.Factory(dict)

    def get(self, sid: StreamId) -> dict[bytes, bytes] | None:
        for eid, fields in self.entries:
            if eid == sid:
                return fields
        return None

    def after(self, sid: StreamId, count: int) -> list[tuple[StreamId, dict[bytes, bytes]]]:
        return [(eid, f) for eid, f in self.entries if eid > sid][:count]


@attrs.define(eq=False)
class _Waiter:
    """A blocked read: ``attempt()`` returns its result, or None to keep waiting."""

    attempt: Callable[[], object]
    deferred: Deferred
    timer: object = None
    group_key: str | None = None  # set for XREADGROUP: fails on NOGROUP


class MemoryBroker:
    """The fake Redis server shared by the ``MemoryBackend`` clients of a test."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.up = True
        self._streams: dict[str, _Stream] = {}
        self._strings: dict[str, bytes] = {}
        self._marks: dict[str, tuple[dict[str, int], float]] = {}
        self._waiters: list[_Waiter] = []

    # -- test controls -----------------------------------------------------

    def stop(self) -> None:
        """Redis goes away: every command fails, blocked reads fail now."""
        self.up = False
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            self._finish(w, BusUnavailable("connection lost"), error=True)

    def start(self, *, flush: bool = False) -> None:
        """Redis comes back; with ``flush=True`` it lost its data (no persistence)."""
        if flush:
            self._streams.clear()
            self._strings.clear()
        self.up = True

    def flushall(self) -> None:
        """FLUSHALL: every key is gone. Blocked XREADs stay blocked; group reads fail."""
        self._streams.clear()
        self._strings.clear()
        for w in list(self._waiters):
            if w.group_key is not None:
                self._waiters.remove(w)
                self._finish(w, NoGroup("NOGROUP stream deleted"), error=True)

    def trim(self, key: str, maxlen: int) -> None:
        """XTRIM key MAXLEN maxlen (exact)."""
        stream = self._streams.get(key)
        if stream is not None and len(stream.entries) > maxlen:
            del stream.entries[: len(stream.entries) - maxlen]

    def delete(self, key: str) -> None:
        """DEL key (a stream with its groups, or a string)."""
        self._streams.pop(key, None)
        self._strings.pop(key, None)

    def entry_ids(self, key: str) -> list[bytes]:
        """The IDs currently in a stream (for assertions)."""
        stream = self._streams.get(key)
        return [_format_id(eid) for eid, _ in stream.entries] if stream else []

    def pending(self, key: str, group: str) -> dict[bytes, tuple[str, int]]:
        """A group's pending entries: ID -> (consumer, delivery count)."""
        stream = self._streams.get(key)
        if stream is None or group not in stream.groups:
            return {}
        return {
            _format_id(sid): (p.consumer, p.deliveries)
            for sid, p in sorted(stream.groups[group].pending.items())
        }

    def get(self, key: str) -> bytes | None:
        """GET of a string key."""
        return self._strings.get(key)

    def set(self, key: str, value: bytes) -> None:
        """SET of a string key."""
        self._strings[key] = value

    # -- machinery -----------------------------------------------------------

    def _finish(self, w: _Waiter, result, error=False) -> None:
        if w.timer is not None and w.timer.active():
            w.timer.cancel()
        if error:
            w.deferred.errback(result)
        else:
            w.deferred.callback(result)

    def _wake(self) -> None:
        for w in list(self._waiters):
            if w not in self._waiters:
                continue
            try:
                result = w.attempt()
            except Exception as e:
                self._waiters.remove(w)
                self._finish(w, e, error=True)
                continue
            if result is not None:
                self._waiters.remove(w)
                self._finish(w, result)

    def _block(self, attempt, block_ms: int | None, empty, group_key=None) -> Deferred:
        if not self.up:
            return fail(BusUnavailable("connection refused"))
        try:
            result = attempt()
        except Exception as e:
            return fail(e)
        if result is not None or block_ms is None:
            return succeed(result if result is not None else empty)

        def cancel(d):
            if w in self._waiters:
                self._waiters.remove(w)
            if w.timer is not None and w.timer.active():
                w.timer.cancel()

        w = _Waiter(attempt=attempt, deferred=Deferred(cancel), group_key=group_key)

        def timeout():
            w.timer = None
            if w in self._waiters:
                self._waiters.remove(w)
                w.deferred.callback(empty)

        if block_ms > 0:  # BLOCK 0 waits forever, as in Redis
            w.timer = self.clock.callLater(block_ms / 1000.0, timeout)
        self._waiters.append(w)
        return w.deferred

    def _group(self, key: str, group: str) -> tuple[_Stream, _Group]:
        stream = self._streams.get(key)
        if stream is None or group not in stream.groups:
            raise NoGroup(f"NOGROUP No such key '{key}' or consumer group '{group}'")
        return stream, stream.groups[group]

    # -- commands --------------------------------------------------------------

    def xadd(self, key, entry_id, fields, maxlen) -> None:
        """XADD with an explicit ID and exact MAXLEN trimming; refuses IDs not above the last."""
        sid = _parse_id(entry_id)
        stream = self._streams.setdefault(key, _Stream())
        if sid <= stream.last_id:
            raise IdNotIncreasing(
                "The ID specified in XADD is equal or smaller than the target stream top item"
            )
        stream.entries.append((sid, dict(fields)))
        stream.last_id = sid
        if maxlen is not None:
            self.trim(key, maxlen)
        self._wake()

    def xread(self, cursors, count, block_ms) -> Deferred:
        """XREAD: entries after each cursor; blocks up to ``block_ms`` (None: never)."""
        def attempt():
            out = []
            for key, cursor in cursors.items():
                stream = self._streams.get(key)
                if stream is None:
                    continue
                got = stream.after(_parse_id(cursor), count)
                if got:
                    out.append((key, [(_format_id(eid), dict(f)) for eid, f in got]))
            return out or None

        return self._block(attempt, block_ms, [])

    def xreadgroup(self, key, group, consumer, start, count, block_ms) -> Deferred:
        """XREADGROUP: ``>`` for new entries (blocking), an ID for this consumer's pending ones."""
        now = self.clock.seconds

        def attempt():
            stream, grp = self._group(key, group)
            if start == ">":
                got = stream.after(grp.last_delivered, count)
                if not got:
                    return None
                for eid, _ in got:
                    grp.pending[eid] = _Pending(consumer, now(), 1)
                grp.last_delivered = got[-1][0]
                return [(_format_id(eid), dict(f)) for eid, f in got]
            floor = _parse_id(start)
            out: list[RawEntry] = []
            for sid in sorted(grp.pending):
                p = grp.pending[sid]
                if sid > floor and p.consumer == consumer and len(out) < count:
                    p.deliveries += 1
                    p.delivered_at = now()
                    out.append((_format_id(sid), dict(stream.get(sid) or {})))
            return out

        if start != ">":
            block_ms = None
        return self._block(attempt, block_ms, [], group_key=key)

    def last_id(self, key: str) -> bytes | None:
        """The ID of the newest entry in the stream, if any."""
        stream = self._streams.get(key)
        return _format_id(stream.entries[-1][0]) if stream and stream.entries else None

    def raise_marks(self, key: str, marks: Mapping[str, int], ttl_ms: int) -> None:
        """Keep the highest value per field; the hash expires ``ttl_ms`` from now."""
        merged = self.get_marks(key)
        for field, value in marks.items():
            if merged.get(field, -1) < int(value):
                merged[field] = int(value)
        self._marks[key] = (merged, self.clock.seconds() + ttl_ms / 1000.0)

    def get_marks(self, key: str) -> dict[str, int]:
        """The unexpired marks of ``key``."""
        marks, expires = self._marks.get(key, ({}, 0.0))
        return dict(marks) if expires > self.clock.seconds() else {}

    def set_nx_get(self, key: str, value: bytes) -> bytes:
        """SET key value NX, then GET key."""
        self._strings.setdefault(key, value)
        return self._strings[key]

    def group_create(self, key: str, group: str) -> bool:
        """XGROUP CREATE key group 0 MKSTREAM; False if it existed (BUSYGROUP)."""
        stream = self._streams.setdefault(key, _Stream())
        if group in stream.groups:
            return False
        stream.groups[group] = _Group(last_delivered=(0, 0))
        return True

    def xack(self, key: str, group: str, ids: Sequence[bytes]) -> int:
        """XACK: drop IDs from the group's pending list; how many were pending."""
        stream = self._streams.get(key)
        if stream is None or group not in stream.groups:
            return 0
        pending = stream.groups[group].pending
        return sum(1 for raw in ids if pending.pop(_parse_id(raw), None) is not None)

    def xautoclaim(self, key, group, consumer, min_idle_ms, start, count):
        """XAUTOCLAIM: take over entries idle long enough; report deleted ones."""
        stream, grp = self._group(key, group)
        now = self.clock.seconds()
        floor = _parse_id(start)
        claimed: list[RawEntry] = []
        deleted: list[bytes] = []
        for sid in sorted(grp.pending):
            if sid < floor:
                continue
            if len(claimed) >= count:
                return _format_id(sid), claimed, deleted
            p = grp.pending[sid]
            if (now - p.delivered_at) * 1000 < min_idle_ms:
                continue
            fields = stream.get(sid)
            if fields is None:
                del grp.pending[sid]
                deleted.append(_format_id(sid))
                continue
            p.consumer = consumer
            p.delivered_at = now
            p.deliveries += 1
            claimed.append((_format_id(sid), dict(fields)))
        return b"0-0", claimed, deleted


class MemoryBackend:
    """One client of a ``MemoryBroker``; implements ``bus.backend.Backend``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.closed = False

    def _call(self, fn, *args) -> Deferred:
        if self.closed:
            return fail(RuntimeError("backend closed"))
        if not self.broker.up:
            return fail(BusUnavailable("connection refused"))
        try:
            return succeed(fn(*args))
        except Exception as e:
            return fail(e)

    def xadd(self, key: str, entry_id: str, fields: Mapping[bytes, bytes], maxlen: int | None):
        """See ``Backend.xadd``."""
        return self._call(self.broker.xadd, key, entry_id, fields, maxlen)

    def xread(self, cursors: Mapping[str, str], count: int, block_ms: int | None):
        """See ``Backend.xread``."""
        if self.closed:
            return fail(RuntimeError("backend closed"))
        return self.broker.xread(dict(cursors), count, block_ms)

    def last_id(self, key: str):
        """See ``Backend.last_id``."""
        return self._call(self.broker.last_id, key)

    def raise_marks(self, key: str, marks: Mapping[str, int], ttl_ms: int):
        """See ``Backend.raise_marks``."""
        return self._call(self.broker.raise_marks, key, dict(marks), ttl_ms)

    def get_marks(self, key: str):
        """See ``Backend.get_marks``."""
        return self._call(self.broker.get_marks, key)

    def ensure_epochs(self, keys: Sequence[str], token: bytes):
        """See ``Backend.ensure_epochs``."""
        return self._call(lambda: [self.broker.set_nx_get(k, token) for k in keys])

    def get_epochs(self, keys: Sequence[str]):
        """See ``Backend.get_epochs``."""
        return self._call(lambda: [self.broker.get(k) for k in keys])

    def group_create(self, key: str, group: str):
        """See ``Backend.group_create``."""
        return self._call(self.broker.group_create, key, group)

    def xreadgroup(self, key, group, consumer, start, count, block_ms):
        """See ``Backend.xreadgroup``."""
        if self.closed:
            return fail(RuntimeError("backend closed"))
        return self.broker.xreadgroup(key, group, consumer, start, count, block_ms)

    def xack(self, key: str, group: str, ids: Sequence[bytes]):
        """See ``Backend.xack``."""
        return self._call(self.broker.xack, key, group, ids)

    def xautoclaim(self, key, group, consumer, min_idle_ms, start, count):
        """XAUTOCLAIM: take over entries idle long enough; report deleted ones."""
        """See ``Backend.xautoclaim``."""
        return self._call(self.broker.xautoclaim, key, group, consumer, min_idle_ms, start, count)

    def ping(self):
        """See ``Backend.ping``."""
        return self._call(lambda: None)

    def close(self):
        """See ``Backend.close``."""
        self.closed = True
        return succeed(None)


class MemoryBus(Bus):
    """A ``Bus`` over an in-memory broker; same interface and gap semantics.

    Several ``MemoryBus`` instances sharing one ``broker`` behave like
    processes sharing one Redis.
    """

    def __init__(self, clock: IReactorTime, broker: MemoryBroker | None = None, **kwargs) -> None:
        self.broker = broker if broker is not None else MemoryBroker(clock)
        super().__init__(MemoryBackend(self.broker), clock, **kwargs)
