"""The bus: publish facts, tail shards with gap detection, consumer groups.

All logic lives here and talks to Redis through a ``bus.backend.Backend``:
``Bus.from_url`` uses Redis (``redis.asyncio``, under the Twisted asyncio
reactor), ``bus.memory.MemoryBus`` an in-memory emulation on a fake clock.
Every public method returns a ``Deferred``; handlers passed in may return a
value, a ``Deferred`` or a coroutine. Time (backoff, epoch checks, block
timeouts) comes from the injected ``clock``; the global reactor is never
imported. The wire format and the gap rules are in bus/PROTOCOL.md.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable, Mapping, Union

import attrs
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    ensureDeferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from bus import metrics
from bus.backend import Backend, IdNotIncreasing, NoGroup, RedisBackend
from bus.backoff import Backoff
from bus.cputime import timed, timed_call
from bus.codec import after_id, entry_id, from_fields, to_fields
from bus.errors import (
    BusClosed,
    BusUnavailable,
    MalformedEntry,
    PositionNotIncreasing,
    PublishDropped,
)
from bus.keys import DEFAULT_NAMESPACE, epoch_key, marks_key, stream_key, validate_group_name
from bus.model import (
    GAP_CLAIM_DELETED,
    GAP_EPOCH,
    GAP_GROUP_RESET,
    GAP_MALFORMED,
    Entry,
    Gap,
    ShardId,
    gap_before,
    validate_position,
)

log = Logger()

# What a handler may return: nothing, a Deferred or an awaitable.
HandlerResult = Union[None, Deferred, Awaitable[Any]]
EntryHandler = Callable[[Entry], HandlerResult]
GapHandler = Callable[[Gap], Any]

DEFAULT_MAXLEN = 100_000

_CONSUME_CPU = metrics.CPU_SECONDS.labels("consume").inc
_PUBLISH_CPU = metrics.CPU_SECONDS.labels("publish").inc


def _call(fn: Callable[..., Any], *args: Any) -> Deferred:
    """Call a handler and return its outcome as a Deferred."""
    try:
        result = fn(*args)
    except Exception:
        return fail()
    if isinstance(result, Deferred):
        return result
    if hasattr(result, "__await__"):
        return ensureDeferred(result)
    return succeed(result)


def _split_id(raw: bytes | str) -> tuple[int, int] | None:
    """(ms, seq) of a Redis Stream ID, or None if it is not one."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    if not ms.isdigit() or not (seq or "0").isdigit():
        return None
    return int(ms), int(seq or 0)


def _new_token() -> bytes:
    return os.urandom(16).hex().encode("ascii")


