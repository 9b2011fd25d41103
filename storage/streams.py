"""Stream shards and their positions.

Every (stream, shard) pair has its own PostgreSQL sequence
(``stream_<stream>_<shard>_seq``). The one writer of a shard holds a
:class:`ShardPositionAllocator` for it, draws positions from the sequence
inside the transactions that write the facts, and learns from it when a
position may be announced: only after commit, and in position order, even
when transactions commit out of order (DESIGN.md invariants 1 and 4).

The ordering logic itself is :class:`PositionTracker`, which is pure.
"""

from __future__ import annotations

import collections
import enum
import re
import threading
from typing import Any, Callable, Mapping

import attrs
from psycopg2 import sql
from twisted.internet import defer
from twisted.logger import Logger

from storage.database import Database, StorageError, Transaction

log = Logger()

# Stream names become part of sequence names (at most 63 bytes in PostgreSQL).
_STREAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MAX_SHARDS = 4096

# Transaction-level advisory lock serialising ensure_stream_shards across
# workers starting at once: the ASCII bytes of "estustrm".
STREAM_SHARDS_LOCK_KEY = int.from_bytes(b"estustrm", "big", signed=True)


class ShardCountMismatchError(StorageError):
    """The configured shard count of a stream differs from the one the install was created with."""

    def __init__(self, stream: str, configured: int, recorded: int):
        super().__init__(
            f"stream {stream!r} is configured with {configured} shards but the database was "
            f"created with {recorded}; the shard count of a stream cannot change"
        )
        self.stream = stream
        self.configured = configured
        self.recorded = recorded


def validate_stream_shard(stream: str, shard: int, shard_count: int | None = None) -> None:
    """Raise ValueError unless ``stream`` is a valid stream name and ``shard`` a valid shard number."""
    if not _STREAM_NAME.match(stream):
        raise ValueError(f"invalid stream name {stream!r}: lowercase letters, digits and _, at most 40")
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise ValueError(f"invalid shard number {shard!r}")
    if shard_count is not None and shard >= shard_count:
        raise ValueError(f"shard {shard} out of range for {shard_count} shards")


def shard_sequence_name(stream: str, shard: int) -> str:
    """The name of the sequence that hands out positions of ``stream`` shard ``shard``."""
    validate_stream_shard(stream, shard)
    return f"stream_{stream}_{shard}_seq"


def ensure_stream_shards(db: Database, shard_counts: Mapping[str, int]) -> "defer.Deferred[None]":
    """Create the position sequences of every shard of every stream in ``shard_counts``.

    Idempotent and safe to run from several workers at once. Records each
    stream's shard count on first use; fails with
    :class:`ShardCountMismatchError` if a stream was created with a different
    count. Streams missing from ``shard_counts`` are left untouched.
    """
    counts = dict(shard_counts)
    for stream, count in counts.items():
        validate_stream_shard(stream, 0)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_SHARDS:
            raise ValueError(f"shard count of stream {stream!r} must be in 1..{_MAX_SHARDS}, got {count!r}")

    def ensure(txn: Transaction) -> None:
        txn.execute("SELECT pg_advisory_xact_lock(%s)", (STREAM_SHARDS_LOCK_KEY,))
        for stream, count in sorted(counts.items()):
            txn.execute(
                "INSERT INTO stream_shards (stream, shard_count) VALUES (%s, %s) ON CONFLICT (stream) DO NOTHING",
                (stream, count),
            )
            txn.execute("SELECT shard_count FROM stream_shards WHERE stream = %s", (stream,))
            (recorded,) = txn.fetchone()
            if recorded != count:
                raise ShardCountMismatchError(stream, count, recorded)
            for shard in range(count):
                txn.execute(
                    sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS BIGINT MINVALUE 1 START WITH 1").format(
                        sql.Identifier(shard_sequence_name(stream, shard))
                    )
                )

    return db.run_interaction("ensure_stream_shards", ensure)


