"""Room aliases, the published room directory, the user directory and reports.

Aliases live in ``room_aliases`` (created by part A's schema; createRoom
writes them through ``EventStore.create_alias``); publication is
``rooms.is_public``. The user directory is read straight from memberships
and profiles, so it is always as fresh as they are.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs
from twisted.internet import defer

#: State read for each published room (all with state_key '').
DIRECTORY_STATE_TYPES = (
    "m.room.create", "m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
    "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
)


@attrs.frozen
class AliasRecord:
    """A row of ``room_aliases``."""

    room_alias: str
    room_id: str
    creator: str


@attrs.frozen
class PublishedRoom:
    """A published room with its joined member count and the content of its directory state.

    ``state`` maps an event type of :data:`DIRECTORY_STATE_TYPES` to the
    event's content (``{}`` for a redacted event).
    """

    room_id: str
    joined_members: int
    state: dict[str, dict[str, Any]]


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

    def get_published_rooms(self) -> "defer.Deferred[list[PublishedRoom]]":
        """Every published room, with joined member counts and directory state."""

        def txn_fn(txn: Any) -> list[PublishedRoom]:
            txn.execute(
                "SELECT r.room_id, (SELECT count(*) FROM room_memberships m WHERE m.room_id = r.room_id"
                " AND m.membership = 'join') FROM rooms r WHERE r.is_public"
            )
            counts = {r[0]: r[1] for r in txn.fetchall()}
            if not counts:
                return []
            txn.execute(
                "SELECT cs.room_id, cs.type, e.json, e.redacted_by IS NOT NULL FROM current_state cs"
                " JOIN events e ON e.room_id = cs.room_id AND e.event_id = cs.event_id"
                " WHERE cs.room_id = ANY(%s) AND cs.state_key = '' AND cs.type = ANY(%s)",
                (list(counts), list(DIRECTORY_STATE_TYPES)),
            )
            state: dict[str, dict[str, dict[str, Any]]] = {room_id: {} for room_id in counts}
            for room_id, etype, pdu_json, redacted in txn.fetchall():
                content = {} if redacted else json.loads(pdu_json).get("content", {})
                state[room_id][etype] = content if isinstance(content, dict) else {}
            return [PublishedRoom(room_id, n, state[room_id]) for room_id, n in counts.items()]

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
        """Users sharing a joined room with ``searcher`` or joined to a published room,
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
                " UNION SELECT m.user_id FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id"
                "  WHERE r.is_public AND m.membership = 'join'"
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
