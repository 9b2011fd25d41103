"""Rooms, events, room state, memberships and client transaction IDs.

Every method is one named transaction; every query on a room-scoped table
filters on ``room_id`` (DESIGN.md §6). The write path is
:meth:`EventStore.persist_event`: one transaction inserts the event, its
state snapshot, the room's current state, memberships and forward
extremities, records the client transaction ID, and draws the event's
position from the room's events shard allocator (DESIGN.md §3), so a
committed event always has its position and nothing is half written.

Values returned are plain frozen rows; building :class:`Event` objects from
their JSON is the caller's business.
"""

from __future__ import annotations

import collections
import json
import threading
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import attrs
from twisted.internet import defer

from homeserver.core.events import Event
from homeserver.core.rooms import (
    AliasInUseError,
    DuplicateTransactionError,
    ExtremitiesChangedError,
    NewRoomRow,
    OutboundPdu,
    RoomExistsError,
    TxnKey,
)
from storage.stores.federation import enqueue_room_pdu_txn
from storage.stores.relations import write_event_indexes_txn

#: A state group stores its full state (no prev_group) when the chain below
#: it would exceed this many links, bounding the cost of reading it.
MAX_STATE_CHAIN = 50

StateKey = tuple[str, str]
StateIds = Mapping[StateKey, str]


@attrs.frozen
class RoomRecord:
    """A row of ``rooms``."""

    room_id: str
    room_version: str
    creator: str
    is_public: bool
    created_ts: int


@attrs.frozen
class StoredEvent:
    """An event row: the PDU JSON and where it sits in the streams."""

    room_id: str
    event_id: str
    stream_shard: int
    stream_position: int
    depth: int
    type: str
    state_key: Optional[str]
    sender: str
    membership: Optional[str]
    origin_server_ts: int
    json: str
    rejected: bool
    redacted_by: Optional[str]
    state_group: int

    def pdu(self) -> dict[str, Any]:
        """The PDU as a fresh dict."""
        return json.loads(self.json)


_EVENT_COLUMNS = (
    "room_id, event_id, stream_shard, stream_position, depth, type, state_key, sender, membership,"
    " origin_server_ts, json, rejected, redacted_by, state_group"
)


@attrs.frozen
class StreamRow:
    """What the events stream carries for one event (the bus payload, or a catch-up row)."""

    stream_shard: int
    stream_position: int
    room_id: str
    event_id: str
    type: str
    state_key: Optional[str]
    sender: str
    membership: Optional[str]

    def to_payload(self) -> dict[str, Any]:
        """The bus payload (small: readers re-read PostgreSQL for the event itself)."""
        payload: dict[str, Any] = {"room_id": self.room_id, "event_id": self.event_id, "type": self.type, "sender": self.sender}
        if self.state_key is not None:
            payload["state_key"] = self.state_key
        if self.membership is not None:
            payload["membership"] = self.membership
        return payload

    @classmethod
    def from_payload(cls, shard: int, position: int, payload: Mapping[str, Any]) -> "StreamRow":
        """Decode a bus payload; ``ValueError`` if it is not one of ours."""
        try:
            room_id, event_id, etype, sender = (payload["room_id"], payload["event_id"], payload["type"], payload["sender"])
        except KeyError as e:
            raise ValueError(f"events payload lacks {e}") from None
        state_key = payload.get("state_key")
        membership = payload.get("membership")
        for v in (room_id, event_id, etype, sender):
            if not isinstance(v, str):
                raise ValueError("events payload fields must be strings")
        return cls(shard, position, room_id, event_id, etype, state_key, sender, membership)


_STREAM_COLUMNS = "stream_shard, stream_position, room_id, event_id, type, state_key, sender, membership"

# Hot reads of /sync, run as prepared statements (see storage.database).
# The last ``$4`` events of a room in ``($2, $3]``, newest first.
_ROOM_RANGE_SQL = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE room_id = %s AND stream_position > %s AND stream_position <= %s"
    " ORDER BY stream_position DESC LIMIT %s"
)
# The state group of a room's last event at or before a position.
_STATE_GROUP_AT_SQL = (
    "SELECT state_group FROM events WHERE room_id = %s AND stream_position <= %s"
    " ORDER BY stream_position DESC LIMIT 1"
)


@attrs.frozen
class Membership:
    """A row of ``room_memberships``."""

    room_id: str
    user_id: str
    membership: str
    event_id: str
    sender: str
    stream_shard: int
    stream_position: int
    forgotten: bool