@attrs.frozen
class Published:
    """A committed position released for publication, in shard order.

    ``previous`` is the position released just before this one on this shard
    by this allocator (or the shard's position when the allocator started):
    a consumer that last saw ``previous`` has missed nothing.
    """

    position: int
    previous: int
    payloads: tuple[Any, ...]


class _State(enum.Enum):
    IN_FLIGHT = "in_flight"
    COMMITTED = "committed"
    ABORTED = "aborted"


class PositionTracker:
    """Orders the completion of positions handed out by one shard's sequence.

    Pure and single-threaded (callers serialise access). Positions are
    :meth:`add`-ed in increasing order as they are allocated, then each is
    finished once by :meth:`commit` or :meth:`abort`. :attr:`current` is the
    highest position P such that every position <= P has finished; committing
    or aborting returns the committed positions that have just become
    publishable, in position order, so a position is never released before
    a smaller one that may still commit.
    """

    def __init__(self, current: int):
        self._current = current
        self._last_added = current
        self._last_published = current
        self._order: collections.deque[int] = collections.deque()
        self._state: dict[int, _State] = {}
        self._payloads: dict[int, list[Any]] = {}

    @property
    def current(self) -> int:
        """Highest position up to which every allocated position has committed or aborted."""
        return self._current

    @property
    def last_published(self) -> int:
        """The last position released by :meth:`commit` / :meth:`abort` (or the start)."""
        return self._last_published

    @property
    def in_flight(self) -> frozenset[int]:
        """Positions allocated and not yet finished."""
        return frozenset(p for p, s in self._state.items() if s is _State.IN_FLIGHT)

    def add(self, position: int) -> None:
        """Record a newly allocated position; it must exceed every position added before."""
        if position <= self._last_added:
            raise ValueError(f"position {position} allocated out of order (last was {self._last_added})")
        self._last_added = position
        self._order.append(position)
        self._state[position] = _State.IN_FLIGHT

    def attach(self, position: int, payload: Any) -> None:
        """Attach ``payload`` to an in-flight position, to be released with it if it commits."""
        self._require_in_flight(position)
        self._payloads.setdefault(position, []).append(payload)

    def commit(self, position: int) -> list[Published]:
        """Mark ``position`` committed; return what became publishable."""
        self._require_in_flight(position)
        self._state[position] = _State.COMMITTED
        return self._advance()

    def abort(self, position: int) -> list[Published]:
        """Mark ``position`` rolled back (it will never be published); return what became publishable."""
        self._require_in_flight(position)
        self._state[position] = _State.ABORTED
        self._payloads.pop(position, None)
        return self._advance()

    def _require_in_flight(self, position: int) -> None:
        state = self._state.get(position)
        if state is not _State.IN_FLIGHT:
            raise ValueError(f"position {position} is not in flight ({state.value if state else 'unknown'})")

    def _advance(self) -> list[Published]:
        released = []
        while self._order and self._state[self._order[0]] is not _State.IN_FLIGHT:
            position = self._order.popleft()
            state = self._state.pop(position)
            self._current = position
            if state is _State.COMMITTED:
                payloads = tuple(self._payloads.pop(position, ()))
                released.append(Published(position, self._last_published, payloads))
                self._last_published = position
        return released