class _Loop:
    """A long-running coroutine that can be stopped between steps.

    Only waits that are safe to abandon (Redis reads, backoff sleeps) are
    cancelled by ``stop()``; a running handler is always allowed to finish.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._stopping = False
        self._current: Deferred | None = None
        self._result: Failure | None = None
        self._finished = False
        self._observers: list[Deferred] = []

    def _start(self) -> None:
        d = Deferred.fromCoroutine(self._guarded())
        d.addErrback(lambda f: None)  # already recorded by _guarded

    async def _guarded(self) -> None:
        abandoned = False
        try:
            await self._run()
        except CancelledError:
            if not self._stopping:
                self._result = Failure()
        except Exception:
            self._result = Failure()
            log.failure("bus loop {loop!r} stopped by an error", self._result, loop=self)
        except GeneratorExit:
            # The loop was abandoned: it waited on something that can never
            # fire (a handler that never finished) and the garbage collector
            # is closing the coroutine. The loop did not end, so its
            # observers are not told it did: firing them would run their
            # code (e.g. the rest of ``Bus.close``) from inside the
            # collector, resuming coroutines it may already have closed
            # ("cannot reuse already awaited coroutine").
            abandoned = True
            raise
        finally:
            if not abandoned:
                self._finished = True
                observers, self._observers = self._observers, []
                for d in observers:
                    self._fire(d)

    def _fire(self, d: Deferred) -> None:
        if self._result is None:
            d.callback(None)
        else:
            d.errback(self._result)

    async def _run(self) -> None:
        raise NotImplementedError

    async def _interruptible(self, d: Deferred) -> Any:
        self._current = d
        try:
            return await d
        finally:
            self._current = None

    async def _sleep(self, seconds: float) -> None:
        await self._interruptible(deferLater(self._clock, seconds, lambda: None))

    @property
    def running(self) -> bool:
        """True until the loop has ended (stopped, or failed)."""
        return not self._finished

    def when_done(self) -> Deferred[None]:
        """A Deferred that fires when the loop ends: None, or the error that ended it."""
        d: Deferred[None] = Deferred()
        if self._finished:
            self._fire(d)
        else:
            self._observers.append(d)
        return d

    def stop(self) -> Deferred[None]:
        """Stop after the current step; fires when the loop has ended."""
        self._stopping = True
        if self._current is not None:
            self._current.cancel()
        return self.when_done()


class _EpochWatch:
    """Tracks the epoch token of a set of shards and reports those that changed."""

    def __init__(self, bus: "Bus", shards: Iterable[ShardId]) -> None:
        self._bus = bus
        self._shards = list(shards)
        self._keys = [epoch_key(s.stream, s.shard, bus.namespace) for s in self._shards]
        self._epochs: list[bytes | None] | None = None
        self.next_check = 0.0

    def due(self) -> bool:
        """Whether a check is due (first use, interval elapsed, or after a reconnect)."""
        return self._epochs is None or self._bus.clock.seconds() >= self.next_check

    def force(self) -> None:
        """Check at the next opportunity (after a reconnect)."""
        self.next_check = 0.0

    async def check(self, loop: _Loop) -> list[ShardId]:
        """Shards whose epoch vanished or changed since the last check.

        The first check only establishes the epochs. Changed epochs are
        re-established before returning, so a later loss is seen again.
        """
        backend = self._bus.backend
        if self._epochs is None:
            self._epochs = list(
                await loop._interruptible(backend.ensure_epochs(self._keys, _new_token()))
            )
            changed: list[ShardId] = []
        else:
            now = await loop._interruptible(backend.get_epochs(self._keys))
            idx = [i for i, v in enumerate(now) if v is None or v != self._epochs[i]]
            changed = [self._shards[i] for i in idx]
            if idx:
                fresh = await loop._interruptible(
                    backend.ensure_epochs([self._keys[i] for i in idx], _new_token())
                )
                for i, v in zip(idx, fresh):
                    self._epochs[i] = v
        self.next_check = self._bus.clock.seconds() + self._bus.epoch_check_interval
        return changed


class Subscription(_Loop):
    """Tails a set of shards from given positions; made by ``Bus.subscribe``.

    Calls ``on_entry(entry)`` for each entry in order and ``on_gap(gap)``
    whenever entries may have been missed. ``on_gap`` may return (or fire
    with) the position up to which the caller caught up from PostgreSQL;
    the subscription then skips entries up to it. An exception from a
    handler ends the subscription (``when_done()`` fails with it): silently
    skipping a fact would break the caller's view of the shard.
    """

    def __init__(
        self,
        bus: "Bus",
        positions: Mapping[ShardId, int],
        on_entry: EntryHandler,
        on_gap: GapHandler,
        name: str,
    ) -> None:
        super().__init__(bus.clock)
        if not positions:
            raise ValueError("subscribe needs at least one shard")
        self._bus = bus
        self._positions: dict[ShardId, int] = {}
        self._cursors: dict[ShardId, str] = {}
        for shard, position in positions.items():
            if not isinstance(shard, ShardId):
                raise TypeError(f"expected ShardId, got {shard!r}")
            self._cursors[shard] = after_id(position)
            self._positions[shard] = position
        self._keys = {s: stream_key(s.stream, s.shard, bus.namespace) for s in self._positions}
        self._by_key = {k: s for s, k in self._keys.items()}
        self._on_entry = on_entry
        self._on_gap = on_gap
        self._name = name
        self._epochs = _EpochWatch(bus, self._positions)
        self._start()

    def __repr__(self) -> str:
        return f"<Subscription {self._name} {sorted(map(str, self._positions))}>"

    @property
    def positions(self) -> dict[ShardId, int]:
        """The last position delivered (or caught up to) on each shard."""
        return dict(self._positions)

    async def _run(self) -> None:
        bus = self._bus
        attempt = 0
        while not self._stopping:
            try:
                if self._epochs.due():
                    for shard in await self._epochs.check(self):
                        await self._gap(
                            Gap(shard.stream, shard.shard, self._positions[shard], None, GAP_EPOCH)
                        )
                    continue
                wait = max(0.001, min(bus.block_seconds, self._epochs.next_check - bus.clock.seconds()))
                cursors = {self._keys[s]: c for s, c in self._cursors.items()}
                batch = await self._interruptible(
                    bus.backend.xread(cursors, bus.read_count, max(1, int(wait * 1000)))
                )
                attempt = 0
                if not batch:
                    for s in self._positions:
                        metrics.CONSUMER_LAG.labels(s.stream, s.shard, self._name).set(0)
                for key, raws in batch:
                    shard = self._by_key[key]
                    for raw_id, fields in raws:
                        # Decoding and the tail handlers count as consuming (bus CPU).
                        await timed(self._deliver(shard, raw_id, fields), _CONSUME_CPU)
                        if self._stopping:
                            return
                    await self._record_lag(shard, full=len(raws) >= bus.read_count)
            except NoGroup:
                # A read woken because its key was deleted: whatever was lost
                # is reported by the epoch check or the next entry's prev.
                self._epochs.force()
            except BusUnavailable as e:
                if self._stopping:
                    return
                metrics.RECONNECTS.labels("tail").inc()
                delay = bus.backoff.delay(attempt)
                log.warn("bus: {sub!r} lost Redis ({e}); retrying in {delay:.2f}s",
                         sub=self, e=e, delay=delay)
                attempt += 1
                self._epochs.force()
                await self._sleep(delay)

    async def _record_lag(self, shard: ShardId, full: bool) -> None:
        lag = 0
        if full:
            top = _split_id(await self._interruptible(self._bus.backend.last_id(self._keys[shard])) or b"0-0")
            if top is not None:
                lag = max(0, top[0] - self._positions[shard])
        metrics.CONSUMER_LAG.labels(shard.stream, shard.shard, self._name).set(lag)

    async def _deliver(self, shard: ShardId, raw_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        raw = raw_id.decode("ascii", "replace") if isinstance(raw_id, bytes) else raw_id
        self._cursors[shard] = raw
        position = self._positions[shard]
        try:
            entry = from_fields(shard.stream, shard.shard, raw_id, fields)
        except MalformedEntry as e:
            split = _split_id(raw)
            upper = split[0] if split else None
            log.warn("bus: {shard} entry {id}: {e}; reported as a gap", shard=shard, id=raw, e=e)
            if upper is not None and upper <= position:
                return
            await self._gap(
                Gap(shard.stream, shard.shard, position, upper + 1 if upper else None, GAP_MALFORMED)
            )
            if upper is not None:
                self._positions[shard] = max(self._positions[shard], upper)
            return
        if entry.position <= position:
            return  # the caller already caught up past it
        gap = gap_before(position, entry)
        if gap is not None:
            await self._gap(gap)
            if entry.position <= self._positions[shard]:
                return
        await _call(self._on_entry, entry)
        self._positions[shard] = entry.position
        metrics.CONSUMED.labels(shard.stream, "tail").inc()

    async def _gap(self, gap: Gap) -> None:
        metrics.GAPS.labels(gap.stream, gap.reason).inc()
        caught_up = await _call(self._on_gap, gap)
        if caught_up is None:
            return
        shard = gap.shard_id
        caught_up = validate_position(caught_up)
        if caught_up > self._positions[shard]:
            self._positions[shard] = caught_up
            current = _split_id(self._cursors[shard]) or (0, 0)
            if (caught_up, 0) > current:
                self._cursors[shard] = after_id(caught_up)


class _GroupShardLoop(_Loop):
    """One shard of a ``GroupWorker``."""

    def __init__(self, worker: "GroupWorker", shard: ShardId) -> None:
        super().__init__(worker._bus.clock)
        self._w = worker
        self._shard = shard
        self._key = stream_key(shard.stream, shard.shard, worker._bus.namespace)
        self._epochs = _EpochWatch(worker._bus, [shard])
        self._start()

    def __repr__(self) -> str:
        return f"<GroupWorker {self._w.group}/{self._w.consumer} {self._shard}>"

    async def _run(self) -> None:
        bus, w = self._w._bus, self._w
        attempt = 0
        need_create = True
        lost_group = False
        pending_cursor: str | None = "0"  # first our own pending entries, then ">"
        next_claim = 0.0
        while not self._stopping:
            try:
                if need_create:
                    await self._interruptible(bus.backend.group_create(self._key, w.group))
                    need_create = False
                if lost_group or self._epochs.due():
                    epoch_changed = bool(await self._epochs.check(self))
                    if epoch_changed:
                        # Redis lost the shard: the group is gone too (or
                        # about to be found gone); recreate it now so that a
                        # single gap is reported for the loss.
                        await self._interruptible(bus.backend.group_create(self._key, w.group))
                    if epoch_changed or lost_group:
                        await self._gap(
                            Gap(self._shard.stream, self._shard.shard, None, None,
                                GAP_EPOCH if epoch_changed else GAP_GROUP_RESET)
                        )
                    lost_group = False
                now = bus.clock.seconds()
                if now >= next_claim:
                    await self._reclaim()
                    next_claim = bus.clock.seconds() + w.claim_interval
                    continue
                if pending_cursor is not None:
                    raws = await self._interruptible(
                        bus.backend.xreadgroup(self._key, w.group, w.consumer, pending_cursor,
                                               bus.read_count, None)
                    )
                    if not raws:
                        pending_cursor = None
                        continue
                    pending_cursor = raws[-1][0].decode("ascii") if isinstance(raws[-1][0], bytes) else raws[-1][0]
                else:
                    wait = min(bus.block_seconds, next_claim - now, self._epochs.next_check - now)
                    raws = await self._interruptible(
                        bus.backend.xreadgroup(self._key, w.group, w.consumer, ">",
                                               bus.read_count, max(1, int(wait * 1000)))
                    )
                attempt = 0
                for raw_id, fields in raws:
                    await self._process(raw_id, fields)
                    if self._stopping:
                        return
            except NoGroup:
                # The stream or the group vanished (flush, restart, DEL):
                # recreate it and tell the caller, unless the epoch check
                # reports the loss itself.
                log.warn("bus: {loop!r}: consumer group vanished; recreating it", loop=self)
                need_create = True
                lost_group = True
                pending_cursor = "0"
            except BusUnavailable as e:
                if self._stopping:
                    return
                metrics.RECONNECTS.labels("group").inc()
                delay = bus.backoff.delay(attempt)
                log.warn("bus: {loop!r} lost Redis ({e}); retrying in {delay:.2f}s",
                         loop=self, e=e, delay=delay)
                attempt += 1
                self._epochs.force()
                await self._sleep(delay)

    async def _reclaim(self) -> None:
        """XAUTOCLAIM entries idle longer than the claim timeout, and handle them."""
        bus, w = self._w._bus, self._w
        cursor = b"0-0"
        for _ in range(100):
            cursor, raws, deleted = await self._interruptible(
                bus.backend.xautoclaim(self._key, w.group, w.consumer,
                                       int(w.claim_idle * 1000), cursor, bus.read_count)
            )
            for raw_id in deleted:
                await self._lost(raw_id, GAP_CLAIM_DELETED)
            for raw_id, fields in raws:
                await self._process(raw_id, fields)
                if self._stopping:
                    return
            if _split_id(cursor) in (None, (0, 0)):
                return

    async def _lost(self, raw_id: bytes, reason: str) -> None:
        split = _split_id(raw_id)
        if split is None:
            gap = Gap(self._shard.stream, self._shard.shard, None, None, reason)
        else:
            gap = Gap(self._shard.stream, self._shard.shard, split[0] - 1 if split[0] else None,
                      split[0] + 1, reason)
        await self._gap(gap)

    async def _process(self, raw_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        bus, w = self._w._bus, self._w
        if not fields:
            # Still pending but deleted from the stream (trimmed): the
            # entry cannot be handled; acknowledge it and report it.
            await self._interruptible(bus.backend.xack(self._key, w.group, [raw_id]))
            await self._lost(raw_id, GAP_CLAIM_DELETED)
            return
        try:
            # Decoding counts as consuming; the group's handler does the real work and does not.
            entry = timed_call(from_fields, _CONSUME_CPU, self._shard.stream, self._shard.shard, raw_id, fields)
        except MalformedEntry as e:
            log.warn("bus: {loop!r}: {e}; acknowledged and reported as a gap", loop=self, e=e)
            await self._interruptible(bus.backend.xack(self._key, w.group, [raw_id]))
            await self._lost(raw_id, GAP_MALFORMED)
            return
        try:
            await _call(w.handler, entry)
        except Exception:
            metrics.HANDLER_FAILURES.labels(self._shard.stream).inc()
            log.failure("bus: {loop!r}: handler failed on {position}; left pending for a retry",
                        loop=self, position=entry.position)
            return
        metrics.CONSUMED.labels(self._shard.stream, "group").inc()
        await self._interruptible(bus.backend.xack(self._key, w.group, [raw_id]))

    async def _gap(self, gap: Gap) -> None:
        metrics.GAPS.labels(gap.stream, gap.reason).inc()
        if self._w.on_gap is not None:
            await _call(self._w.on_gap, gap)


class GroupWorker:
    """A consumer in a consumer group over some shards; made by ``Bus.consume_group``.

    For each shard: create the group if needed (at ``0``), handle this
    consumer's own pending entries (read ``0``), then new ones (read ``>``);
    every ``claim_interval`` seconds XAUTOCLAIM entries idle for more than
    ``claim_idle`` seconds (a consumer died or its handler failed) and
    handle them. An entry is acknowledged only after ``handler`` succeeded,
    so delivery is at-least-once: handlers must be idempotent.
    """

    def __init__(
        self,
        bus: "Bus",
        shards: Iterable[ShardId],
        group: str,
        consumer: str,
        handler: EntryHandler,
        on_gap: GapHandler | None,
        claim_idle: float,
        claim_interval: float | None,
    ) -> None:
        self._bus = bus
        self.group = validate_group_name(group)
        self.consumer = validate_group_name(consumer)
        self.handler = handler
        self.on_gap = on_gap
        if claim_idle <= 0:
            raise ValueError("claim_idle must be positive")
        self.claim_idle = claim_idle
        self.claim_interval = claim_interval if claim_interval is not None else claim_idle / 2
        shard_list = list(dict.fromkeys(shards))
        if not shard_list:
            raise ValueError("consume_group needs at least one shard")
        self._loops = [_GroupShardLoop(self, s) for s in shard_list]

    @property
    def running(self) -> bool:
        """True while every shard's loop is running."""
        return all(loop.running for loop in self._loops)

    def when_done(self) -> Deferred[None]:
        """Fires when every shard loop has ended (with the first error, if any)."""
        return self._gather([loop.when_done() for loop in self._loops])

    def stop(self) -> Deferred[None]:
        """Stop all shard loops after their current entry."""
        return self._gather([loop.stop() for loop in self._loops])

    @staticmethod
    def _gather(ds: list[Deferred]) -> Deferred[None]:
        d = gatherResults(ds, consumeErrors=True)
        d.addCallback(lambda _: None)
        d.addErrback(lambda f: f.value.subFailure)
        return d


