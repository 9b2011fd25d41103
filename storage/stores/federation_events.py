"""Events received over federation: persisting them, and the rejected ones.

:meth:`FederationEventStore.persist_received_event` is the federation twin
of ``EventStore.persist_event``: one transaction that checks the room's
forward extremities are still those the caller computed against (the
events shard owner serialises each room, so this only fails when another
writer raced it), writes the state snapshot, draws the event's position
from the shard's allocator, inserts the event and replaces the forward
extremities, current state and memberships with what the caller resolved.

Rejected and soft-failed events live in ``federation_rejected_events``:
they never get a stream position, so no client read can return them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from twisted.internet import defer

from homeserver.core.events import Event
from homeserver.core.rooms import ExtremitiesChangedError, NewRoomRow, OutboundPdu
from storage.stores.events import PersistResult, _state_for_group_txn, insert_event_row_txn
from storage.stores.federation import enqueue_room_pdu_txn
from storage.stores.relations import write_event_indexes_txn

StateKey = tuple[str, str]


class FederationEventStore:
    """Received events and what they change, in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def persist_received_event(
        self,
        allocator: Any,
        event: Event,
        pdu_json: str,
        *,
        expected_extremities: Iterable[str],
        new_extremities: Iterable[str],
        state_group: Optional[int],
        state_to_store: Optional[Mapping[StateKey, str]],
        current_state: Optional[Mapping[StateKey, str]],
        apply_redaction: bool = False,
        new_room: Optional[NewRoomRow] = None,
        on_position: Optional[Callable[[int], None]] = None,
        outbound: Optional[OutboundPdu] = None,
    ) -> "defer.Deferred[PersistResult]":
        """Persist one accepted received event, atomically.

        Exactly one of ``state_group`` (the state after the event equals that
        existing group: a message whose only prev event has it) and
        ``state_to_store`` (the full state after the event, written as a new
        group) is given. ``current_state`` is the room's new full current
        state (None: unchanged). ``new_room`` inserts the ``rooms`` row when
        this server learns of the room through this event (a remote join).
        :class:`ExtremitiesChangedError` if the room's extremities are not
        ``expected_extremities``. ``outbound`` queues the event for the
        room's other servers in the same transaction (a membership this
        server relays as the resident server of a send_join / send_leave).
        """
        if (state_group is None) == (state_to_store is None):
            raise ValueError("give exactly one of state_group and state_to_store")
        expected = frozenset(expected_extremities)
        extremities = sorted(set(new_extremities))
        shard = allocator.shard

        def txn_fn(txn: Any) -> PersistResult:
            room_id = event.room_id
            if new_room is not None:
                txn.execute(
                    "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                    " VALUES (%s, %s, %s, FALSE, %s) ON CONFLICT DO NOTHING",
                    (new_room.room_id, new_room.room_version, new_room.creator, new_room.created_ts),
                )
            txn.execute("SELECT 1 FROM rooms WHERE room_id = %s FOR UPDATE", (room_id,))
            if txn.fetchone() is None:
                raise ExtremitiesChangedError(f"room {room_id} does not exist")
            txn.execute("SELECT event_id FROM forward_extremities WHERE room_id = %s", (room_id,))
            current = frozenset(r[0] for r in txn.fetchall())
            if current != expected:
                raise ExtremitiesChangedError(f"room {room_id}: extremities are {sorted(current)}, expected {sorted(expected)}")
            if state_to_store is not None:
                group = _new_state_group_txn(txn, room_id, state_to_store)
                chain = 0
            else:
                group = state_group
                txn.execute("SELECT chain_length FROM state_groups WHERE room_id = %s AND state_group = %s", (room_id, group))
                row = txn.fetchone()
                chain = row[0] if row else 0
            position = allocator.allocate(txn)
            if on_position is not None:
                on_position(position)
            insert_event_row_txn(txn, room_id, event, pdu_json, shard, position, group)
            txn.execute("DELETE FROM forward_extremities WHERE room_id = %s", (room_id,))
            if extremities:
                txn.execute_values(
                    "INSERT INTO forward_extremities (room_id, event_id) VALUES %s", [(room_id, e) for e in extremities]
                )
            if current_state is not None:
                _replace_current_state(txn, room_id, current_state, shard, position)
            if apply_redaction and event.redacts is not None:
                txn.execute(
                    "UPDATE events SET redacted_by = %s WHERE room_id = %s AND event_id = %s AND redacted_by IS NULL",
                    (event.event_id, room_id, event.redacts),
                )
            # Received events are searchable and aggregated like local ones.
            write_event_indexes_txn(txn, event, position, unindex_redacted=apply_redaction)
            queued = enqueue_room_pdu_txn(txn, room_id, event.event_id, outbound) if outbound is not None else ()
            return PersistResult(shard, position, group, chain, queued)

        return self._db.run_interaction("persist_received_event", txn_fn)

    def persist_backfilled(
        self, room_id: str, events: Sequence[tuple[Event, str, Mapping[StateKey, str]]]
    ) -> "defer.Deferred[int]":
        """Store ``(event, pdu_json, state_after)`` triples fetched by backfill as history of ``room_id``.

        Each event takes a negative stream position (so /sync never reports it
        as new), older events (smaller depth) lower ones, and a state group
        holding ``state_after``; events given the very same state mapping
        object share one group. They are indexed for search and relations,
        not for the room directory (which follows the current state). Known
        events are skipped. Returns how many were stored.
        """

        def txn_fn(txn: Any) -> int:
            stored = 0
            groups: dict[int, int] = {}
            # Newest first: each takes the next, lower, negative position.
            for event, pdu_json, state in sorted(events, key=lambda t: (-t[0].depth, t[0].event_id)):
                txn.execute("SELECT 1 FROM events WHERE room_id = %s AND event_id = %s AND stream_shard >= 0",
                            (room_id, event.event_id))
                if txn.fetchone() is not None:
                    continue
                group = groups.get(id(state))
                if group is None:
                    group = groups[id(state)] = _new_state_group_txn(txn, room_id, state)
                txn.execute("DELETE FROM events WHERE room_id = %s AND event_id = %s", (room_id, event.event_id))
                txn.execute("SELECT nextval('backfill_stream_seq')")
                (seq,) = txn.fetchone()
                insert_event_row_txn(txn, room_id, event, pdu_json, 0, -seq, group)
                write_event_indexes_txn(txn, event, -seq, unindex_redacted=False, directory_stats=False)
                stored += 1
            return stored

        return self._db.run_interaction("persist_backfilled", txn_fn)

    def get_state_after(self, room_id: str, event_ids: Sequence[str]) -> "defer.Deferred[dict[str, dict[StateKey, str]]]":
        """The state after each accepted (non-outlier) event of ``event_ids`` held here."""

        def txn_fn(txn: Any) -> dict[str, dict[StateKey, str]]:
            txn.execute(
                "SELECT event_id, state_group FROM events WHERE room_id = %s AND event_id = ANY(%s)"
                " AND stream_shard >= 0 AND NOT rejected AND state_group >= 0",
                (room_id, list(event_ids)),
            )
            by_group: dict[int, list[str]] = {}
            for event_id, group in txn.fetchall():
                by_group.setdefault(group, []).append(event_id)
            out: dict[str, dict[StateKey, str]] = {}
            for group, ids in by_group.items():
                state = _state_for_group_txn(txn, room_id, group)
                for event_id in ids:
                    out[event_id] = state
            return out

        return self._db.run_interaction("get_state_after", txn_fn)

    def oldest_event(self, room_id: str) -> "defer.Deferred[Optional[tuple[str, str]]]":
        """``(event_id, pdu_json)`` of the topologically first accepted event of ``room_id``, or None."""

        def txn_fn(txn: Any) -> Optional[tuple[str, str]]:
            txn.execute(
                "SELECT event_id, json FROM events WHERE room_id = %s AND stream_shard >= 0"
                " ORDER BY depth ASC, stream_position ASC LIMIT 1",
                (room_id,),
            )
            row = txn.fetchone()
            return (row[0], row[1]) if row else None

        return self._db.run_interaction("oldest_event", txn_fn)

    def store_outliers(self, room_id: str, events: Sequence[tuple[str, str]]) -> "defer.Deferred[None]":
        """Keep ``(event_id, pdu_json)`` pairs as outliers of ``room_id`` (idempotent)."""

        def txn_fn(txn: Any) -> None:
            if events:
                txn.execute_values(
                    "INSERT INTO federation_outliers (room_id, event_id, json) VALUES %s ON CONFLICT DO NOTHING",
                    [(room_id, e, j) for e, j in events],
                )

        return self._db.run_interaction("store_outliers", txn_fn)

    def record_rejected(
        self, room_id: str, event_id: str, kind: str, reason: str, origin: str, pdu_json: str, now_ms: int
    ) -> "defer.Deferred[None]":
        """Remember a rejected or soft-failed event (idempotent)."""

        def txn_fn(txn: Any) -> None:
            txn.execute(
                "INSERT INTO federation_rejected_events (room_id, event_id, kind, reason, origin, json, received_ts)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (room_id, event_id, kind, reason[:1000], origin, pdu_json, now_ms),
            )

        return self._db.run_interaction("record_rejected_event", txn_fn)

    def get_rejected(self, room_id: str, event_ids: Sequence[str]) -> "defer.Deferred[dict[str, tuple[str, str]]]":
        """``event_id -> (kind, reason)`` for those of ``event_ids`` that were rejected or soft-failed."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            # The common case on receipt (prev and auth events all accepted):
            # no round trip to PostgreSQL.
            return defer.succeed({})

        def txn_fn(txn: Any) -> dict[str, tuple[str, str]]:
            txn.execute(
                "SELECT event_id, kind, reason FROM federation_rejected_events WHERE room_id = %s AND event_id = ANY(%s)",
                (room_id, ids),
            )
            return {e: (k, r) for e, k, r in txn.fetchall()}

        return self._db.run_interaction("get_rejected_events", txn_fn)

    def find_event_room(self, event_id: str) -> "defer.Deferred[Optional[str]]":
        """The room of an accepted event known by ID only (``GET /event/{eventId}``), or None.

        The one query not filtered on ``room_id``: the federation API names
        no room here. Served by the primary key's second column through a
        sequential scan on small installations; see the report for the index
        a large one wants.
        """

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute("SELECT room_id FROM events WHERE event_id = %s LIMIT 1", (event_id,))
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("find_event_room", txn_fn)

    def get_joined_servers(self, room_id: str) -> "defer.Deferred[set[str]]":
        """The server names of the room's joined members (from current memberships)."""

        def txn_fn(txn: Any) -> set[str]:
            txn.execute("SELECT user_id FROM room_memberships WHERE room_id = %s AND membership = 'join'", (room_id,))
            return {u.split(":", 1)[1] for (u,) in txn.fetchall() if ":" in u}

        return self._db.run_interaction("get_joined_servers", txn_fn)


