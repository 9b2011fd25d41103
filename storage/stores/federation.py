"""The federation sender's durable state: per-destination backoff, the
outbound queue (``federation_outbox``) and the transaction in flight."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import attrs
from twisted.internet import defer


@attrs.frozen
class ClaimedTransaction:
    """The transaction to (re)send to a destination."""

    destination: str
    txn_id: str
    body: str
    pdu_count: int
    edu_count: int
    #: True when this transaction was built earlier and is being retried.
    retry: bool


def enqueue_room_pdu_txn(txn: Any, room_id: str, event_id: str, outbound: Any) -> tuple[str, ...]:
    """Inside the transaction persisting ``event_id``, queue it for the servers of ``room_id``.

    ``outbound`` is a :class:`homeserver.core.rooms.OutboundPdu`. The room's
    joined servers are read from ``room_memberships`` as this transaction
    left them (so a kick's target server is named in ``outbound.also``).
    Returns the destinations queued. Committing the event and its queue rows
    together is what makes an event that clients see always reach the other
    servers, whatever crashes after the commit.
    """
    txn.execute_prepared(
        "federation_enqueue_room_pdu",
        "INSERT INTO federation_outbox (destination, kind, event_id, room_id, coalesce_key, payload, queued_ts)"
        " SELECT d, 'pdu', %s, %s, NULL, %s, %s FROM ("
        " SELECT substr(user_id, strpos(user_id, ':') + 1) AS d FROM room_memberships"
        " WHERE room_id = %s AND membership = 'join' AND strpos(user_id, ':') > 0"
        " UNION SELECT unnest(%s::text[])) AS servers"
        " WHERE d <> '' AND NOT (d = ANY(%s::text[])) ORDER BY d"
        " ON CONFLICT (destination, event_id) WHERE kind = 'pdu' DO NOTHING RETURNING destination",
        (event_id, room_id, outbound.payload, outbound.queued_ts, room_id, list(outbound.also), list(outbound.exclude)),
    )
    return tuple(sorted(r[0] for r in txn.fetchall()))


class FederationQueueStore:
    """``federation_destinations``, ``federation_outbox`` and
    ``federation_transactions_in_flight`` in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    # -- backoff -------------------------------------------------------
    def get_destination_retry(self, destination: str) -> "defer.Deferred[Optional[tuple[int, int, int]]]":
        """``(failure_count, retry_last_ts, retry_interval_ms)`` or None."""

        def txn_fn(txn: Any) -> Optional[tuple[int, int, int]]:
            txn.execute(
                "SELECT failure_count, retry_last_ts, retry_interval_ms FROM federation_destinations WHERE destination = %s",
                (destination,),
            )
            row = txn.fetchone()
            return tuple(row) if row else None  # type: ignore[return-value]

        return self._db.run_interaction("get_destination_retry", txn_fn)

    def set_destination_retry(
        self, destination: str, failure_count: int, retry_last_ts: int, retry_interval_ms: int
    ) -> "defer.Deferred[None]":
        """Store a destination's backoff state."""

        def txn_fn(txn: Any) -> None:
            txn.execute(
                "INSERT INTO federation_destinations (destination, failure_count, retry_last_ts, retry_interval_ms)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (destination) DO UPDATE SET"
                " failure_count = EXCLUDED.failure_count, retry_last_ts = EXCLUDED.retry_last_ts,"
                " retry_interval_ms = EXCLUDED.retry_interval_ms",
                (destination, failure_count, retry_last_ts, retry_interval_ms),
            )

        return self._db.run_interaction("set_destination_retry", txn_fn)

    # -- queue -----------------------------------------------------------
    def enqueue_pdu(
        self, destinations: Iterable[str], event_id: str, pdu_json: str, now_ms: int, room_id: Optional[str] = None
    ) -> "defer.Deferred[list[str]]":
        """Queue a PDU for each destination; returns those where it was newly queued."""
        rows = [(d, "pdu", event_id, room_id, None, pdu_json, now_ms) for d in sorted(set(destinations))]

        def txn_fn(txn: Any) -> list[str]:
            if not rows:
                return []
            out = txn.execute_values(
                "INSERT INTO federation_outbox (destination, kind, event_id, room_id, coalesce_key, payload, queued_ts)"
                " VALUES %s ON CONFLICT (destination, event_id) WHERE kind = 'pdu' DO NOTHING RETURNING destination",
                rows,
                fetch=True,
            )
            return [r[0] for r in out or []]

        return self._db.run_interaction("enqueue_pdu", txn_fn)

    def enqueue_edu(self, destination: str, edu_json: str, coalesce_key: Optional[str], now_ms: int) -> "defer.Deferred[None]":
        """Queue an EDU; an unsent EDU with the same ``coalesce_key`` is replaced.

        An EDU already part of the transaction in flight is not replaced
        (it is being sent); the new one goes in the next transaction.
        """

        def txn_fn(txn: Any) -> None:
            if coalesce_key is not None:
                txn.execute(
                    "DELETE FROM federation_outbox o WHERE destination = %s AND kind = 'edu' AND coalesce_key = %s"
                    " AND NOT EXISTS (SELECT 1 FROM federation_transactions_in_flight f"
                    " WHERE f.destination = o.destination AND o.id = ANY(f.outbox_ids))",
                    (destination, coalesce_key),
                )
            txn.execute(
                "INSERT INTO federation_outbox (destination, kind, event_id, room_id, coalesce_key, payload, queued_ts)"
                " VALUES (%s, 'edu', NULL, NULL, %s, %s, %s)",
                (destination, coalesce_key, edu_json, now_ms),
            )

        return self._db.run_interaction("enqueue_edu", txn_fn)

    def claim_transaction(
        self,
        destination: str,
        make_body: Callable[[list[str], list[str]], tuple[str, str]],
        max_pdus: int,
        max_edus: int,
        now_ms: int,
        catch_up_threshold: Optional[int] = None,
    ) -> "defer.Deferred[Optional[ClaimedTransaction]]":
        """The transaction in flight for ``destination``, or a new one.

        A new transaction takes the oldest ``max_pdus`` PDUs and ``max_edus``
        EDUs; ``make_body(pdu_jsons, edu_jsons)`` returns ``(txn_id, body)``
        and runs inside the database transaction (it must be pure). The
        transaction is recorded as in flight so that a crash or a failure
        retries it with the same ID and body. None when nothing is queued.

        When more than ``catch_up_threshold`` PDUs wait (a long outage),
        only the newest queued PDU of each room is kept before building:
        the destination fetches the events in between itself
        (``/get_missing_events``, ``/backfill``) when it sees their
        descendants, as it does after any gap.
        """

        def txn_fn(txn: Any) -> Optional[ClaimedTransaction]:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("federation_outbox:" + destination,))
            txn.execute(
                "SELECT txn_id, body, outbox_ids FROM federation_transactions_in_flight WHERE destination = %s",
                (destination,),
            )
            row = txn.fetchone()
            if row is not None:
                txn_id, body, ids = row
                txn.execute(
                    "SELECT kind, COUNT(*) FROM federation_outbox WHERE id = ANY(%s) GROUP BY kind", (list(ids),)
                )
                counts = dict(txn.fetchall())
                return ClaimedTransaction(destination, txn_id, body, counts.get("pdu", 0), counts.get("edu", 0), True)
            if catch_up_threshold is not None:
                txn.execute(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM federation_outbox WHERE destination = %s AND kind = 'pdu'"
                    " LIMIT %s) AS q",
                    (destination, catch_up_threshold + 1),
                )
                if txn.fetchone()[0] > catch_up_threshold:
                    txn.execute(
                        "DELETE FROM federation_outbox o WHERE o.destination = %s AND o.kind = 'pdu'"
                        " AND o.room_id IS NOT NULL AND EXISTS (SELECT 1 FROM federation_outbox n"
                        " WHERE n.destination = o.destination AND n.kind = 'pdu' AND n.room_id = o.room_id"
                        " AND n.id > o.id)",
                        (destination,),
                    )
            txn.execute(
                "SELECT id, payload FROM federation_outbox WHERE destination = %s AND kind = 'pdu' ORDER BY id LIMIT %s",
                (destination, max_pdus),
            )
            pdus = txn.fetchall()
            txn.execute(
                "SELECT id, payload FROM federation_outbox WHERE destination = %s AND kind = 'edu' ORDER BY id LIMIT %s",
                (destination, max_edus),
            )
            edus = txn.fetchall()
            if not pdus and not edus:
                return None
            txn_id, body = make_body([p for _, p in pdus], [e for _, e in edus])
            txn.execute(
                "INSERT INTO federation_transactions_in_flight (destination, txn_id, body, outbox_ids, created_ts)"
                " VALUES (%s, %s, %s, %s, %s)",
                (destination, txn_id, body, [i for i, _ in pdus] + [i for i, _ in edus], now_ms),
            )
            return ClaimedTransaction(destination, txn_id, body, len(pdus), len(edus), False)

        return self._db.run_interaction("claim_transaction", txn_fn)

    def complete_transaction(self, destination: str, txn_id: str) -> "defer.Deferred[bool]":
        """Forget a transaction that was delivered (or given up) and its queue rows."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "DELETE FROM federation_transactions_in_flight WHERE destination = %s AND txn_id = %s RETURNING outbox_ids",
                (destination, txn_id),
            )
            row = txn.fetchone()
            if row is None:
                return False
            txn.execute("DELETE FROM federation_outbox WHERE id = ANY(%s)", (list(row[0]),))
            return True

        return self._db.run_interaction("complete_transaction", txn_fn)

    def destinations_with_work(self) -> "defer.Deferred[list[str]]":
        """Every destination with queued rows or a transaction in flight."""

        def txn_fn(txn: Any) -> list[str]:
            # A loose index scan: one index probe per distinct destination
            # instead of reading every queued row (backlogs can be large).
            txn.execute(
                "WITH RECURSIVE d AS ("
                " SELECT MIN(destination) AS destination FROM federation_outbox"
                " UNION ALL"
                " SELECT (SELECT MIN(destination) FROM federation_outbox o WHERE o.destination > d.destination)"
                " FROM d WHERE d.destination IS NOT NULL)"
                " SELECT destination FROM d WHERE destination IS NOT NULL"
                " UNION SELECT destination FROM federation_transactions_in_flight ORDER BY 1"
            )
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("destinations_with_work", txn_fn)

    def queue_length(self, destination: str) -> "defer.Deferred[int]":
        """How many PDUs and EDUs wait for ``destination`` (in flight included)."""

        def txn_fn(txn: Any) -> int:
            txn.execute("SELECT COUNT(*) FROM federation_outbox WHERE destination = %s", (destination,))
            return txn.fetchone()[0]

        return self._db.run_interaction("queue_length", txn_fn)