@attrs.define(eq=False)
class _Queued:
    position: int
    fields: dict[bytes, bytes]
    done: Deferred


class _ShardWriter:
    """Publishes one shard's entries in order, retrying while Redis is away."""

    def __init__(self, bus: "Bus", shard: ShardId) -> None:
        self._bus = bus
        self._shard = shard
        self._key = stream_key(shard.stream, shard.shard, bus.namespace)
        self._maxlen = bus.maxlen_for(shard.stream)
        self.last: int | None = None
        self._queue: deque[_Queued] = deque()
        self._pumping = False
        self._pump_done: list[Deferred] = []
        self._sleeping: Deferred | None = None
        self._closed = False

    def publish(self, position: int, payload: Mapping[str, Any]) -> Deferred[None]:
        if self._closed:
            return fail(BusClosed("bus closed"))
        validate_position(position)
        if self.last is not None and position <= self.last:
            return fail(PositionNotIncreasing(self._shard.stream, self._shard.shard, position, self.last))
        # The position is committed in PostgreSQL whatever happens next, so
        # the next entry names it as prev even if this one never reaches
        # Redis: consumers then see a gap instead of silently missing it.
        prev, self.last = self.last, position
        try:
            fields = to_fields(prev, payload)
        except (TypeError, ValueError):
            return fail()
        item = _Queued(position, fields, Deferred())
        self._queue.append(item)
        if len(self._queue) > self._bus.publish_queue_limit:
            dropped = self._queue.popleft()
            dropped.done.errback(PublishDropped(f"{self._shard}: publish queue full"))
        if not self._pumping:
            pump = Deferred.fromCoroutine(self._run())
            pump.addErrback(
                lambda f: log.failure("bus: publisher of {shard} failed", f, shard=self._shard)
            )
        return item.done

    async def _run(self) -> None:
        self._pumping = True
        abandoned = False
        try:
            while self._queue and not self._closed:
                await self._send(self._queue.popleft())
        except GeneratorExit:
            # Collected while suspended (see ``_Loop._guarded``): resume
            # no waiter from inside the garbage collector.
            abandoned = True
            raise
        finally:
            if not abandoned:
                self._pumping = False
                waiters, self._pump_done = self._pump_done, []
                for d in waiters:
                    d.callback(None)

    async def _send(self, item: _Queued) -> None:
        attempt = 0
        while True:
            if self._closed:
                item.done.errback(BusClosed("bus closed"))
                return
            try:
                await self._attempt(item)
            except BusUnavailable as e:
                metrics.RECONNECTS.labels("publish").inc()
                delay = self._bus.backoff.delay(attempt)
                log.warn("bus: publish {shard}@{position} failed ({e}); retrying in {delay:.2f}s",
                         shard=self._shard, position=item.position, e=e, delay=delay)
                attempt += 1
                self._sleeping = deferLater(self._bus.clock, delay, lambda: None)
                try:
                    await self._sleeping
                except CancelledError:
                    pass
                finally:
                    self._sleeping = None
                continue
            except Exception:
                item.done.errback()
                return
            metrics.PUBLISHED.labels(self._shard.stream).inc()
            item.done.callback(None)
            return

    async def _attempt(self, item: _Queued) -> None:
        backend = self._bus.backend
        try:
            await backend.xadd(self._key, entry_id(item.position), item.fields, self._maxlen)
        except IdNotIncreasing:
            top = _split_id(await backend.last_id(self._key) or b"0-0")
            if top == (item.position, 0):
                return  # an earlier attempt reached Redis before its reply was lost
            raise PositionNotIncreasing(
                self._shard.stream, self._shard.shard, item.position, top[0] if top else None
            ) from None

    def close(self) -> Deferred[None]:
        self._closed = True
        while self._queue:
            self._queue.popleft().done.errback(BusClosed("bus closed"))
        if self._sleeping is not None:
            self._sleeping.cancel()
        if not self._pumping:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._pump_done.append(d)
        return d


