"""Durable processing of received PDUs: stage first, then process per room in arrival order.

``PUT /send/{txnId}`` (:meth:`homeserver.federation.rooms.FederationRooms.on_transaction`)
records the transaction ID and writes the transaction's PDUs to
``federation_inbound_staging`` in one database transaction, then asks
:class:`InboundPduProcessor` to process them and waits (up to
``wait_seconds``) for the results it answers with.

Per room, one ``federation_inbound`` instance at a time processes the
staged rows, oldest first: it holds the room's lease
(``federation_inbound_room_leases``, renewed with each row) while it runs.
Each row is deleted after its event was persisted, rejected or dropped;
the processing itself is idempotent (an event already stored answers
``{}`` without work), so a crash between the two repeats a check, never an
effect. A row whose processing failed for a reason that may pass (the
room's events writer unreachable, a database error) stays staged and
stops the room's turn; it is retried by the periodic sweep, and dropped
after ``max_attempts``.

Why a lease row rather than a PostgreSQL advisory lock (``storage.locks``):
a session advisory lock lives on one connection, so each inbound process
would need a dedicated connection (and thread) for the lifetime of every
room lock, and session locks are re-entrant within that session, so two
requests of one process would both "hold" a room; the lease works through
the ordinary pool and on the injected clock. Its cost is the expiry delay
after a crash (``lease_ms``), waived when the instance restarts under its
name. Instance names must be unique (the configuration requires it).

The sweep (at start and every ``sweep_interval_seconds``) picks up rooms
with staged rows that nobody processes: those of an instance that crashed
(its leases expire after ``lease_ms``, or at once when it restarts under the
same instance name), and those left after a failure.

Answering: the per-PDU results of rows this instance processed while the
request waited are returned; rows processed elsewhere (another instance
held the room) or later answer ``{}``, as does Synapse, which answers after
staging and processes in the background (spec: the result map reports
processing errors; an accepted-for-processing PDU has no error to report).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Awaitable, Callable, Iterable, Optional

from prometheus_client import Counter
from twisted.internet import defer, task
from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

#: ``process(origin, room_id, pdu_json) -> result``; raising means "try again later".
ProcessPdu = Callable[[str, str, str], Awaitable[dict[str, Any]]]

DEFAULT_LEASE_MS = 30_000
DEFAULT_SWEEP_SECONDS = 15.0
DEFAULT_WAIT_SECONDS = 25.0
DEFAULT_MAX_ATTEMPTS = 5
#: How often a request waiting on rows another instance processes looks again.
WAIT_POLL_SECONDS = 0.2
#: Received transaction IDs are kept this long for deduplication.
TRANSACTION_RETENTION_MS = 24 * 3600 * 1000
BATCH = 20

PDUS = Counter(
    "estuary_federation_inbound_staged_pdus_total",
    "Staged received PDUs by outcome (processed, retry_later, dropped after max attempts)",
    ["outcome"],
)


class InboundPduProcessor:
    """Processes staged PDUs of the rooms whose lease this instance takes.

    ``store`` is a :class:`storage.stores.federation_inbound.InboundStagingStore`;
    ``process`` handles one PDU (access checks, then the room's events
    writer) and returns its result, or raises to have the row kept and
    retried later.
    """

    def __init__(
        self,
        clock: Any,
        instance_name: str,
        store: Any,
        process: ProcessPdu,
        *,
        lease_ms: int = DEFAULT_LEASE_MS,
        sweep_interval_seconds: float = DEFAULT_SWEEP_SECONDS,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._clock = clock
        self.holder = instance_name
        #: This process lifetime of the instance (a restarted instance takes its old leases back).
        self.token = secrets.token_hex(8)
        self._store = store
        self._process = process
        self._lease_ms = lease_ms
        self._sweep_interval = sweep_interval_seconds
        self.wait_seconds = wait_seconds
        self._max_attempts = max_attempts
        #: room_id -> the Deferred of the room's running turn here.
        self._active: dict[str, defer.Deferred] = {}
        #: Rooms staged again while their turn ran (look again before ending it).
        self._dirty: set[str] = set()
        #: Rooms whose last turn stopped on a failure (retried by the sweep).
        self.stalled: set[str] = set()
        self._idle_waiters: dict[str, list[defer.Deferred]] = {}
        #: staged id -> how many requests here wait on it; results are kept only for those.
        self._wanted: dict[int, int] = {}
        self._results: dict[int, dict[str, Any]] = {}
        self._sweeper: Optional[task.LoopingCall] = None
        self._stopping = False

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Take back this instance's leases of a previous life, then sweep now and periodically."""
        self._stopping = False
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = self._clock
        self._sweeper.start(self._sweep_interval, now=True).addErrback(
            lambda f: logger.error("inbound PDU sweeper stopped: %s", f.getErrorMessage())
        )

    async def stop(self) -> None:
        """Stop sweeping and wait for the room turns in progress."""
        self._stopping = True
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        running = list(self._active.values())
        for d in running:
            try:
                await _copy(d)
            except Exception:
                pass

    def sweep(self) -> "defer.Deferred[None]":
        """Look once for rooms with staged rows and process those whose lease is free."""
        async def sweep() -> None:
            try:
                released = await self._store.release_previous_leases(self.holder, self.token)
                if released:
                    logger.info("took back %d room leases of this instance's previous run", released)
                rooms = await self._store.rooms_with_staged()
                await self._store.purge_transactions(self.now_ms() - TRANSACTION_RETENTION_MS)
            except Exception as e:
                logger.warning("inbound PDU sweep could not read the staging table: %s", e)
                return
            for room_id in rooms:
                self.stalled.discard(room_id)
                self.kick(room_id)

        return defer.ensureDeferred(sweep())

    # -- receipt ---------------------------------------------------------------

    async def wait_for(self, staged: Iterable[tuple[int, str]], timeout: Optional[float] = None) -> dict[int, dict[str, Any]]:
        """Process the rooms of ``staged`` ``(id, room_id)`` rows and wait (at most ``timeout`` s) for them.

        Returns ``id -> result`` for the rows processed here meanwhile;
        the others are done elsewhere or later.
        """
        rows = list(staged)
        ids = {i for i, _ in rows}
        for i in ids:
            self._wanted[i] = self._wanted.get(i, 0) + 1
        try:
            deadline = self._clock.seconds() + (self.wait_seconds if timeout is None else timeout)
            rooms = {r for _, r in rows}
            for room_id in rooms:
                self.kick(room_id)
            pending_rooms = set(rooms)
            while True:
                # Turns running here: wait for them to end (or the deadline).
                local = [r for r in pending_rooms if r in self._active]
                if local:
                    await self._until(defer.DeferredList([self.when_idle(r) for r in local]), deadline)
                pending = {i for i in ids if i not in self._results}
                if pending:
                    pending = await self._store.still_staged(pending)
                pending_rooms = {r for i, r in rows if i in pending}
                # A room stopped on a failure here is retried by the sweep, not by this request.
                pending_rooms -= self.stalled
                if not pending_rooms or self._clock.seconds() >= deadline:
                    break
                if not any(r in self._active for r in pending_rooms):
                    # Another instance has these rooms: look again shortly.
                    await self._until(task.deferLater(self._clock, WAIT_POLL_SECONDS, lambda: None), deadline)
                for room_id in pending_rooms:
                    self.kick(room_id)
            return {i: self._results[i] for i in ids if i in self._results}
        finally:
            for i in ids:
                if self._wanted[i] > 1:
                    self._wanted[i] -= 1
                else:
                    del self._wanted[i]
                    self._results.pop(i, None)

    async def _until(self, d: defer.Deferred, deadline: float) -> None:
        """Wait for ``d`` or the deadline, whichever comes first (``d`` goes on regardless)."""
        remaining = deadline - self._clock.seconds()
        if remaining <= 0:
            return
        done: defer.Deferred = defer.Deferred()
        timer = self._clock.callLater(remaining, lambda: done.called or done.callback(None))

        def fire(_: Any) -> None:
            if not done.called:
                done.callback(None)
            if timer.active():
                timer.cancel()

        d.addBoth(fire)
        await done

    def when_idle(self, room_id: str) -> defer.Deferred:
        """Fires when no turn of ``room_id`` runs here (at once if none does)."""
        d: defer.Deferred = defer.Deferred()
        if room_id not in self._active:
            d.callback(None)
        else:
            self._idle_waiters.setdefault(room_id, []).append(d)
        return d

    # -- a room's turn ---------------------------------------------------------

    def kick(self, room_id: str) -> None:
        """Make sure ``room_id``'s staged rows are being processed (here, if the lease is free)."""
        if self._stopping:
            return
        if room_id in self._active:
            self._dirty.add(room_id)
            return
        d = defer.ensureDeferred(self._turn(room_id))
        self._active[room_id] = d

        def done(result: Any) -> None:
            self._active.pop(room_id, None)
            for waiter in self._idle_waiters.pop(room_id, []):
                waiter.callback(None)
            if isinstance(result, Failure):
                logger.error("inbound PDUs of %s: %s", room_id, result.getErrorMessage())
                self.stalled.add(room_id)

        d.addBoth(done)

    async def _turn(self, room_id: str) -> None:
        self.stalled.discard(room_id)
        while not self._stopping:
            self._dirty.discard(room_id)
            if not await self._store.acquire_lease(room_id, self.holder, self.token, self.now_ms(), self._lease_ms):
                return
            try:
                finished = await self._drain(room_id)
            except BaseException:
                await self._store.release_lease(room_id, self.holder, self.token)
                raise
            # Rows staged after our last read, whose stager found the lease
            # still ours, are ours to process: look once more after releasing.
            left = await self._store.release_lease(room_id, self.holder, self.token)
            if not finished or (room_id not in self._dirty and not left):
                return

    async def _drain(self, room_id: str) -> bool:
        """Process the room's rows in order while we hold its lease; False if stopped early."""
        while not self._stopping:
            rows = await self._store.next_staged(room_id, BATCH)
            if not rows:
                return True
            last_batch = len(rows) < BATCH
            for row in rows:
                if self._stopping:
                    return False
                # Keep the lease while one PDU takes long (missing events fetched from its origin).
                renewer = task.LoopingCall(self._renew, room_id)
                renewer.clock = self._clock
                renewer.start(self._lease_ms / 3000.0, now=False)
                try:
                    result = await self._process(row.origin, row.room_id, row.pdu_json)
                except Exception as e:
                    attempts = await self._store.record_failure(row.id)
                    if attempts < self._max_attempts:
                        PDUS.labels("retry_later").inc()
                        logger.warning("PDU %s from %s (attempt %d) failed, kept for later: %s",
                                       row.event_id, row.origin, attempts, e)
                        self.stalled.add(room_id)
                        return False
                    logger.error("PDU %s from %s failed %d times; dropping it: %s", row.event_id, row.origin, attempts, e)
                    result = {"error": f"could not process the event: {type(e).__name__}"}
                    PDUS.labels("dropped").inc()
                else:
                    PDUS.labels("processed").inc()
                finally:
                    renewer.stop()
                if row.id in self._wanted:
                    self._results[row.id] = result
                if not await self._store.finish_staged(row.id, room_id, self.holder, self.token, self.now_ms(),
                                                       self._lease_ms):
                    logger.warning("lost the lease on %s while processing it; leaving it to its new holder", room_id)
                    return False
            if last_batch:
                # Anything staged since is seen by the check after releasing the lease.
                return True
        return False


    def _renew(self, room_id: str) -> defer.Deferred:
        d = self._store.acquire_lease(room_id, self.holder, self.token, self.now_ms(), self._lease_ms)
        d.addErrback(lambda f: logger.warning("could not renew the lease on %s: %s", room_id, f.getErrorMessage()))
        return d


def _copy(d: defer.Deferred) -> defer.Deferred:
    """A Deferred firing with ``d``'s outcome, leaving ``d``'s own chain alone."""
    out: defer.Deferred = defer.Deferred()

    def fire(result: Any) -> Any:
        if hasattr(result, "getErrorMessage"):
            out.errback(result)
        else:
            out.callback(result)
        return result

    d.addBoth(fire)
    return out