class ShardPositionAllocator:
    """Hands out positions of one (stream, shard) and releases them in order after commit.

    One per shard owned by this writer process (DESIGN.md invariant 4: a
    shard has exactly one writer). Create with :meth:`create`. Inside an
    interaction call :meth:`allocate`; optionally :meth:`attach` what to
    publish. Callbacks registered with :meth:`on_publish` receive each
    committed position (with its payloads) on the reactor, in position order,
    once every smaller position has committed or rolled back; :meth:`on_advance`
    callbacks receive the new :attr:`current_position` whenever it moves.
    """

    def __init__(self, stream: str, shard: int, current: int):
        validate_stream_shard(stream, shard)
        self.stream = stream
        self.shard = shard
        self._sequence = shard_sequence_name(stream, shard)
        self._lock = threading.Lock()
        self._tracker = PositionTracker(current)
        self._publish_callbacks: list[Callable[[Published], Any]] = []
        self._advance_callbacks: list[Callable[[int], Any]] = []

    @classmethod
    def create(cls, db: Database, stream: str, shard: int) -> "defer.Deferred[ShardPositionAllocator]":
        """An allocator starting at the sequence's last handed-out value.

        Positions handed out by a previous incarnation of the writer are
        taken as finished: its transactions ended with its connections.
        """
        sequence = shard_sequence_name(stream, shard)

        def read(txn: Transaction) -> int:
            txn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(sequence)))
            last_value, is_called = txn.fetchone()
            return last_value if is_called else last_value - 1

        d = db.run_interaction("read_shard_position", read)
        d.addCallback(lambda current: cls(stream, shard, current))
        return d

    def current_position(self) -> int:
        """Highest position P such that every position <= P allocated here has committed or rolled back."""
        with self._lock:
            return self._tracker.current

    def in_flight(self) -> frozenset[int]:
        """Positions allocated by transactions that have not finished yet."""
        with self._lock:
            return self._tracker.in_flight

    def allocate(self, txn: Transaction) -> int:
        """Draw the next position from the shard's sequence inside ``txn``.

        Call from an interaction function (a database thread). The position
        is released to :meth:`on_publish` callbacks after the transaction
        commits, or skipped if this attempt rolls back.
        """
        # Holding the lock across nextval keeps positions added to the
        # tracker in sequence order: otherwise a larger position could be
        # registered and released before a smaller one is known to exist.
        with self._lock:
            txn.execute("SELECT nextval(%s::regclass)", (self._sequence,))
            (position,) = txn.fetchone()
            self._tracker.add(position)
        txn.call_after(self._finish, position, True)
        txn.call_on_exception(self._finish, position, False)
        return position

    def attach(self, position: int, payload: Any) -> None:
        """Attach ``payload`` to an allocated, unfinished position; published with it after commit."""
        with self._lock:
            self._tracker.attach(position, payload)

    def on_publish(self, callback: Callable[[Published], Any]) -> None:
        """Call ``callback(published)`` on the reactor for each committed position, in order.

        Callbacks are called synchronously, one position after the other; a
        callback that publishes asynchronously must itself keep the order
        (e.g. append to a queue drained by one sender). Exceptions are logged.
        """
        self._publish_callbacks.append(callback)

    def on_advance(self, callback: Callable[[int], Any]) -> None:
        """Call ``callback(current_position)`` on the reactor whenever the current position moves."""
        self._advance_callbacks.append(callback)

    def _finish(self, position: int, committed: bool) -> None:
        with self._lock:
            before = self._tracker.current
            released = self._tracker.commit(position) if committed else self._tracker.abort(position)
            after = self._tracker.current
        for published in released:
            for callback in self._publish_callbacks:
                self._call(callback, published)
        if after != before:
            for callback in self._advance_callbacks:
                self._call(callback, after)

    def _call(self, callback: Callable[[Any], Any], arg: Any) -> None:
        try:
            callback(arg)
        except Exception:
            log.failure(
                "Callback {callback!r} of stream {stream} shard {shard} failed",
                callback=callback,
                stream=self.stream,
                shard=self.shard,
            )


def raise_sequence_above(db: Database, stream: str, shard: int, floor: int) -> "defer.Deferred[None]":
    """Make the shard's next position exceed ``floor``.

    For a stream whose positions used to come from elsewhere (one global
    sequence): the first position drawn from the shard must be above every
    position already stored. Call before the shard's allocator exists.
    """
    sequence = shard_sequence_name(stream, shard)

    def run(txn: Transaction) -> None:
        txn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(sequence)))
        last_value, is_called = txn.fetchone()
        current = last_value if is_called else last_value - 1
        if floor > current:
            txn.execute("SELECT setval(%s::regclass, %s, true)", (sequence, floor))

    return db.run_interaction("raise_sequence_above", run)