_MEMBERSHIP_COLUMNS = "room_id, user_id, membership, event_id, sender, stream_shard, stream_position, forgotten"


@attrs.frozen
class RoomSnapshot:
    """What the writer of a room needs before appending to it."""

    room: RoomRecord
    extremities: tuple[str, ...]
    max_depth: int
    state_group: Optional[int]
    chain_length: int
    current_state: StateIds


@attrs.frozen
class PersistResult:
    """Where a persisted event landed."""

    stream_shard: int
    stream_position: int
    state_group: int
    chain_length: int
    #: The servers the event was queued for in its transaction (``outbound``).
    queued_destinations: tuple[str, ...] = ()


#: What :meth:`EventStore.get_sync_timelines` returns for one room.
SyncTimeline = tuple[list[StoredEvent], bool, Optional[tuple[int, dict[StateKey, str]]], dict[str, StoredEvent]]


class EventStore:
    """Rooms, events and state in PostgreSQL."""

    def __init__(self, database: Any, state_cache_entries: int = 100_000) -> None:
        self._db = database
        #: Resolved state of groups read lately (groups never change once written).
        self.state_cache = StateGroupCache(state_cache_entries)

    # -- writes --------------------------------------------------------------

    def persist_event(
        self,
        allocator: Any,
        event: Event,
        pdu_json: str,
        *,
        expected_extremities: Iterable[str],
        prev_state_group: Optional[int],
        prev_chain_length: int,
        state_after: Optional[StateIds],
        txn_key: Optional[TxnKey] = None,
        new_room: Optional[NewRoomRow] = None,
        now_ms: int = 0,
        on_position: Optional[Callable[[int], None]] = None,
        outbound: Optional[OutboundPdu] = None,
    ) -> "defer.Deferred[PersistResult]":
        """Persist one locally created event and everything it changes, atomically.

        ``allocator`` is the ``ShardPositionAllocator`` of the room's events
        shard; the event's position is drawn from it inside the transaction
        and ``on_position(position)`` is called there (to attach the bus
        payload). ``expected_extremities`` are the prev events the event was
        built on: if the room's forward extremities differ,
        :class:`ExtremitiesChangedError` is raised and nothing is written.
        ``state_after`` is the full state after a state event (None for other
        events). ``new_room`` inserts the ``rooms`` row (the create event).
        A reused ``txn_key`` raises :class:`DuplicateTransactionError`.
        ``outbound`` queues the event for the room's other servers in the
        same transaction (``federation_outbox``).
        """
        expected = frozenset(expected_extremities)
        shard = allocator.shard

        def txn_fn(txn: Any) -> PersistResult:
            room_id = event.room_id
            if new_room is not None:
                txn.execute(
                    "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (new_room.room_id, new_room.room_version, new_room.creator, new_room.is_public, new_room.created_ts),
                )
                if txn.rowcount != 1:
                    raise RoomExistsError(room_id)
            else:
                # Serialises writers of this room (there should be one: the
                # shard owner), so the extremity check below is reliable.
                txn.execute("SELECT 1 FROM rooms WHERE room_id = %s FOR UPDATE", (room_id,))
                if txn.fetchone() is None:
                    raise ExtremitiesChangedError(f"room {room_id} does not exist")
            txn.execute_prepared(
                "events_forward_extremities", "SELECT event_id FROM forward_extremities WHERE room_id = %s", (room_id,)
            )
            current = frozenset(r[0] for r in txn.fetchall())
            if current != expected:
                raise ExtremitiesChangedError(f"room {room_id}: extremities are {sorted(current)}, expected {sorted(expected)}")
            if txn_key is not None:
                txn.execute(
                    "INSERT INTO event_txn_ids (user_id, device_id, txn_id, room_id, event_id, inserted_ts)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (txn_key.user_id, txn_key.device_id, txn_key.txn_id, txn_key.room_id, event.event_id, now_ms),
                )
                if txn.rowcount != 1:
                    txn.execute(
                        "SELECT event_id FROM event_txn_ids WHERE user_id = %s AND device_id = %s AND room_id = %s"
                        " AND txn_id = %s",
                        (txn_key.user_id, txn_key.device_id, txn_key.room_id, txn_key.txn_id),
                    )
                    raise DuplicateTransactionError(txn.fetchone()[0])

            if state_after is not None:
                txn.execute("SELECT nextval('state_group_seq')")
                (group,) = txn.fetchone()
                if prev_state_group is None or prev_chain_length + 1 > MAX_STATE_CHAIN:
                    chain = 0
                    rows = [(room_id, group, t, k, e) for (t, k), e in state_after.items()]
                    txn.execute(
                        "INSERT INTO state_groups (room_id, state_group, prev_group, chain_length) VALUES (%s, %s, NULL, 0)",
                        (room_id, group),
                    )
                else:
                    chain = prev_chain_length + 1
                    key = (event.type, event.state_key)
                    rows = [(room_id, group, event.type, event.state_key, state_after[key])]
                    txn.execute(
                        "INSERT INTO state_groups (room_id, state_group, prev_group, chain_length) VALUES (%s, %s, %s, %s)",
                        (room_id, group, prev_state_group, chain),
                    )
                if rows:
                    txn.execute_values(
                        "INSERT INTO state_group_state (room_id, state_group, type, state_key, event_id) VALUES %s", rows
                    )
            else:
                if prev_state_group is None:
                    raise ValueError("a non-state event needs the state group before it")
                group, chain = prev_state_group, prev_chain_length

            position = allocator.allocate(txn)
            if on_position is not None:
                on_position(position)
            membership = insert_event_row_txn(txn, room_id, event, pdu_json, shard, position, group)
            txn.execute("DELETE FROM forward_extremities WHERE room_id = %s", (room_id,))
            txn.execute("INSERT INTO forward_extremities (room_id, event_id) VALUES (%s, %s)", (room_id, event.event_id))
            if event.state_key is not None:
                txn.execute(
                    "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id",
                    (room_id, event.type, event.state_key, event.event_id),
                )
                if membership is not None:
                    txn.execute(
                        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_shard,"
                        " stream_position, forgotten) VALUES (%s, %s, %s, %s, %s, %s, %s, FALSE)"
                        " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,"
                        " event_id = EXCLUDED.event_id, sender = EXCLUDED.sender, stream_shard = EXCLUDED.stream_shard,"
                        " stream_position = EXCLUDED.stream_position, forgotten = FALSE",
                        (room_id, event.state_key, membership, event.event_id, event.sender, shard, position),
                    )
            if event.redacts is not None:
                txn.execute(
                    "UPDATE events SET redacted_by = %s WHERE room_id = %s AND event_id = %s AND redacted_by IS NULL",
                    (event.event_id, room_id, event.redacts),
                )
            write_event_indexes_txn(txn, event, position)
            queued = enqueue_room_pdu_txn(txn, room_id, event.event_id, outbound) if outbound is not None else ()
            return PersistResult(shard, position, group, chain, queued)

        return self._db.run_interaction("persist_event", txn_fn)

    def forget_room(self, room_id: str, user_id: str) -> "defer.Deferred[bool]":
        """Mark a left room forgotten for ``user_id``; False if the user is still joined or invited."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "UPDATE room_memberships SET forgotten = TRUE WHERE room_id = %s AND user_id = %s"
                " AND membership IN ('leave', 'ban')",
                (room_id, user_id),
            )
            return txn.rowcount == 1

        return self._db.run_interaction("forget_room", txn_fn)

    def create_alias(self, alias: str, room_id: str, creator: str) -> "defer.Deferred[None]":
        """Map ``alias`` to ``room_id``; :class:`AliasInUseError` if taken."""

        def txn_fn(txn: Any) -> None:
            txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (alias, room_id, creator),
            )
            if txn.rowcount != 1:
                raise AliasInUseError(alias)

        return self._db.run_interaction("create_alias", txn_fn)

    def delete_alias(self, alias: str) -> "defer.Deferred[None]":
        """Remove an alias mapping (undoing a failed createRoom)."""

        def txn_fn(txn: Any) -> None:
            txn.execute("DELETE FROM room_aliases WHERE room_alias = %s", (alias,))

        return self._db.run_interaction("delete_alias", txn_fn)

    # -- reads ---------------------------------------------------------------

    def get_alias(self, alias: str) -> "defer.Deferred[Optional[str]]":
        """The room ID an alias maps to, or None."""

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute("SELECT room_id FROM room_aliases WHERE room_alias = %s", (alias,))
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("get_alias", txn_fn)

    def get_room(self, room_id: str) -> "defer.Deferred[Optional[RoomRecord]]":
        """The ``rooms`` row, or None."""

        def txn_fn(txn: Any) -> Optional[RoomRecord]:
            txn.execute(
                "SELECT room_id, room_version, creator, is_public, created_ts FROM rooms WHERE room_id = %s", (room_id,)
            )
            row = txn.fetchone()
            return RoomRecord(*row) if row else None

        return self._db.run_interaction("get_room", txn_fn)

    def get_room_snapshot(self, room_id: str) -> "defer.Deferred[Optional[RoomSnapshot]]":
        """Room, forward extremities, their max depth and state group, and current state."""

        def txn_fn(txn: Any) -> Optional[RoomSnapshot]:
            txn.execute(
                "SELECT room_id, room_version, creator, is_public, created_ts FROM rooms WHERE room_id = %s", (room_id,)
            )
            row = txn.fetchone()
            if row is None:
                return None
            room = RoomRecord(*row)
            txn.execute(
                "SELECT e.event_id, e.depth, e.state_group, g.chain_length FROM forward_extremities f"
                " JOIN events e ON e.room_id = f.room_id AND e.event_id = f.event_id"
                " JOIN state_groups g ON g.room_id = e.room_id AND g.state_group = e.state_group"
                " WHERE f.room_id = %s ORDER BY e.stream_position",
                (room_id,),
            )
            ext = txn.fetchall()
            txn.execute("SELECT type, state_key, event_id FROM current_state WHERE room_id = %s", (room_id,))
            state = {(t, k): e for t, k, e in txn.fetchall()}
            if not ext:
                return RoomSnapshot(room, (), 0, None, 0, state)
            last = ext[-1]
            return RoomSnapshot(room, tuple(r[0] for r in ext), max(r[1] for r in ext), last[2], last[3], state)

        return self._db.run_interaction("get_room_snapshot", txn_fn)

    def get_events(self, room_id: str, event_ids: Sequence[str]) -> "defer.Deferred[dict[str, StoredEvent]]":
        """The rows of the given events of one room (missing IDs are absent)."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return defer.succeed({})

        def txn_fn(txn: Any) -> dict[str, StoredEvent]:
            txn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE room_id = %s AND event_id = ANY(%s)", (room_id, ids)
            )
            found = {r[1]: StoredEvent(*r) for r in txn.fetchall()}
            if len(found) < len(ids):
                txn.execute(
                    "SELECT event_id, json FROM federation_outliers WHERE room_id = %s AND event_id = ANY(%s)",
                    (room_id, [e for e in ids if e not in found]),
                )
                for event_id, raw in txn.fetchall():
                    found[event_id] = _outlier_row(room_id, event_id, raw)
            return found

        return self._db.run_interaction("get_events", txn_fn)

    def get_current_state_ids(self, room_id: str) -> "defer.Deferred[dict[StateKey, str]]":
        """The room's current state: ``(type, state_key) -> event_id``."""

        def txn_fn(txn: Any) -> dict[StateKey, str]:
            txn.execute("SELECT type, state_key, event_id FROM current_state WHERE room_id = %s", (room_id,))
            return {(t, k): e for t, k, e in txn.fetchall()}

        return self._db.run_interaction("get_current_state_ids", txn_fn)

    def get_current_state_id(self, room_id: str, event_type: str, state_key: str) -> "defer.Deferred[Optional[str]]":
        """The event ID of one entry of the room's current state, or None (one row, not the whole state)."""

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute(
                "SELECT event_id FROM current_state WHERE room_id = %s AND type = %s AND state_key = %s",
                (room_id, event_type, state_key),
            )
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("get_current_state_id", txn_fn)

    def get_state_ids_for_groups(self, room_id: str, groups: Iterable[int]) -> "defer.Deferred[dict[int, dict[StateKey, str]]]":
        """The full state of each state group of a room."""
        wanted = sorted(set(groups))

        def txn_fn(txn: Any) -> dict[int, dict[StateKey, str]]:
            return {g: _state_for_group_txn(txn, room_id, g, self.state_cache) for g in wanted}

        return self._db.run_interaction("get_state_for_groups", txn_fn)

    def get_state_at_position(self, room_id: str, position: int) -> "defer.Deferred[Optional[tuple[int, dict[StateKey, str]]]]":
        """The state after the room's last event at or before ``position`` on its shard (group, ids), or None."""

        def txn_fn(txn: Any) -> Optional[tuple[int, dict[StateKey, str]]]:
            txn.execute_prepared("events_state_group_at", _STATE_GROUP_AT_SQL, (room_id, position))
            row = txn.fetchone()
            if row is None:
                return None
            return row[0], _state_for_group_txn(txn, room_id, row[0], self.state_cache)

        return self._db.run_interaction("get_state_at_position", txn_fn)

    def get_state_before(self, room_id: str, event_id: str) -> "defer.Deferred[dict[StateKey, str]]":
        """The state before an event: the state after its predecessor in the room (empty for the create event)."""

        def txn_fn(txn: Any) -> dict[StateKey, str]:
            txn.execute(
                "SELECT p.state_group FROM events e JOIN events p ON p.room_id = e.room_id"
                " AND p.stream_position < e.stream_position AND p.stream_shard = e.stream_shard"
                " WHERE e.room_id = %s AND e.event_id = %s ORDER BY p.stream_position DESC LIMIT 1",
                (room_id, event_id),
            )
            row = txn.fetchone()
            return _state_for_group_txn(txn, room_id, row[0], self.state_cache) if row else {}

        return self._db.run_interaction("get_state_before", txn_fn)

    def get_txn_event(self, key: TxnKey) -> "defer.Deferred[Optional[str]]":
        """The event a client transaction ID produced, or None."""

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute_prepared(
                "events_txn_event",
                "SELECT event_id FROM event_txn_ids WHERE user_id = %s AND device_id = %s AND room_id = %s AND txn_id = %s",
                (key.user_id, key.device_id, key.room_id, key.txn_id),
            )
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("get_txn_event", txn_fn)

    def get_memberships_for_user(self, user_id: str) -> "defer.Deferred[list[Membership]]":
        """Every room in which ``user_id`` has a membership row (any membership)."""

        def txn_fn(txn: Any) -> list[Membership]:
            txn.execute_prepared(
                "events_memberships_for_user",
                f"SELECT {_MEMBERSHIP_COLUMNS} FROM room_memberships WHERE user_id = %s",
                (user_id,),
            )
            return [Membership(*r) for r in txn.fetchall()]

        return self._db.run_interaction("get_memberships_for_user", txn_fn)

    def get_membership(self, room_id: str, user_id: str) -> "defer.Deferred[Optional[Membership]]":
        """One user's current membership of one room, or None."""

        def txn_fn(txn: Any) -> Optional[Membership]:
            txn.execute(
                f"SELECT {_MEMBERSHIP_COLUMNS} FROM room_memberships WHERE room_id = %s AND user_id = %s",
                (room_id, user_id),
            )
            row = txn.fetchone()
            return Membership(*row) if row else None

        return self._db.run_interaction("get_membership", txn_fn)

    def get_room_members(self, room_id: str) -> "defer.Deferred[list[Membership]]":
        """Every membership row of a room, in stream order."""

        def txn_fn(txn: Any) -> list[Membership]:
            txn.execute(
                f"SELECT {_MEMBERSHIP_COLUMNS} FROM room_memberships WHERE room_id = %s ORDER BY stream_position",
                (room_id,),
            )
            return [Membership(*r) for r in txn.fetchall()]

        return self._db.run_interaction("get_room_members", txn_fn)

    def get_stream_rows(self, shard: int, after: int, upto: Optional[int], limit: int) -> "defer.Deferred[list[StreamRow]]":
        """Events of one shard with ``after < position <= upto`` (no upper bound if None), in order."""

        def txn_fn(txn: Any) -> list[StreamRow]:
            if upto is None:
                txn.execute(
                    f"SELECT {_STREAM_COLUMNS} FROM events WHERE stream_shard = %s AND stream_position > %s"
                    " ORDER BY stream_position LIMIT %s",
                    (shard, after, limit),
                )
            else:
                txn.execute(
                    f"SELECT {_STREAM_COLUMNS} FROM events WHERE stream_shard = %s AND stream_position > %s"
                    " AND stream_position <= %s ORDER BY stream_position LIMIT %s",
                    (shard, after, upto, limit),
                )
            return [StreamRow(*r) for r in txn.fetchall()]

        return self._db.run_interaction("get_stream_rows", txn_fn)

    def get_max_positions(self, shards: Iterable[int]) -> "defer.Deferred[dict[int, int]]":
        """The highest committed event position of each shard (0 when empty)."""
        wanted = sorted(set(shards))

        def txn_fn(txn: Any) -> dict[int, int]:
            out = {s: 0 for s in wanted}
            txn.execute(
                "SELECT stream_shard, MAX(stream_position) FROM events WHERE stream_shard = ANY(%s) GROUP BY stream_shard",
                (wanted,),
            )
            for s, p in txn.fetchall():
                out[s] = p
            return out

        return self._db.run_interaction("get_max_event_positions", txn_fn)

    def get_changed_rooms(self, shard: int, after: int, upto: int, room_ids: Sequence[str]) -> "defer.Deferred[set[str]]":
        """Which of ``room_ids`` (all on ``shard``) have events with ``after < position <= upto``."""
        rooms = list(room_ids)

        def txn_fn(txn: Any) -> set[str]:
            if not rooms:
                return set()
            txn.execute(
                "SELECT DISTINCT room_id FROM events WHERE room_id = ANY(%s) AND stream_shard = %s"
                " AND stream_position > %s AND stream_position <= %s",
                (rooms, shard, after, upto),
            )
            return {r[0] for r in txn.fetchall()}

        return self._db.run_interaction("get_changed_rooms", txn_fn)

    def get_room_events_in_range(
        self, room_id: str, after: int, upto: int, limit: int
    ) -> "defer.Deferred[tuple[list[StoredEvent], bool]]":
        """The last ``limit`` events of a room with ``after < position <= upto``, oldest first, and whether more exist."""

        def txn_fn(txn: Any) -> tuple[list[StoredEvent], bool]:
            txn.execute_prepared("events_room_range", _ROOM_RANGE_SQL, (room_id, after, upto, limit + 1))
            rows = [StoredEvent(*r) for r in txn.fetchall()]
            more = len(rows) > limit
            return list(reversed(rows[:limit])), more

        return self._db.run_interaction("get_room_events_in_range", txn_fn)

    def get_sync_timelines(
        self, ranges: Sequence[tuple[str, int, int]], limit: int, user_id: str
    ) -> "defer.Deferred[dict[str, SyncTimeline]]":
        """What an incremental /sync needs of each changed room, ``(room_id, after, upto)``
        each, in one database interaction.

        Per room: the events and ``more`` flag of :meth:`get_room_events_in_range`;
        the state before the first of them as :meth:`get_state_at_position`
        (None without events); and the rows of the membership events, in that
        state, of the events' senders and of ``user_id`` (the members a
        lazy-loading client is sent). One trip through the connection pool for
        every room of a response, instead of three per room.
        """

        def txn_fn(txn: Any) -> dict[str, SyncTimeline]:
            return {room_id: _sync_timeline_txn(txn, room_id, after, upto, limit, user_id, self.state_cache)
                    for room_id, after, upto in ranges}

        return self._db.run_interaction("get_sync_timelines", txn_fn)

    def paginate(
        self,
        room_id: str,
        depth: int,
        position: int,
        backwards: bool,
        limit: int,
        *,
        types: Optional[Sequence[str]] = None,
        not_types: Sequence[str] = (),
        senders: Optional[Sequence[str]] = None,
        not_senders: Sequence[str] = (),
        end: Optional[tuple[int, int]] = None,
    ) -> "defer.Deferred[tuple[list[StoredEvent], bool]]":
        """Events of a room in topological order from a ``(depth, position)`` point.

        Backwards returns events strictly before the point, newest first;
        forwards events strictly after it, oldest first. ``end`` bounds the
        other side (exclusive of events past it). Type and sender filters
        accept ``*`` wildcards at the end of a type. Returns the events and
        whether the scan stopped because of ``limit``.
        """

        def txn_fn(txn: Any) -> tuple[list[StoredEvent], bool]:
            where = ["room_id = %s"]
            args: list[Any] = [room_id]
            if backwards:
                where.append("(depth, stream_position) < (%s, %s)")
            else:
                where.append("(depth, stream_position) > (%s, %s)")
            args += [depth, position]
            if end is not None:
                where.append("(depth, stream_position) >= (%s, %s)" if backwards else "(depth, stream_position) <= (%s, %s)")
                args += list(end)
            if types is not None:
                clauses = []
                for t in types:
                    clauses.append("type LIKE %s" if t.endswith("*") else "type = %s")
                    args.append(_like(t) if t.endswith("*") else t)
                where.append("(" + (" OR ".join(clauses) or "FALSE") + ")")
            for t in not_types:
                where.append("type NOT LIKE %s" if t.endswith("*") else "type <> %s")
                args.append(_like(t) if t.endswith("*") else t)
            if senders is not None:
                where.append("sender = ANY(%s)")
                args.append(list(senders))
            if not_senders:
                where.append("NOT (sender = ANY(%s))")
                args.append(list(not_senders))
            order = "DESC" if backwards else "ASC"
            txn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)}"
                f" ORDER BY depth {order}, stream_position {order} LIMIT %s",
                args + [limit + 1],
            )
            rows = [StoredEvent(*r) for r in txn.fetchall()]
            return rows[:limit], len(rows) > limit

        return self._db.run_interaction("paginate_room", txn_fn)

    def get_visibility_history(
        self, room_id: str, user_id: str
    ) -> "defer.Deferred[tuple[list[tuple[int, str]], list[tuple[int, str]]]]":
        """``(memberships, visibilities)``: the user's membership changes and the room's
        history visibility changes as ``(position, value)``, in room order."""

        def txn_fn(txn: Any) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
            txn.execute(
                "SELECT stream_position, membership FROM events WHERE room_id = %s AND type = 'm.room.member'"
                " AND state_key = %s AND NOT rejected ORDER BY stream_position",
                (room_id, user_id),
            )
            memberships = [(p, m or "leave") for p, m in txn.fetchall()]
            txn.execute(
                "SELECT stream_position, json FROM events WHERE room_id = %s AND type = 'm.room.history_visibility'"
                " AND state_key = '' AND NOT rejected ORDER BY stream_position",
                (room_id,),
            )
            visibilities = []
            for p, raw in txn.fetchall():
                value = json.loads(raw).get("content", {}).get("history_visibility")
                visibilities.append((p, value if isinstance(value, str) else "shared"))
            return memberships, visibilities

        return self._db.run_interaction("get_visibility_history", txn_fn)

    def get_txn_ids_for_events(self, room_id: str, user_id: str, device_id: str, event_ids: Sequence[str]) -> "defer.Deferred[dict[str, str]]":
        """``event_id -> txn_id`` for events this device sent with a transaction ID."""
        ids = list(event_ids)

        def txn_fn(txn: Any) -> dict[str, str]:
            if not ids:
                return {}
            txn.execute(
                "SELECT event_id, txn_id FROM event_txn_ids WHERE user_id = %s AND device_id = %s"
                " AND room_id = %s AND event_id = ANY(%s)",
                (user_id, device_id, room_id, ids),
            )
            return dict(txn.fetchall())

        return self._db.run_interaction("get_txn_ids_for_events", txn_fn)

    def get_room_edges(self, room_id: str) -> "defer.Deferred[Optional[tuple[tuple[int, int], tuple[int, int]]]]":
        """The topological (depth, position) of a room's first and last events, or None if empty."""

        def txn_fn(txn: Any) -> Optional[tuple[tuple[int, int], tuple[int, int]]]:
            txn.execute(
                "SELECT depth, stream_position FROM events WHERE room_id = %s ORDER BY depth, stream_position LIMIT 1",
                (room_id,),
            )
            first = txn.fetchone()
            if first is None:
                return None
            txn.execute(
                "SELECT depth, stream_position FROM events WHERE room_id = %s ORDER BY depth DESC, stream_position DESC LIMIT 1",
                (room_id,),
            )
            last = txn.fetchone()
            return (tuple(first), tuple(last))  # type: ignore[return-value]

        return self._db.run_interaction("get_room_edges", txn_fn)


