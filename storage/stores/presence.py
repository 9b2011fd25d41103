"""Presence rows: one per user, at the position of their last announced change."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import attrs
from twisted.internet import defer

from homeserver.core.presence import UserPresence

_COLUMNS = "user_id, state, status_msg, last_active_ts, last_seen_ts, stream_shard, stream_position"


@attrs.frozen
class PresenceRow:
    """A stored presence and where it sits on the ``presence`` stream (also the bus payload)."""

    stream_shard: int
    stream_position: int
    presence: UserPresence

    def to_payload(self) -> dict[str, Any]:
        """What goes on the bus (everything: presence rows are small)."""
        p = self.presence
        return {"user_id": p.user_id, "state": p.state, "status_msg": p.status_msg,
                "last_active_ts": p.last_active_ts, "last_seen_ts": p.last_seen_ts}

    @classmethod
    def from_payload(cls, shard: int, position: int, payload: Mapping[str, Any]) -> "PresenceRow":
        """The row a bus entry carries."""
        return cls(shard, position, UserPresence(
            str(payload["user_id"]), str(payload["state"]), payload.get("status_msg"),
            int(payload.get("last_active_ts") or 0), int(payload.get("last_seen_ts") or 0),
        ))

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> "PresenceRow":
        """A row read with :data:`_COLUMNS`."""
        return cls(row[5], row[6], UserPresence(row[0], row[1], row[2], row[3], row[4]))


class PresenceStore:
    """The ``presence_state`` table."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def upsert(self, allocator: Any, presence: UserPresence,
               on_row: Optional[Callable[[PresenceRow], None]] = None) -> "defer.Deferred[PresenceRow]":
        """Store ``presence`` at a new position of the allocator's shard."""

        def txn_fn(txn: Any) -> PresenceRow:
            position = allocator.allocate(txn)
            p = presence
            txn.execute(
                f"INSERT INTO presence_state ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state, status_msg = EXCLUDED.status_msg,"
                " last_active_ts = EXCLUDED.last_active_ts, last_seen_ts = EXCLUDED.last_seen_ts,"
                " stream_shard = EXCLUDED.stream_shard, stream_position = EXCLUDED.stream_position",
                (p.user_id, p.state, p.status_msg, p.last_active_ts, p.last_seen_ts, allocator.shard, position),
            )
            row = PresenceRow(allocator.shard, position, presence)
            if on_row is not None:
                on_row(row)
            return row

        return self._db.run_interaction("upsert_presence", txn_fn)

    def get_presence(self, user_ids: Iterable[str]) -> "defer.Deferred[dict[str, PresenceRow]]":
        """The stored presence of the given users (absent: never set)."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return defer.succeed({})

        def txn_fn(txn: Any) -> dict[str, PresenceRow]:
            txn.execute(f"SELECT {_COLUMNS} FROM presence_state WHERE user_id = ANY(%s)", (ids,))
            return {r[0]: PresenceRow.from_db(r) for r in txn.fetchall()}

        return self._db.run_interaction("get_presence", txn_fn)

    def get_not_offline(self, shard: int) -> "defer.Deferred[list[PresenceRow]]":
        """Users of a shard who are online or unavailable (the writer times them out)."""

        def txn_fn(txn: Any) -> list[PresenceRow]:
            txn.execute(f"SELECT {_COLUMNS} FROM presence_state WHERE stream_shard = %s AND state <> 'offline'", (shard,))
            return [PresenceRow.from_db(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_presence_not_offline", txn_fn)

    def get_rows(self, shard: int, after: int, upto: int, limit: int) -> "defer.Deferred[list[PresenceRow]]":
        """Presence rows of a shard with ``after < position <= upto`` in order (tail catch-up, incremental sync)."""

        def txn_fn(txn: Any) -> list[PresenceRow]:
            txn.execute(
                f"SELECT {_COLUMNS} FROM presence_state WHERE stream_shard = %s AND stream_position > %s"
                " AND stream_position <= %s ORDER BY stream_position LIMIT %s",
                (shard, after, upto, limit),
            )
            return [PresenceRow.from_db(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_presence_rows", txn_fn)

    def get_max_positions(self, shards: Iterable[int]) -> "defer.Deferred[dict[int, int]]":
        """The highest presence position stored per shard (0 when none)."""
        wanted = list(shards)

        def txn_fn(txn: Any) -> dict[int, int]:
            txn.execute(
                "SELECT stream_shard, MAX(stream_position) FROM presence_state WHERE stream_shard = ANY(%s)"
                " GROUP BY stream_shard", (wanted,),
            )
            found = dict(txn.fetchall())
            return {s: int(found.get(s) or 0) for s in wanted}

        return self._db.run_interaction("get_presence_max_positions", txn_fn)

    def shares_room(self, user_id: str, other: str) -> "defer.Deferred[bool]":
        """Whether two users are both joined to some room."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "SELECT 1 FROM room_memberships a JOIN room_memberships b ON a.room_id = b.room_id"
                " WHERE a.user_id = %s AND a.membership = 'join' AND b.user_id = %s AND b.membership = 'join' LIMIT 1",
                (user_id, other),
            )
            return txn.fetchone() is not None

        return self._db.run_interaction("presence_shares_room", txn_fn)

    def get_room_mates(self, user_id: str) -> "defer.Deferred[set[str]]":
        """The user and everyone joined to a room the user is joined to (whose presence they receive)."""

        def txn_fn(txn: Any) -> set[str]:
            txn.execute(
                "SELECT DISTINCT b.user_id FROM room_memberships a JOIN room_memberships b ON a.room_id = b.room_id"
                " WHERE a.user_id = %s AND a.membership = 'join' AND b.membership = 'join'",
                (user_id,),
            )
            return {r[0] for r in txn.fetchall()} | {user_id}

        return self._db.run_interaction("get_presence_room_mates", txn_fn)

    def get_joined_rooms(self, user_id: str) -> "defer.Deferred[list[str]]":
        """The rooms the user is joined to (whose members hear of their presence)."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT room_id FROM room_memberships WHERE user_id = %s AND membership = 'join'", (user_id,))
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("get_presence_joined_rooms", txn_fn)

    def get_servers_sharing_rooms(self, user_id: str) -> "defer.Deferred[set[str]]":
        """The servers with a member joined to a room that ``user_id`` is joined to."""

        def txn_fn(txn: Any) -> set[str]:
            txn.execute(
                "SELECT DISTINCT substring(mate.user_id from position(':' in mate.user_id) + 1)"
                " FROM room_memberships AS mine JOIN room_memberships AS mate ON mate.room_id = mine.room_id"
                " WHERE mine.user_id = %s AND mine.membership = 'join' AND mate.membership = 'join'",
                (user_id,),
            )
            return {r[0] for r in txn.fetchall() if r[0]}

        return self._db.run_interaction("get_presence_servers_sharing_rooms", txn_fn)

    def is_joined_anywhere(self, user_id: str) -> "defer.Deferred[bool]":
        """Whether ``user_id`` is joined to any room this server knows."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("SELECT 1 FROM room_memberships WHERE user_id = %s AND membership = 'join' LIMIT 1", (user_id,))
            return txn.fetchone() is not None

        return self._db.run_interaction("get_presence_is_joined_anywhere", txn_fn)
