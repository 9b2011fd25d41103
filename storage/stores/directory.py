"""Room aliases, the published room directory, the user directory and reports.

Aliases live in ``room_aliases`` (created by part A's schema; createRoom
writes them through ``EventStore.create_alias``); publication is
``rooms.is_public``. ``room_directory_stats`` holds each room's directory
fields and joined member count, kept by :func:`write_directory_stats_txn`
in the transaction persisting each event, so listing and filtering the
directory is one indexed query. The user directory is read from
memberships, those stats and profiles, so it is as fresh as they are.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
from twisted.internet import defer

#: Directory state (state_key '') -> (room_directory_stats column, content key).
DIRECTORY_STATE = {
    "m.room.create": ("room_type", "type"),
    "m.room.name": ("name", "name"),
    "m.room.topic": ("topic", "topic"),
    "m.room.canonical_alias": ("canonical_alias", "alias"),
    "m.room.avatar": ("avatar_url", "url"),
    "m.room.join_rules": ("join_rule", "join_rule"),
    "m.room.history_visibility": ("history_visibility", "history_visibility"),
    "m.room.guest_access": ("guest_access", "guest_access"),
}
#: Columns whose content key does not survive redaction (the others are kept by every room version).
PRUNED_BY_REDACTION = ("name", "topic", "canonical_alias", "avatar_url", "guest_access")
_STATS_COLUMNS = (
    "room_id, joined_members, name, topic, canonical_alias, avatar_url, join_rule, history_visibility,"
    " guest_access, room_type"
)


def write_directory_stats_txn(txn: Any, event: Any) -> None:
    """Keep ``room_directory_stats`` of the event's room current (inside ``persist_event``'s transaction,
    after the room's current state and memberships were updated)."""
    room_id = event.room_id
    target = DIRECTORY_STATE.get(event.type)
    if target is not None and event.state_key == "":
        column, key = target
        value = event.content.get(key)
        value = value.replace("\x00", "") if isinstance(value, str) else None
        # ``column`` comes from the fixed table above.
        txn.execute(
            f"INSERT INTO room_directory_stats (room_id, {column}) VALUES (%s, %s)"
            f" ON CONFLICT (room_id) DO UPDATE SET {column} = EXCLUDED.{column}",
            (room_id, value),
        )
    elif event.type == "m.room.member":
        txn.execute(
            "INSERT INTO room_directory_stats (room_id, joined_members) SELECT %s, count(*) FROM room_memberships"
            " WHERE room_id = %s AND membership = 'join'"
            " ON CONFLICT (room_id) DO UPDATE SET joined_members = EXCLUDED.joined_members",
            (room_id, room_id),
        )
    if event.redacts is not None:
        txn.execute(
            "SELECT type FROM current_state WHERE room_id = %s AND event_id = %s AND state_key = ''",
            (room_id, event.redacts),
        )
        row = txn.fetchone()
        column = DIRECTORY_STATE[row[0]][0] if row and row[0] in DIRECTORY_STATE else None
        if column in PRUNED_BY_REDACTION:
            txn.execute(f"UPDATE room_directory_stats SET {column} = NULL WHERE room_id = %s", (room_id,))


@attrs.frozen
class AliasRecord:
    """A row of ``room_aliases``."""

    room_alias: str
    room_id: str
    creator: str


@attrs.frozen
class PublishedRoom:
    """A row of ``room_directory_stats``: a room's directory fields (None when unset)."""

    room_id: str
    joined_members: int
    name: Optional[str] = None
    topic: Optional[str] = None
    canonical_alias: Optional[str] = None
    avatar_url: Optional[str] = None
    join_rule: Optional[str] = None
    history_visibility: Optional[str] = None
    guest_access: Optional[str] = None
    room_type: Optional[str] = None