def insert_event_row_txn(txn: Any, room_id: str, event: Event, pdu_json: str, shard: int, position: int,
                         group: Optional[int]) -> Optional[str]:
    """Insert ``event``'s row into ``events``: the one place every write path
    (local, received, backfilled) stores an event. Returns its membership
    (``None`` for other event types)."""
    membership = event.membership if event.type == "m.room.member" else None
    txn.execute(
        "INSERT INTO events (room_id, event_id, stream_shard, stream_position, depth, type, state_key,"
        " sender, membership, origin_server_ts, json, state_group)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (room_id, event.event_id, shard, position, event.depth, event.type, event.state_key, event.sender,
         membership, event.origin_server_ts, pdu_json, group),
    )
    return membership


def _outlier_row(room_id: str, event_id: str, raw: str) -> StoredEvent:
    """A ``federation_outliers`` row as a :class:`StoredEvent` with no stream place (shard -1)."""
    pdu = json.loads(raw)
    content = pdu.get("content") if isinstance(pdu.get("content"), dict) else {}
    membership = content.get("membership") if pdu.get("type") == "m.room.member" else None
    return StoredEvent(
        room_id=room_id, event_id=event_id, stream_shard=-1, stream_position=0, depth=int(pdu.get("depth", 0)),
        type=pdu.get("type", ""), state_key=pdu.get("state_key"), sender=pdu.get("sender", ""),
        membership=membership if isinstance(membership, str) else None,
        origin_server_ts=int(pdu.get("origin_server_ts", 0)), json=raw, rejected=False, redacted_by=None, state_group=-1,
    )


