"""Reads over rooms that are not part of the event write path: events by timestamp.

One named transaction per method; every query filters on ``room_id``
(DESIGN.md §6). Rows are the event store's :class:`StoredEvent`.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer

from storage.stores.events import _EVENT_COLUMNS, StoredEvent


class RoomLookupStore:
    """Timestamp lookups over ``events``."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def get_events_by_timestamp(
        self, room_id: str, ts: int, forwards: bool, limit: int, after: Optional[tuple[int, int]] = None
    ) -> "defer.Deferred[list[StoredEvent]]":
        """Up to ``limit`` non-rejected events of a room nearest to ``ts`` in one direction.

        Forwards: events with ``origin_server_ts >= ts`` in ascending
        ``(origin_server_ts, stream_position)``; backwards: ``<= ts`` in
        descending order. ``after`` is the ``(origin_server_ts,
        stream_position)`` of the last row of a previous batch: the scan
        resumes strictly past it.
        """

        def txn_fn(txn: Any) -> list[StoredEvent]:
            op, order = (">=", "ASC") if forwards else ("<=", "DESC")
            where = ["room_id = %s", f"origin_server_ts {op} %s", "NOT rejected"]
            args: list[Any] = [room_id, ts]
            if after is not None:
                where.append("(origin_server_ts, stream_position) " + (">" if forwards else "<") + " (%s, %s)")
                args += list(after)
            txn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)}"
                f" ORDER BY origin_server_ts {order}, stream_position {order} LIMIT %s",
                args + [limit],
            )
            return [StoredEvent(*r) for r in txn.fetchall()]

        return self._db.run_interaction("get_events_by_timestamp", txn_fn)