@attrs.frozen
class DirectoryUser:
    """A user directory result."""

    user_id: str
    display_name: Optional[str]
    avatar_url: Optional[str]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DirectoryStore:
    """Aliases, publication, user directory and reports in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    # -- aliases -----------------------------------------------------------------

    def get_alias_record(self, alias: str) -> "defer.Deferred[Optional[AliasRecord]]":
        """The mapping of ``alias``, or None."""

        def txn_fn(txn: Any) -> Optional[AliasRecord]:
            txn.execute("SELECT room_alias, room_id, creator FROM room_aliases WHERE room_alias = %s", (alias,))
            row = txn.fetchone()
            return AliasRecord(*row) if row else None

        return self._db.run_interaction("get_alias_record", txn_fn)

    def get_aliases_for_room(self, room_id: str) -> "defer.Deferred[list[str]]":
        """The local aliases of a room, sorted."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT room_alias FROM room_aliases WHERE room_id = %s ORDER BY room_alias", (room_id,))
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("get_aliases_for_room", txn_fn)

    def delete_alias(self, alias: str, room_id: str) -> "defer.Deferred[bool]":
        """Remove ``alias`` if it still maps to ``room_id``; whether a row went."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("DELETE FROM room_aliases WHERE room_alias = %s AND room_id = %s", (alias, room_id))
            return txn.rowcount == 1

        return self._db.run_interaction("delete_alias_checked", txn_fn)

    # -- published rooms -------------------------------------------------------------

    def set_room_public(self, room_id: str, public: bool) -> "defer.Deferred[bool]":
        """Publish or unpublish a room; False if the room is unknown."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("UPDATE rooms SET is_public = %s WHERE room_id = %s", (public, room_id))
            return txn.rowcount == 1

        return self._db.run_interaction("set_room_public", txn_fn)

    def get_published_rooms(
        self, term: Optional[str], room_types: Optional[Sequence[Optional[str]]], offset: int, limit: int
    ) -> "defer.Deferred[tuple[list[PublishedRoom], int]]":
        """A page of published rooms, largest first, and how many match in all.

        ``term`` matches name, topic, canonical alias or room ID
        (case-insensitive substring); ``room_types`` keeps rooms of those
        types (None in it: rooms without a type).
        """

        def txn_fn(txn: Any) -> tuple[list[PublishedRoom], int]:
            where, args = ["r.is_public"], []
            if term:
                pattern = "%" + _like_escape(term) + "%"
                where.append("(s.name ILIKE %s OR s.topic ILIKE %s OR s.canonical_alias ILIKE %s OR s.room_id ILIKE %s)")
                args.extend([pattern] * 4)
            if room_types is not None:
                named = [t for t in room_types if t is not None]
                where.append("(s.room_type = ANY(%s)" + (" OR s.room_type IS NULL)" if None in room_types else ")"))
                args.append(named)
            base = " FROM rooms r JOIN room_directory_stats s ON s.room_id = r.room_id WHERE " + " AND ".join(where)
            columns = ", ".join("s." + c.strip() for c in _STATS_COLUMNS.split(","))
            txn.execute(
                f"SELECT {columns}{base} ORDER BY s.joined_members DESC, s.room_id OFFSET %s LIMIT %s",
                args + [offset, limit],
            )
            rooms = [PublishedRoom(*r) for r in txn.fetchall()]
            txn.execute("SELECT count(*)" + base, args)
            return rooms, txn.fetchone()[0]

        return self._db.run_interaction("get_published_rooms", txn_fn)

    def is_room_public(self, room_id: str) -> "defer.Deferred[Optional[bool]]":
        """Whether a room is published; None if unknown."""

        def txn_fn(txn: Any) -> Optional[bool]:
            txn.execute("SELECT is_public FROM rooms WHERE room_id = %s", (room_id,))
            row = txn.fetchone()
            return bool(row[0]) if row else None

        return self._db.run_interaction("is_room_public", txn_fn)

    # -- user directory --------------------------------------------------------------

    def search_users(self, searcher: str, term: str, limit: int) -> "defer.Deferred[tuple[list[DirectoryUser], bool]]":
        """Users sharing a joined room with ``searcher`` or joined to a public room (public join
        rule or world-readable history),
        whose user ID or display name contains ``term`` (case-insensitive); more?

        Results whose display name or ID starts with the term come first.
        """

        def txn_fn(txn: Any) -> tuple[list[DirectoryUser], bool]:
            pattern = "%" + _like_escape(term) + "%"
            prefix = _like_escape(term) + "%"
            txn.execute(
                "WITH visible AS ("
                " SELECT m2.user_id FROM room_memberships m1 JOIN room_memberships m2 ON m2.room_id = m1.room_id"
                "  WHERE m1.user_id = %s AND m1.membership = 'join' AND m2.membership = 'join'"
                " UNION SELECT m.user_id FROM room_memberships m JOIN room_directory_stats s ON s.room_id = m.room_id"
                "  WHERE (s.join_rule = 'public' OR s.history_visibility = 'world_readable') AND m.membership = 'join'"
                "), profiles AS ("
                " SELECT v.user_id, dn.value #>> '{}' AS display_name, av.value #>> '{}' AS avatar_url FROM visible v"
                " LEFT JOIN profile_fields dn ON dn.user_id = v.user_id AND dn.field = 'displayname'"
                "  AND jsonb_typeof(dn.value) = 'string'"
                " LEFT JOIN profile_fields av ON av.user_id = v.user_id AND av.field = 'avatar_url'"
                "  AND jsonb_typeof(av.value) = 'string'"
                ") SELECT user_id, display_name, avatar_url FROM profiles p"
                " WHERE (user_id ILIKE %s OR display_name ILIKE %s)"
                " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = p.user_id AND u.deactivated)"
                " ORDER BY (display_name ILIKE %s OR substr(user_id, 2) ILIKE %s) DESC, display_name IS NULL,"
                " lower(display_name), user_id LIMIT %s",
                (searcher, pattern, pattern, prefix, prefix, limit + 1),
            )
            rows = [DirectoryUser(*r) for r in txn.fetchall()]
            return rows[:limit], len(rows) > limit

        return self._db.run_interaction("search_user_directory", txn_fn)

    # -- reports -------------------------------------------------------------------

    def user_exists(self, user_id: str) -> "defer.Deferred[bool]":
        """Whether ``user_id`` is registered here."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
            return txn.fetchone() is not None

        return self._db.run_interaction("user_exists", txn_fn)

    def add_room_report(self, room_id: str, event_id: Optional[str], reporter: str, reason: Optional[str],
                        score: Optional[int], now_ms: int) -> "defer.Deferred[int]":
        """Store a report of a room or of one of its events; returns its ID."""

        def txn_fn(txn: Any) -> int:
            txn.execute(
                "INSERT INTO room_reports (room_id, event_id, reporter, reason, score, received_ts)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING report_id",
                (room_id, event_id, reporter, reason, score, now_ms),
            )
            return txn.fetchone()[0]

        return self._db.run_interaction("add_room_report", txn_fn)

    def add_user_report(self, user_id: str, reporter: str, reason: str, now_ms: int) -> "defer.Deferred[int]":
        """Store a report of a user; returns its ID."""

        def txn_fn(txn: Any) -> int:
            txn.execute(
                "INSERT INTO user_reports (user_id, reporter, reason, received_ts) VALUES (%s, %s, %s, %s)"
                " RETURNING report_id",
                (user_id, reporter, reason, now_ms),
            )
            return txn.fetchone()[0]

        return self._db.run_interaction("add_user_report", txn_fn)

    def get_room_reports(self, room_id: str) -> "defer.Deferred[list[tuple[Any, ...]]]":
        """Reports of a room, oldest first: ``(report_id, event_id, reporter, reason, score, received_ts)``."""

        def txn_fn(txn: Any) -> list[tuple[Any, ...]]:
            txn.execute(
                "SELECT report_id, event_id, reporter, reason, score, received_ts FROM room_reports"
                " WHERE room_id = %s ORDER BY report_id",
                (room_id,),
            )
            return [tuple(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_room_reports", txn_fn)

    def get_user_reports(self, user_id: str) -> "defer.Deferred[list[tuple[Any, ...]]]":
        """Reports of a user, oldest first: ``(report_id, reporter, reason, received_ts)``."""

        def txn_fn(txn: Any) -> list[tuple[Any, ...]]:
            txn.execute(
                "SELECT report_id, reporter, reason, received_ts FROM user_reports WHERE user_id = %s ORDER BY report_id",
                (user_id,),
            )
            return [tuple(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_user_reports", txn_fn)