def _like(pattern: str) -> str:
    """A filter type with a trailing ``*`` as a LIKE pattern (other wildcards escaped)."""
    body = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return body + "%"


class StateGroupCache:
    """The resolved state of recently read state groups, least recently used out.

    A state group never changes once written (new state makes a new group,
    numbered from a sequence, so a number is never reused even when its
    transaction rolls back), so entries never go stale and need no
    invalidation. Bounded by the total number of state entries held, not of
    groups, since one group of a large room holds as many entries as it has
    members. Used from the database threads: every operation takes the lock.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._size = 0
        self._groups: "collections.OrderedDict[tuple[str, int], dict[StateKey, str]]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, room_id: str, group: int) -> Optional[dict[StateKey, str]]:
        """A copy of the group's state, or None if not held."""
        with self._lock:
            state = self._groups.get((room_id, group))
            if state is None:
                self.misses += 1
                return None
            self._groups.move_to_end((room_id, group))
            self.hits += 1
            return dict(state)

    def put(self, room_id: str, group: int, state: Mapping[StateKey, str]) -> None:
        """Remember a group's state (a copy), evicting the least recently used past the bound."""
        if len(state) > self._max:
            return
        with self._lock:
            old = self._groups.pop((room_id, group), None)
            if old is not None:
                self._size -= len(old)
            self._groups[(room_id, group)] = dict(state)
            self._size += len(state)
            while self._size > self._max:
                _, evicted = self._groups.popitem(last=False)
                self._size -= len(evicted)


