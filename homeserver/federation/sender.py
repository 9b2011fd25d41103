"""The ``federation_sender`` role: durable per-destination queues sent as transactions.

Spec: server-server-api "Transactions" (``PUT /_matrix/federation/v1/send/{txnId}``,
at most 50 PDUs and 100 EDUs each). Work is queued in PostgreSQL
(:class:`storage.stores.federation.FederationQueueStore`) by
:meth:`FederationSender.enqueue_pdu` / :meth:`FederationSender.enqueue_edu`.
For each destination one transaction at a time is built from the oldest
queued items and recorded as in flight; it is retried with the same
transaction ID and body until the destination accepts it (the receiver
deduplicates on origin and ID), with exponential backoff between attempts.
When the destination answers again the queue drains in further
transactions: that is the catch-up. After a long outage (more than
``catch_up_threshold`` PDUs waiting) only the newest PDU of each room is
sent; the destination fetches what lies between, as after any gap. A 4xx answer other than 429 means the
destination will never accept that transaction: it is dropped and logged.

Destinations are sharded over the ``federation_sender`` instances by
``shard_for(destination, n)`` over the instance names sorted; each instance
only sends for its own. Work queued by another process is found by a
periodic look at PostgreSQL (``sender_poll_interval_seconds``), as is work
left behind by a crash.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote

from prometheus_client import Counter
from twisted.internet import defer, task
from twisted.python.failure import Failure

from homeserver.federation.errors import HttpResponseError, NotRetryingDestination, RequestSendFailed
from homeserver.sharding import shard_for

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
#: Past this many queued PDUs for one destination, only the newest of each
#: room is kept (see ``FederationQueueStore.claim_transaction``).
DEFAULT_CATCH_UP_THRESHOLD = 1000

TRANSACTIONS = Counter(
    "estuary_federation_transactions_total",
    "Outbound federation transactions by outcome (sent, failed, dropped)",
    ["outcome"],
)
ITEMS_SENT = Counter("estuary_federation_items_sent_total", "PDUs and EDUs delivered to other servers", ["kind"])


def destination_owner(destination: str, sender_instances: Sequence[str]) -> str:
    """The ``federation_sender`` instance that sends to ``destination``."""
    names = sorted(sender_instances)
    if not names:
        raise ValueError("no federation_sender instances")
    return names[shard_for(destination, len(names))]


def build_transaction_body(origin: str, origin_server_ts: int, pdu_jsons: Sequence[str], edu_jsons: Sequence[str]) -> str:
    """The JSON body of ``PUT /send/{txnId}`` from queued item payloads."""
    return json.dumps(
        {
            "origin": origin,
            "origin_server_ts": origin_server_ts,
            "pdus": [json.loads(p) for p in pdu_jsons],
            "edus": [json.loads(e) for e in edu_jsons],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class FederationQueue:
    """The feeding side of the outbound queue, usable from any process.

    Items are committed to PostgreSQL; ``on_queued(destination)`` is then
    called (the local sender's ``wake``). A process without the
    ``federation_sender`` role passes no hook: the owning sender finds the
    work on its next poll.
    """

    def __init__(self, clock: Any, server_name: str, store: Any, on_queued: Optional[Any] = None) -> None:
        self._clock = clock
        self._server_name = server_name
        self._store = store
        self._on_queued = on_queued

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def set_on_queued(self, on_queued: Optional[Any]) -> None:
        """Replace what is called with each destination that has new work (after commit)."""
        self._on_queued = on_queued

    async def enqueue_pdu(self, destinations: Iterable[str], event_id: str, pdu_json: Mapping[str, Any]) -> None:
        """Queue a PDU (its federation JSON) for every destination but ourselves.

        A PDU already queued for a destination is not queued twice.
        """
        targets = [d for d in set(destinations) if d != self._server_name]
        if not targets:
            return
        room_id = pdu_json.get("room_id")
        queued = await self._store.enqueue_pdu(
            targets, event_id, _dumps(pdu_json), self.now_ms(), room_id=room_id if isinstance(room_id, str) else None
        )
        if self._on_queued is not None:
            for destination in queued:
                self._on_queued(destination)

    def notify(self, destinations: Iterable[str]) -> None:
        """Items were queued for ``destinations`` by another path (an event's own transaction): send now if we can."""
        if self._on_queued is None:
            return
        for destination in destinations:
            if destination != self._server_name:
                self._on_queued(destination)

    async def enqueue_edu(self, destination: str, edu: Mapping[str, Any], coalesce_key: Optional[str] = None) -> None:
        """Queue an EDU (``{"edu_type": ..., "content": ...}``) for ``destination``.

        With ``coalesce_key``, an earlier unsent EDU with the same key is
        replaced (e.g. ``"m.typing:" + room_id``).
        """
        if destination == self._server_name:
            return
        await self._store.enqueue_edu(destination, _dumps(edu), coalesce_key, self.now_ms())
        if self._on_queued is not None:
            self._on_queued(destination)


class FederationSender:
    """Queues PDUs and EDUs for other servers and delivers them.

    ``store`` is a :class:`storage.stores.federation.FederationQueueStore`,
    ``client`` a :class:`homeserver.http.federation_client.FederationClient`
    and ``backoff`` a :class:`homeserver.federation.destinations.DestinationBackoff`.
    """

    def __init__(
        self,
        clock: Any,
        server_name: str,
        instance_name: str,
        sender_instances: Sequence[str],
        store: Any,
        client: Any,
        backoff: Any,
        poll_interval_seconds: float = 10.0,
        max_pdus: int = MAX_PDUS_PER_TRANSACTION,
        max_edus: int = MAX_EDUS_PER_TRANSACTION,
        catch_up_threshold: Optional[int] = DEFAULT_CATCH_UP_THRESHOLD,
    ) -> None:
        if instance_name not in sender_instances:
            raise ValueError(f"{instance_name} is not one of the federation_sender instances {sorted(sender_instances)}")
        self._clock = clock
        self._server_name = server_name
        self._instance = instance_name
        self._instances = tuple(sorted(sender_instances))
        self._store = store
        self._client = client
        self._backoff = backoff
        self._poll_interval = poll_interval_seconds
        self._max_pdus = min(max_pdus, MAX_PDUS_PER_TRANSACTION)
        self._max_edus = min(max_edus, MAX_EDUS_PER_TRANSACTION)
        self._catch_up_threshold = catch_up_threshold
        self._running: dict[str, defer.Deferred] = {}
        self._dirty: set[str] = set()
        #: Destinations whose last transaction failed (cleared on success).
        self._down: set[str] = set()
        self._timers: dict[str, Any] = {}
        self._poller: Optional[task.LoopingCall] = None
        self._stopping = False
        #: Where work is queued; items queued here are sent at once.
        self.queue = FederationQueue(clock, server_name, store, on_queued=self.wake)

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def owns(self, destination: str) -> bool:
        """Whether this instance sends to ``destination``."""
        return destination_owner(destination, self._instances) == self._instance

    # -- feeding -------------------------------------------------------------
    async def enqueue_pdu(self, destinations: Iterable[str], event_id: str, pdu_json: Mapping[str, Any]) -> None:
        """Queue a PDU and start sending it (see :meth:`FederationQueue.enqueue_pdu`)."""
        await self.queue.enqueue_pdu(destinations, event_id, pdu_json)

    async def enqueue_edu(self, destination: str, edu: Mapping[str, Any], coalesce_key: Optional[str] = None) -> None:
        """Queue an EDU and start sending it (see :meth:`FederationQueue.enqueue_edu`)."""
        await self.queue.enqueue_edu(destination, edu, coalesce_key)

    def destination_is_up(self, destination: str) -> None:
        """The destination just talked to us: stop backing off and send what is queued."""
        # Only destinations this process saw failing are worth a database
        # write; inbound requests are far more frequent than outages.
        if not self.owns(destination) or destination not in self._down:
            return
        self._down.discard(destination)

        async def reset() -> None:
            if await self._backoff.record_success(destination):
                timer = self._timers.pop(destination, None)
                if timer is not None and timer.active():
                    timer.cancel()
                self.wake(destination)

        defer.ensureDeferred(reset()).addErrback(lambda f: logger.error("Resetting backoff of %s failed: %s", destination, f.value))

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Look for queued work now and every poll interval."""
        self._stopping = False
        self._poller = task.LoopingCall(self._poll)
        self._poller.clock = self._clock
        self._poller.start(self._poll_interval, now=True).addErrback(
            lambda f: logger.error("Federation sender poller stopped: %s", f.value)
        )

    async def stop(self) -> None:
        """Stop polling, cancel retries, and cancel sends in progress."""
        self._stopping = True
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        running = list(self._running.values())
        for d in running:
            d.cancel()
        for d in running:
            try:
                await d
            except Exception:
                pass

    def _poll(self) -> "defer.Deferred[None]":
        async def poll() -> None:
            try:
                destinations = await self._store.destinations_with_work()
            except Exception as e:
                logger.warning("Federation sender could not read its queue: %s", e)
                return
            for destination in destinations:
                if self.owns(destination) and destination not in self._timers:
                    self.wake(destination)

        return defer.ensureDeferred(poll())

    # -- per destination -----------------------------------------------------
    def wake(self, destination: str) -> None:
        """Make sure ``destination``'s queue is being worked on (if we own it)."""
        if self._stopping or not self.owns(destination):
            return
        if destination in self._running:
            self._dirty.add(destination)
            return
        timer = self._timers.get(destination)
        if timer is not None and timer.active():
            return  # Backing off; the timer will wake it.
        self._timers.pop(destination, None)
        d = defer.ensureDeferred(self._drain(destination))
        self._running[destination] = d

        def done(result: Any) -> None:
            self._running.pop(destination, None)
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                logger.error("Federation queue of %s failed: %s", destination, result.getTraceback())
                self._retry_later(destination, 30_000)

        d.addBoth(done)

    def _retry_later(self, destination: str, delay_ms: int) -> None:
        if self._stopping:
            return
        old = self._timers.pop(destination, None)
        if old is not None and old.active():
            old.cancel()

        def fire() -> None:
            self._timers.pop(destination, None)
            self.wake(destination)

        self._timers[destination] = self._clock.callLater(max(delay_ms, 0) / 1000.0, fire)

    async def _drain(self, destination: str) -> None:
        while True:
            self._dirty.discard(destination)
            state = await self._backoff.get(destination)
            now = self.now_ms()
            if not state.can_retry(now):
                self._retry_later(destination, state.retry_at_ms - now)
                return
            claimed = await self._store.claim_transaction(
                destination, self._make_body, self._max_pdus, self._max_edus, now, self._catch_up_threshold
            )
            if claimed is None:
                if destination in self._dirty:
                    continue
                return
            if not await self._send(claimed):
                return

    def _make_body(self, pdu_jsons: list[str], edu_jsons: list[str]) -> tuple[str, str]:
        now = self.now_ms()
        txn_id = "%d%s" % (now, secrets.token_hex(4))
        return txn_id, build_transaction_body(self._server_name, now, pdu_jsons, edu_jsons)

    async def _send(self, claimed: Any) -> bool:
        """Send one transaction; True to go on with the queue, False to stop (backing off)."""
        destination = claimed.destination
        path = "/_matrix/federation/v1/send/" + quote(claimed.txn_id, safe="")
        try:
            response = await self._client.put_json(
                destination, path, json.loads(claimed.body), ignore_backoff=True, track_backoff=False
            )
        except HttpResponseError as e:
            if not e.retryable:
                logger.warning(
                    "%s refused transaction %s (%d PDUs, %d EDUs) with %d %s; dropping it",
                    destination, claimed.txn_id, claimed.pdu_count, claimed.edu_count, e.code, e.errcode,
                )
                TRANSACTIONS.labels("dropped").inc()
                await self._store.complete_transaction(destination, claimed.txn_id)
                await self._backoff.record_success(destination)
                return True
            return await self._failed(destination, claimed, e)
        except (RequestSendFailed, NotRetryingDestination) as e:
            return await self._failed(destination, claimed, e)
        _log_pdu_errors(destination, response)
        self._down.discard(destination)
        await self._store.complete_transaction(destination, claimed.txn_id)
        await self._backoff.record_success(destination)
        TRANSACTIONS.labels("sent").inc()
        ITEMS_SENT.labels("pdu").inc(claimed.pdu_count)
        ITEMS_SENT.labels("edu").inc(claimed.edu_count)
        logger.debug("Sent transaction %s to %s", claimed.txn_id, destination)
        return True

    async def _failed(self, destination: str, claimed: Any, error: Exception) -> bool:
        TRANSACTIONS.labels("failed").inc()
        self._down.add(destination)
        state = await self._backoff.record_failure(destination)
        logger.info(
            "Transaction %s to %s failed (%s); retrying in %d ms", claimed.txn_id, destination, error, state.retry_interval_ms
        )
        self._retry_later(destination, state.retry_at_ms - self.now_ms())
        return False


def _log_pdu_errors(destination: str, response: Any) -> None:
    pdus = response.get("pdus") if isinstance(response, dict) else None
    if not isinstance(pdus, dict):
        return
    for event_id, result in pdus.items():
        if isinstance(result, dict) and "error" in result:
            logger.info("%s rejected PDU %s: %s", destination, event_id, result["error"])