def _new_state_group_txn(txn: Any, room_id: str, state: Mapping[StateKey, str]) -> int:
    """Write ``state`` as a new full (delta-less) state group of ``room_id``; returns its number."""
    txn.execute("SELECT nextval('state_group_seq')")
    (group,) = txn.fetchone()
    txn.execute(
        "INSERT INTO state_groups (room_id, state_group, prev_group, chain_length) VALUES (%s, %s, NULL, 0)",
        (room_id, group),
    )
    rows = [(room_id, group, t, k, e) for (t, k), e in state.items()]
    if rows:
        txn.execute_values("INSERT INTO state_group_state (room_id, state_group, type, state_key, event_id) VALUES %s", rows)
    return group


def _replace_current_state(txn: Any, room_id: str, state: Mapping[StateKey, str], shard: int, position: int) -> None:
    """Make ``current_state`` equal ``state`` and follow membership changes into ``room_memberships``.

    A membership whose event is an outlier (learnt from send_join) is placed
    at ``(shard, position)``, the event that made it current here.
    """
    txn.execute("SELECT type, state_key, event_id FROM current_state WHERE room_id = %s", (room_id,))
    old = {(t, k): e for t, k, e in txn.fetchall()}
    removed = [k for k in old if k not in state]
    changed = [(k, e) for k, e in state.items() if old.get(k) != e]
    for t, k in removed:
        txn.execute("DELETE FROM current_state WHERE room_id = %s AND type = %s AND state_key = %s", (room_id, t, k))
        if t == "m.room.member":
            txn.execute("DELETE FROM room_memberships WHERE room_id = %s AND user_id = %s", (room_id, k))
    for (t, k), e in changed:
        txn.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id",
            (room_id, t, k, e),
        )
        if t == "m.room.member":
            txn.execute(
                "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_shard,"
                " stream_position, forgotten)"
                " SELECT room_id, %s, membership, event_id, sender, stream_shard, stream_position, FALSE"
                " FROM events WHERE room_id = %s AND event_id = %s"
                " UNION ALL SELECT room_id, %s, (json::jsonb)->'content'->>'membership', event_id,"
                " (json::jsonb)->>'sender', %s, %s, FALSE FROM federation_outliers o WHERE room_id = %s AND event_id = %s"
                " AND NOT EXISTS (SELECT 1 FROM events x WHERE x.room_id = o.room_id AND x.event_id = o.event_id)"
                " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,"
                " event_id = EXCLUDED.event_id, sender = EXCLUDED.sender, stream_shard = EXCLUDED.stream_shard,"
                " stream_position = EXCLUDED.stream_position, forgotten = FALSE",
                (k, room_id, e, k, shard, position, room_id, e),
            )