def _state_for_group_txn(txn: Any, room_id: str, group: int, cache: Optional[StateGroupCache] = None) -> dict[StateKey, str]:
    """Resolve a delta chain: the nearest group in the chain wins for each key."""
    if cache is not None:
        held = cache.get(room_id, group)
        if held is not None:
            return held
    txn.execute(
        "WITH RECURSIVE chain(state_group, prev_group, n) AS ("
        " SELECT state_group, prev_group, 0 FROM state_groups WHERE room_id = %s AND state_group = %s"
        " UNION ALL SELECT g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c"
        " ON g.room_id = %s AND g.state_group = c.prev_group)"
        " SELECT DISTINCT ON (s.type, s.state_key) s.type, s.state_key, s.event_id"
        " FROM chain c JOIN state_group_state s ON s.room_id = %s AND s.state_group = c.state_group"
        " ORDER BY s.type, s.state_key, c.n",
        (room_id, group, room_id, room_id),
    )
    state = {(t, k): e for t, k, e in txn.fetchall()}
    if cache is not None:
        cache.put(room_id, group, state)
    return state



def _sync_timeline_txn(txn: Any, room_id: str, after: int, upto: int, limit: int, user_id: str,
                       cache: Optional[StateGroupCache] = None) -> SyncTimeline:
    txn.execute_prepared("events_room_range", _ROOM_RANGE_SQL, (room_id, after, upto, limit + 1))
    newest = [StoredEvent(*r) for r in txn.fetchall()]
    more = len(newest) > limit
    rows = list(reversed(newest[:limit]))
    if not rows:
        return rows, more, None, {}
    txn.execute_prepared("events_state_group_at", _STATE_GROUP_AT_SQL, (room_id, rows[0].stream_position - 1))
    row = txn.fetchone()
    if row is None:
        return rows, more, None, {}
    state = _state_for_group_txn(txn, room_id, row[0], cache)
    senders = {r.sender for r in rows} | {user_id}
    member_ids = [state[("m.room.member", u)] for u in sorted(senders) if ("m.room.member", u) in state]
    members: dict[str, StoredEvent] = {}
    if member_ids:
        txn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE room_id = %s AND event_id = ANY(%s)", (room_id, member_ids)
        )
        members = {r[1]: StoredEvent(*r) for r in txn.fetchall()}
    return rows, more, (row[0], state), members
