"""Read models of the Synapse-compatible admin API: users and rooms as an
operator sees them, with filtering, ordering and offset pagination.

Every write an admin makes goes through the stores and handlers the normal
client paths use (passwords, devices, deactivation, profiles, memberships),
so this module only reads, except for the two columns no other path writes
(``users.user_type`` and reactivation of a deactivated account).

Sort columns come from fixed tables here (never from the request), and all
values are bound parameters.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import attrs
from twisted.internet import defer


def like_pattern(fragment: str) -> str:
    """``%fragment%`` for ILIKE, with the wildcards of ``fragment`` escaped."""
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@attrs.frozen
class AdminUserRow:
    """A user with the profile and activity columns the admin API shows."""

    user_id: str
    created_ts: int
    is_admin: bool
    is_guest: bool
    user_type: Optional[str]
    deactivated: bool
    erased: bool
    displayname: Optional[str]
    avatar_url: Optional[str]
    last_seen_ts: Optional[int]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "AdminUserRow":
        """From a row selected as ``_USER_SELECT``."""
        return cls(*row)


_USER_SELECT = (
    "SELECT u.user_id, u.created_ts, u.is_admin, u.is_guest, u.user_type, u.deactivated, u.erased,"
    " dn.value #>> '{}' AS displayname, av.value #>> '{}' AS avatar_url,"
    " (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) AS last_seen_ts"
    " FROM users u"
    " LEFT JOIN profile_fields dn ON dn.user_id = u.user_id AND dn.field = 'displayname'"
    " LEFT JOIN profile_fields av ON av.user_id = u.user_id AND av.field = 'avatar_url'"
)
#: The same rows, last-seen computed by one grouped pass over ``devices``: cheaper when
#: every row's value is needed (ordering by it), dearer for one page in another order
#: (where the per-row subquery above runs only for the rows returned).
_USER_SELECT_GROUPED = (
    "SELECT u.user_id, u.created_ts, u.is_admin, u.is_guest, u.user_type, u.deactivated, u.erased,"
    " dn.value #>> '{}' AS displayname, av.value #>> '{}' AS avatar_url, ls.last_seen_ts"
    " FROM users u"
    " LEFT JOIN profile_fields dn ON dn.user_id = u.user_id AND dn.field = 'displayname'"
    " LEFT JOIN profile_fields av ON av.user_id = u.user_id AND av.field = 'avatar_url'"
    " LEFT JOIN (SELECT user_id, MAX(last_seen_ts) AS last_seen_ts FROM devices GROUP BY user_id) ls"
    " ON ls.user_id = u.user_id"
)

#: ``order_by`` of GET /_synapse/admin/v2/users -> column of the ``_USER_SELECT`` subquery.
USER_ORDER_COLUMNS = {
    "name": "user_id",
    "is_guest": "is_guest",
    "admin": "is_admin",
    "user_type": "user_type",
    "deactivated": "deactivated",
    # Nobody is shadow-banned or locked here: ordering by them is ordering by name.
    "shadow_banned": "user_id",
    "locked": "user_id",
    "displayname": "displayname",
    "avatar_url": "avatar_url",
    "creation_ts": "created_ts",
    "last_seen_ts": "last_seen_ts",
}


@attrs.frozen
class AdminDeviceRow:
    """A device with everything the admin API shows about it."""

    device_id: str
    display_name: Optional[str]
    last_seen_ts: Optional[int]
    last_seen_ip: Optional[str]
    last_seen_user_agent: Optional[str]


@attrs.frozen
class AdminRoomRow:
    """A room as the admin room list shows it."""

    room_id: str
    name: Optional[str]
    topic: Optional[str]
    avatar: Optional[str]
    canonical_alias: Optional[str]
    joined_members: int
    joined_local_members: int
    version: str
    creator: str
    encryption: Optional[str]
    federatable: bool
    public: bool
    join_rules: Optional[str]
    guest_access: Optional[str]
    history_visibility: Optional[str]
    state_events: int
    room_type: Optional[str]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "AdminRoomRow":
        """From a row selected as ``_ROOM_SELECT``."""
        return cls(*row)


_ROOM_SELECT = (
    "SELECT r.room_id, s.name, s.topic, s.avatar_url, s.canonical_alias, COALESCE(s.joined_members, 0) AS joined_members,"
    " (SELECT COUNT(*) FROM room_memberships m WHERE m.room_id = r.room_id AND m.membership = 'join'"
    "   AND right(m.user_id, %(suffix_len)s) = %(suffix)s) AS joined_local_members,"
    " r.room_version, r.creator,"
    " (SELECT e.json::jsonb -> 'content' ->> 'algorithm' FROM current_state cs JOIN events e"
    "   ON e.room_id = cs.room_id AND e.event_id = cs.event_id"
    "   WHERE cs.room_id = r.room_id AND cs.type = 'm.room.encryption' AND cs.state_key = '') AS encryption,"
    " COALESCE((SELECT (e.json::jsonb -> 'content' -> 'm.federate') <> 'false'::jsonb FROM current_state cs"
    "   JOIN events e ON e.room_id = cs.room_id AND e.event_id = cs.event_id"
    "   WHERE cs.room_id = r.room_id AND cs.type = 'm.room.create' AND cs.state_key = ''), TRUE) AS federatable,"
    " r.is_public, s.join_rule, s.guest_access, s.history_visibility,"
    " (SELECT COUNT(*) FROM current_state cs WHERE cs.room_id = r.room_id) AS state_events,"
    " s.room_type"
    " FROM rooms r LEFT JOIN room_directory_stats s ON s.room_id = r.room_id"
)

#: ``order_by`` of GET /_synapse/admin/v1/rooms -> column of the ``_ROOM_SELECT`` subquery.
ROOM_ORDER_COLUMNS = {
    "name": "name",
    "canonical_alias": "canonical_alias",
    "joined_members": "joined_members",
    "joined_local_members": "joined_local_members",
    "version": "room_version",
    "creator": "creator",
    "encryption": "encryption",
    "federatable": "federatable",
    "public": "is_public",
    "join_rules": "join_rule",
    "guest_access": "guest_access",
    "history_visibility": "history_visibility",
    "state_events": "state_events",
    # Synapse's deprecated names.
    "alphabetical": "name",
    "size": "joined_members",
}
#: Orders that Synapse sorts largest first when ``dir`` is ``f``.
ROOM_ORDER_DESCENDING = frozenset({"joined_members", "joined_local_members", "state_events", "size"})


class AdminStore:
    """The admin API's queries over users, devices and rooms."""

    def __init__(self, database: Any, server_name: str) -> None:
        self._db = database
        self._suffix = ":" + server_name

    # -- users ------------------------------------------------------------

    def list_users(self, query: Any) -> "defer.Deferred[tuple[list[AdminUserRow], int]]":
        """One page of local users and the number matching the filters.

        ``query`` is a ``homeserver.handlers.admin.UserQuery``.
        """
        if query.order_by not in USER_ORDER_COLUMNS:
            raise ValueError(f"unknown order {query.order_by!r}")
        column = USER_ORDER_COLUMNS[query.order_by]
        direction = "DESC" if query.backwards else "ASC"
        nulls = "NULLS FIRST" if query.backwards else "NULLS LAST"

        def txn_fn(txn: Any) -> tuple[list[AdminUserRow], int]:
            clauses = ["TRUE"]
            args: list[Any] = []
            if not query.guests:
                clauses.append("NOT is_guest")
            if query.deactivated is not None:
                clauses.append("deactivated = %s")
                args.append(query.deactivated)
            if query.admins is not None:
                clauses.append("is_admin = %s")
                args.append(query.admins)
            if query.name is not None:
                # Localpart or display name (Synapse ignores user_id when name is given).
                clauses.append("(split_part(substr(user_id, 2), ':', 1) ILIKE %s OR displayname ILIKE %s)")
                args += [like_pattern(query.name)] * 2
            elif query.user_id is not None:
                clauses.append("user_id ILIKE %s")
                args.append(like_pattern(query.user_id))
            typed = [t for t in query.not_user_types if t]
            if typed:
                clauses.append("(user_type IS NULL OR NOT user_type = ANY(%s))")
                args.append(typed)
            if "" in query.not_user_types:
                clauses.append("user_type IS NOT NULL")
            where = " AND ".join(clauses)
            select = _USER_SELECT_GROUPED if column == "last_seen_ts" else _USER_SELECT
            base = f"FROM ({select}) AS listed WHERE {where}"
            txn.execute(f"SELECT COUNT(*) {base}", args)
            total = txn.fetchone()[0]
            # ``column`` and ``direction`` come from the fixed tables above; ties by name.
            txn.execute(
                f"SELECT * {base} ORDER BY {column} {direction} {nulls}, user_id ASC LIMIT %s OFFSET %s",
                args + [query.limit, query.start],
            )
            return [AdminUserRow.from_row(r) for r in txn.fetchall()], total

        return self._db.run_interaction("admin_list_users", txn_fn)

    def get_user(self, user_id: str) -> "defer.Deferred[Optional[AdminUserRow]]":
        """One user (local or not stored: None)."""

        def txn_fn(txn: Any) -> Optional[AdminUserRow]:
            txn.execute(f"{_USER_SELECT} WHERE u.user_id = %s", (user_id,))
            row = txn.fetchone()
            return AdminUserRow.from_row(row) if row else None

        return self._db.run_interaction("admin_get_user", txn_fn)

    def set_user_type(self, user_id: str, user_type: Optional[str]) -> "defer.Deferred[None]":
        """Set or clear ``users.user_type``."""

        def txn_fn(txn: Any) -> None:
            txn.execute("UPDATE users SET user_type = %s WHERE user_id = %s", (user_type, user_id))

        return self._db.run_interaction("admin_set_user_type", txn_fn)

    def reactivate_user(self, user_id: str) -> "defer.Deferred[None]":
        """Clear the deactivated and erased marks (the password is set separately)."""

        def txn_fn(txn: Any) -> None:
            txn.execute("UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = %s", (user_id,))

        return self._db.run_interaction("admin_reactivate_user", txn_fn)

    def get_devices(self, user_id: str) -> "defer.Deferred[list[AdminDeviceRow]]":
        """Every device of the user with its last-seen columns, by id."""

        def txn_fn(txn: Any) -> list[AdminDeviceRow]:
            txn.execute(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices"
                " WHERE user_id = %s ORDER BY device_id",
                (user_id,),
            )
            return [AdminDeviceRow(*r) for r in txn.fetchall()]

        return self._db.run_interaction("admin_get_devices", txn_fn)

    def joined_rooms(self, user_id: str) -> "defer.Deferred[list[str]]":
        """The rooms the user is joined to, by id."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute(
                "SELECT room_id FROM room_memberships WHERE user_id = %s AND membership = 'join' ORDER BY room_id",
                (user_id,),
            )
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("admin_joined_rooms", txn_fn)

    # -- rooms ------------------------------------------------------------

    def _room_args(self) -> dict[str, Any]:
        return {"suffix": self._suffix, "suffix_len": len(self._suffix)}

    def list_rooms(self, query: Any) -> "defer.Deferred[tuple[list[AdminRoomRow], int]]":
        """One page of rooms and the number matching the search.

        ``query`` is a ``homeserver.handlers.admin.RoomQuery``.
        """
        if query.order_by not in ROOM_ORDER_COLUMNS:
            raise ValueError(f"unknown order {query.order_by!r}")
        column = ROOM_ORDER_COLUMNS[query.order_by]
        descending = (query.order_by in ROOM_ORDER_DESCENDING) != query.backwards
        direction = "DESC" if descending else "ASC"
        nulls = "NULLS FIRST" if descending else "NULLS LAST"

        def txn_fn(txn: Any) -> tuple[list[AdminRoomRow], int]:
            args = self._room_args()
            where = "TRUE"
            if query.search_term is not None:
                # Synapse: part of the name or canonical alias, or the exact room id.
                where = "(name ILIKE %(term)s OR canonical_alias ILIKE %(term)s OR room_id = %(exact)s)"
                args.update(term=like_pattern(query.search_term), exact=query.search_term)
            if query.empty_rooms is not None:
                where += " AND joined_members = 0" if query.empty_rooms else " AND joined_members > 0"
            base = f"FROM ({_ROOM_SELECT}) AS listed WHERE {where}"
            txn.execute(f"SELECT COUNT(*) {base}", args)
            total = txn.fetchone()[0]
            args.update(limit=query.limit, start=query.start)
            # ``column`` and ``direction`` come from the fixed tables above; ties by room id.
            txn.execute(
                f"SELECT * {base} ORDER BY {column} {direction} {nulls}, room_id ASC"
                " LIMIT %(limit)s OFFSET %(start)s",
                args,
            )
            return [AdminRoomRow.from_row(r) for r in txn.fetchall()], total

        return self._db.run_interaction("admin_list_rooms", txn_fn)

    def get_room(self, room_id: str) -> "defer.Deferred[Optional[tuple[AdminRoomRow, int]]]":
        """A room and the number of devices of its joined local members, or None."""

        def txn_fn(txn: Any) -> Optional[tuple[AdminRoomRow, int]]:
            args = self._room_args()
            args["room_id"] = room_id
            txn.execute(f"{_ROOM_SELECT} WHERE r.room_id = %(room_id)s", args)
            row = txn.fetchone()
            if row is None:
                return None
            txn.execute(
                "SELECT COUNT(*) FROM devices d JOIN room_memberships m ON m.user_id = d.user_id"
                " WHERE m.room_id = %s AND m.membership = 'join'",
                (room_id,),
            )
            return AdminRoomRow.from_row(row), txn.fetchone()[0]

        return self._db.run_interaction("admin_get_room", txn_fn)

    def room_members(self, room_id: str) -> "defer.Deferred[list[str]]":
        """The joined members of a room, by id."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute(
                "SELECT user_id FROM room_memberships WHERE room_id = %s AND membership = 'join' ORDER BY user_id",
                (room_id,),
            )
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("admin_room_members", txn_fn)

    # -- event reports ------------------------------------------------------

    def list_event_reports(
        self, start: int, limit: int, backwards: bool, user_id: Optional[str], room_id: Optional[str]
    ) -> "defer.Deferred[tuple[list[dict[str, Any]], int]]":
        """One page of reports of events (newest first when ``backwards``) and how many match.

        ``user_id`` / ``room_id`` keep reports whose reporter / room contains them.
        """
        direction = "DESC" if backwards else "ASC"

        def txn_fn(txn: Any) -> tuple[list[dict[str, Any]], int]:
            clauses = ["rr.event_id IS NOT NULL"]
            args: list[Any] = []
            if user_id is not None:
                clauses.append("rr.reporter ILIKE %s")
                args.append(like_pattern(user_id))
            if room_id is not None:
                clauses.append("rr.room_id ILIKE %s")
                args.append(like_pattern(room_id))
            where = " AND ".join(clauses)
            txn.execute(f"SELECT COUNT(*) FROM room_reports rr WHERE {where}", args)
            total = txn.fetchone()[0]
            # ``direction`` is one of two fixed words.
            txn.execute(
                f"{_REPORT_SELECT} WHERE {where} ORDER BY rr.received_ts {direction}, rr.report_id {direction}"
                " LIMIT %s OFFSET %s",
                args + [limit, start],
            )
            return [_report_json(r) for r in txn.fetchall()], total

        return self._db.run_interaction("admin_list_event_reports", txn_fn)

    def get_event_report(self, report_id: int) -> "defer.Deferred[Optional[dict[str, Any]]]":
        """One report of an event with the reported event's JSON, or None."""

        def txn_fn(txn: Any) -> Optional[dict[str, Any]]:
            txn.execute(
                f"{_REPORT_SELECT} WHERE rr.report_id = %s AND rr.event_id IS NOT NULL", (report_id,)
            )
            row = txn.fetchone()
            if row is None:
                return None
            report = _report_json(row)
            txn.execute("SELECT json FROM events WHERE room_id = %s AND event_id = %s",
                        (report["room_id"], report["event_id"]))
            found = txn.fetchone()
            report["event_json"] = json.loads(found[0]) if found else None
            return report

        return self._db.run_interaction("admin_get_event_report", txn_fn)

    def delete_event_report(self, report_id: int) -> "defer.Deferred[bool]":
        """Delete a report of an event; False if there is none with this id."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("DELETE FROM room_reports WHERE report_id = %s AND event_id IS NOT NULL", (report_id,))
            return txn.rowcount > 0

        return self._db.run_interaction("admin_delete_event_report", txn_fn)


_REPORT_SELECT = (
    "SELECT rr.report_id, rr.received_ts, rr.room_id, rr.event_id, rr.reporter, rr.reason, rr.score,"
    " s.name, s.canonical_alias, e.sender"
    " FROM room_reports rr LEFT JOIN room_directory_stats s ON s.room_id = rr.room_id"
    " LEFT JOIN events e ON e.room_id = rr.room_id AND e.event_id = rr.event_id"
)


def _report_json(row: Sequence[Any]) -> dict[str, Any]:
    report_id, received_ts, room_id, event_id, reporter, reason, score, name, alias, sender = row
    return {
        "id": report_id, "received_ts": received_ts, "room_id": room_id, "event_id": event_id,
        "user_id": reporter, "reason": reason, "score": score, "name": name, "canonical_alias": alias,
        "sender": sender,
    }
