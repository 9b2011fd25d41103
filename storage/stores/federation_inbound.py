"""Durable inbound federation: staged PDUs, received transaction IDs and per-room leases.

``federation_inbound_transactions`` deduplicates ``PUT /send`` by
``(origin, txn_id)`` and keeps the answer; ``federation_inbound_staging``
holds the PDUs of those transactions until they are processed;
``federation_inbound_room_leases`` says which ``federation_inbound``
instance processes a room's staged PDUs (see
``homeserver.federation.inbound``).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import attrs
from twisted.internet import defer


@attrs.frozen
class StagedPdu:
    """A staged row."""

    id: int
    origin: str
    txn_id: str
    room_id: str
    event_id: str
    pdu_json: str
    received_ts: int
    attempts: int


@attrs.frozen
class StageOutcome:
    """What staging a transaction found.

    ``status`` is ``"new"`` (first time: ``staged`` are the rows just
    written, in transaction order), ``"pending"`` (seen before and not
    answered yet: ``staged`` are its rows still waiting) or ``"done"``
    (answered: ``response_json`` is the answer).
    """

    status: str
    staged: tuple[tuple[int, str, str], ...] = ()
    response_json: Optional[str] = None


class InboundStagingStore:
    """The three inbound tables in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    # -- receipt -------------------------------------------------------------

    def stage_transaction(
        self, origin: str, txn_id: str, pdus: Sequence[tuple[str, str, str]], now_ms: int
    ) -> "defer.Deferred[StageOutcome]":
        """Record transaction ``(origin, txn_id)`` and stage its ``(room_id, event_id, pdu_json)`` rows, atomically.

        A transaction already recorded stages nothing: see :class:`StageOutcome`.
        """

        def txn_fn(txn: Any) -> StageOutcome:
            txn.execute(
                "INSERT INTO federation_inbound_transactions (origin, txn_id, received_ts) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (origin, txn_id, now_ms),
            )
            if txn.rowcount != 1:
                txn.execute(
                    "SELECT response_json FROM federation_inbound_transactions WHERE origin = %s AND txn_id = %s",
                    (origin, txn_id),
                )
                row = txn.fetchone()
                if row is not None and row[0] is not None:
                    return StageOutcome("done", response_json=row[0])
                txn.execute(
                    "SELECT id, room_id, event_id FROM federation_inbound_staging WHERE origin = %s AND txn_id = %s"
                    " ORDER BY id",
                    (origin, txn_id),
                )
                return StageOutcome("pending", tuple((i, r, e) for i, r, e in txn.fetchall()))
            if not pdus:
                return StageOutcome("new")
            # One multi-row INSERT: ids follow the order of the VALUES list.
            rows = txn.execute_values(
                "INSERT INTO federation_inbound_staging (origin, txn_id, room_id, event_id, pdu_json, received_ts)"
                " VALUES %s RETURNING id, room_id, event_id",
                [(origin, txn_id, room_id, event_id, pdu_json, now_ms) for room_id, event_id, pdu_json in pdus],
                fetch=True,
            )
            return StageOutcome("new", tuple(sorted((i, r, e) for i, r, e in rows or [])))

        return self._db.run_interaction("stage_inbound_transaction", txn_fn)

    def store_response(self, origin: str, txn_id: str, response_json: str) -> "defer.Deferred[None]":
        """Keep the answer to ``(origin, txn_id)`` for retries."""

        def txn_fn(txn: Any) -> None:
            txn.execute(
                "UPDATE federation_inbound_transactions SET response_json = %s WHERE origin = %s AND txn_id = %s",
                (response_json, origin, txn_id),
            )

        return self._db.run_interaction("store_inbound_response", txn_fn)

    def purge_transactions(self, before_ms: int) -> "defer.Deferred[int]":
        """Forget transaction IDs received before ``before_ms`` whose PDUs are all processed."""

        def txn_fn(txn: Any) -> int:
            txn.execute(
                "DELETE FROM federation_inbound_transactions t WHERE received_ts < %s AND NOT EXISTS"
                " (SELECT 1 FROM federation_inbound_staging s WHERE s.origin = t.origin AND s.txn_id = t.txn_id)",
                (before_ms,),
            )
            return txn.rowcount

        return self._db.run_interaction("purge_inbound_transactions", txn_fn)

    # -- processing ------------------------------------------------------------

    def next_staged(self, room_id: str, limit: int) -> "defer.Deferred[list[StagedPdu]]":
        """The oldest ``limit`` staged rows of ``room_id``, in arrival order."""

        def txn_fn(txn: Any) -> list[StagedPdu]:
            txn.execute(
                "SELECT id, origin, txn_id, room_id, event_id, pdu_json, received_ts, attempts"
                " FROM federation_inbound_staging WHERE room_id = %s ORDER BY id LIMIT %s",
                (room_id, limit),
            )
            return [StagedPdu(*row) for row in txn.fetchall()]

        return self._db.run_interaction("next_staged_pdus", txn_fn)

    def finish_staged(
        self, staged_id: int, room_id: str, holder: str, token: str, now_ms: int, lease_ms: int
    ) -> "defer.Deferred[bool]":
        """Delete a processed row and extend the room's lease; False if the lease is no longer ours.

        The row is deleted only while we hold the lease: an instance that
        lost it (stalled past its expiry) leaves the row to the new holder,
        which finds the event already handled.
        """

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "UPDATE federation_inbound_room_leases SET expires_ts = %s"
                " WHERE room_id = %s AND holder = %s AND token = %s",
                (now_ms + lease_ms, room_id, holder, token),
            )
            if txn.rowcount != 1:
                return False
            txn.execute("DELETE FROM federation_inbound_staging WHERE id = %s AND room_id = %s", (staged_id, room_id))
            return True

        return self._db.run_interaction("finish_staged_pdu", txn_fn)

    def record_failure(self, staged_id: int) -> "defer.Deferred[int]":
        """Count a failed attempt at a row; its attempts so far (0 if it is gone)."""

        def txn_fn(txn: Any) -> int:
            txn.execute(
                "UPDATE federation_inbound_staging SET attempts = attempts + 1 WHERE id = %s RETURNING attempts",
                (staged_id,),
            )
            row = txn.fetchone()
            return row[0] if row else 0

        return self._db.run_interaction("record_staged_failure", txn_fn)

    def rooms_with_staged(self) -> "defer.Deferred[list[str]]":
        """Every room with staged rows, the one waiting longest first."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT room_id FROM federation_inbound_staging GROUP BY room_id ORDER BY MIN(id)")
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("rooms_with_staged_pdus", txn_fn)

    def still_staged(self, staged_ids: Iterable[int]) -> "defer.Deferred[set[int]]":
        """Those of ``staged_ids`` not processed yet."""
        ids = sorted(set(staged_ids))

        def txn_fn(txn: Any) -> set[int]:
            if not ids:
                return set()
            txn.execute("SELECT id FROM federation_inbound_staging WHERE id = ANY(%s)", (ids,))
            return {r[0] for r in txn.fetchall()}

        return self._db.run_interaction("still_staged_pdus", txn_fn)

    # -- leases --------------------------------------------------------------

    def acquire_lease(self, room_id: str, holder: str, token: str, now_ms: int, lease_ms: int) -> "defer.Deferred[bool]":
        """Take (or extend) the lease on ``room_id`` unless another holder's lease is still valid."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "INSERT INTO federation_inbound_room_leases AS l (room_id, holder, token, expires_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (room_id) DO UPDATE"
                " SET holder = EXCLUDED.holder, token = EXCLUDED.token, expires_ts = EXCLUDED.expires_ts"
                " WHERE l.expires_ts < %s OR (l.holder = EXCLUDED.holder AND l.token = EXCLUDED.token)",
                (room_id, holder, token, now_ms + lease_ms, now_ms),
            )
            return txn.rowcount == 1

        return self._db.run_interaction("acquire_room_lease", txn_fn)

    def release_lease(self, room_id: str, holder: str, token: str) -> "defer.Deferred[bool]":
        """Give up our lease on ``room_id``; whether the room has staged rows left (staged meanwhile)."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "DELETE FROM federation_inbound_room_leases WHERE room_id = %s AND holder = %s AND token = %s",
                (room_id, holder, token),
            )
            txn.execute("SELECT 1 FROM federation_inbound_staging WHERE room_id = %s LIMIT 1", (room_id,))
            return txn.fetchone() is not None

        return self._db.run_interaction("release_room_lease", txn_fn)

    def release_previous_leases(self, holder: str, token: str) -> "defer.Deferred[int]":
        """Drop leases ``holder`` took in an earlier life (another token): that process is gone."""

        def txn_fn(txn: Any) -> int:
            txn.execute(
                "DELETE FROM federation_inbound_room_leases WHERE holder = %s AND token <> %s", (holder, token)
            )
            return txn.rowcount

        return self._db.run_interaction("release_previous_room_leases", txn_fn)