class Bus:
    """Publish and consume facts on sharded Redis Streams.

    ``backend`` speaks to Redis (``Bus.from_url``) or to memory
    (``bus.memory.MemoryBus``); ``clock`` provides time. ``maxlen`` is the
    approximate MAXLEN applied on every publish (``None``: no trimming),
    overridden per stream by ``stream_maxlen``. ``block_seconds`` bounds one
    blocking read, ``epoch_check_interval`` how long a consumer may take to
    notice that Redis lost a quiet shard.
    """

    def __init__(
        self,
        backend: Backend,
        clock: IReactorTime,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        maxlen: int | None = DEFAULT_MAXLEN,
        stream_maxlen: Mapping[str, int | None] | None = None,
        backoff: Backoff | None = None,
        block_seconds: float = 5.0,
        epoch_check_interval: float = 5.0,
        read_count: int = 100,
        publish_queue_limit: int = 10_000,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.namespace = namespace
        self._maxlen = maxlen
        self._stream_maxlen = dict(stream_maxlen or {})
        self.backoff = backoff if backoff is not None else Backoff()
        self.block_seconds = block_seconds
        self.epoch_check_interval = epoch_check_interval
        self.read_count = read_count
        self.publish_queue_limit = publish_queue_limit
        self._writers: dict[ShardId, _ShardWriter] = {}
        self._subscriptions: list[Subscription] = []
        self._workers: list[GroupWorker] = []
        self._closed = False

    @classmethod
    def from_url(cls, url: str, clock: IReactorTime, **kwargs: Any) -> "Bus":
        """A bus on the Redis at ``url``; needs the Twisted asyncio reactor."""
        block = kwargs.get("block_seconds", 5.0)
        return cls(RedisBackend.from_url(url, command_timeout=block + 25.0), clock, **kwargs)

    def maxlen_for(self, stream: str) -> int | None:
        """The approximate MAXLEN applied when publishing on ``stream``."""
        return self._stream_maxlen.get(stream, self._maxlen)

    def ping(self) -> Deferred[None]:
        """One PING: fires None, or fails with ``BusUnavailable`` (readiness checks)."""
        return self.backend.ping()

    def raise_marks(self, scope: str, marks: Mapping[str, int], ttl_seconds: float) -> Deferred[None]:
        """Record that ``scope`` (e.g. a user) produced these positions (``"events.3" -> 112``).

        A mark only ever rises; the scope's marks vanish ``ttl_seconds`` after
        the last raise. Marks are hints for waiting (read your writes), not
        data: a flushed Redis loses them and readers then simply do not wait.
        """
        return self.backend.raise_marks(marks_key(scope, self.namespace), dict(marks), int(ttl_seconds * 1000))

    def get_marks(self, scope: str) -> Deferred[dict[str, int]]:
        """The marks of ``scope`` still alive (``{}`` when none)."""
        return self.backend.get_marks(marks_key(scope, self.namespace))

    def connect(self, timeout: float = 30.0) -> Deferred[None]:
        """Wait until Redis answers, retrying with backoff; ``BusUnavailable`` after ``timeout``."""

        async def go() -> None:
            deadline = self.clock.seconds() + timeout
            attempt = 0
            while True:
                try:
                    await self.backend.ping()
                    return
                except BusUnavailable:
                    delay = self.backoff.delay(attempt)
                    if self.clock.seconds() + delay > deadline:
                        raise
                    metrics.RECONNECTS.labels("connect").inc()
                    attempt += 1
                    await deferLater(self.clock, delay, lambda: None)

        return Deferred.fromCoroutine(go())

    def publish(self, stream: str, shard: int, position: int, payload: Mapping[str, Any]) -> Deferred[None]:
        """Publish ``payload`` at ``position`` on one shard; call only after the commit.

        Positions must increase strictly per shard (one writer per shard).
        Entries are written in call order; while Redis is away they wait in a
        bounded queue and are retried with backoff. Fires when the entry is
        in Redis; fails with ``PositionNotIncreasing``, ``PublishDropped``,
        ``BusClosed``, or ``TypeError``/``ValueError`` for a payload that is
        not a JSON object. None of these lose anything for consumers: the
        next entry on the shard names this position as ``prev``.
        """
        start = time.thread_time()
        try:
            return self._publish(stream, shard, position, payload)
        finally:
            # Encoding and queueing; the XADD itself is counted by the backend.
            _PUBLISH_CPU(time.thread_time() - start)

    def _publish(self, stream: str, shard: int, position: int, payload: Mapping[str, Any]) -> Deferred[None]:
        if self._closed:
            return fail(BusClosed("bus closed"))
        sid = ShardId(stream, shard)
        writer = self._writers.get(sid)
        if writer is None:
            writer = self._writers[sid] = _ShardWriter(self, sid)
        return writer.publish(position, payload)

    def resume_writer(self, stream: str, shard: int, last_committed: int) -> None:
        """Declare, before the first publish on a shard, its highest committed position.

        A writer that (re)starts does not know which of its committed
        positions reached Redis, so by default its first entry carries no
        ``prev`` and every consumer re-reads PostgreSQL. If the writer passes
        the highest position committed on the shard before it started
        (``SELECT max(...)`` at start-up, 0 for none), that becomes the first
        ``prev``: still correct, since the writer publishes everything after
        it, and consumers already at that position skip the catch-up.
        """
        sid = ShardId(stream, shard)
        if sid in self._writers:
            raise ValueError(f"{sid}: resume_writer must come before the first publish")
        if not isinstance(last_committed, int) or isinstance(last_committed, bool) or last_committed < 0:
            raise ValueError(f"invalid position: {last_committed!r}")
        writer = self._writers[sid] = _ShardWriter(self, sid)
        writer.last = last_committed

    def last_published(self, stream: str, shard: int) -> int | None:
        """The last position passed to ``publish`` for a shard by this bus, if any."""
        writer = self._writers.get(ShardId(stream, shard))
        return writer.last if writer is not None else None

    def subscribe(
        self,
        positions: Mapping[ShardId, int],
        on_entry: EntryHandler,
        on_gap: GapHandler,
        *,
        name: str = "tail",
    ) -> Subscription:
        """Tail shards, each from the entries after a given position (0: all).

        See ``Subscription`` for the handler contract; ``name`` labels the
        lag metric. The subscription runs until ``stop()`` or ``close()``;
        entries already in Redis may be delivered before this returns.
        """
        if self._closed:
            raise BusClosed("bus closed")
        sub = Subscription(self, positions, on_entry, on_gap, name)
        self._subscriptions.append(sub)
        return sub

    def consume_group(
        self,
        shards: Iterable[ShardId],
        group: str,
        consumer: str,
        handler: EntryHandler,
        on_gap: GapHandler | None = None,
        *,
        claim_idle: float = 60.0,
        claim_interval: float | None = None,
    ) -> GroupWorker:
        """Join consumer group ``group`` as ``consumer`` on each shard; see ``GroupWorker``.

        ``consumer`` must be stable across restarts of one instance (so it
        finds its own pending entries) and unique among live instances.
        ``claim_idle`` must exceed the longest time ``handler`` may take.
        """
        if self._closed:
            raise BusClosed("bus closed")
        worker = GroupWorker(self, shards, group, consumer, handler, on_gap, claim_idle, claim_interval)
        self._workers.append(worker)
        return worker

    def close(self) -> Deferred[None]:
        """Stop every subscription and worker, abandon queued publishes, disconnect.

        Fires once every loop has ended; a handler still running is waited
        for (loops are never interrupted inside a handler).
        """

        async def go() -> None:
            if self._closed:
                return
            self._closed = True
            waits = [s.stop() for s in self._subscriptions]
            waits += [w.stop() for w in self._workers]
            waits += [w.close() for w in self._writers.values()]
            for d in waits:
                try:
                    await d
                except Exception:
                    pass
            await self.backend.close()

        return Deferred.fromCoroutine(go())
