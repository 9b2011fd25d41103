"""Read receipts on the ``receipts`` stream (sharded by room).

One row per (room, receipt type, user, thread): a new receipt replaces the
old one and takes a new position from the room's receipts shard allocator,
inside the same transaction, so "receipts changed since P" is a range scan.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Optional, Sequence

import attrs
from twisted.internet import defer


@attrs.frozen
class ReceiptRow:
    """One receipt and its position on the receipts stream."""

    stream_shard: int
    stream_position: int
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    data: str

    def to_payload(self) -> dict[str, Any]:
        """The bus payload."""
        return {"room_id": self.room_id, "receipt_type": self.receipt_type, "user_id": self.user_id,
                "thread_id": self.thread_id, "event_id": self.event_id, "data": json.loads(self.data)}

    @classmethod
    def from_payload(cls, shard: int, position: int, payload: Any) -> "ReceiptRow":
        """Decode a bus payload (``ValueError`` if malformed)."""
        try:
            return cls(shard, position, str(payload["room_id"]), str(payload["receipt_type"]), str(payload["user_id"]),
                       str(payload.get("thread_id", "")), str(payload["event_id"]), json.dumps(payload.get("data", {})))
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad receipt payload: {e}") from None


_COLUMNS = "stream_shard, stream_position, room_id, receipt_type, user_id, thread_id, event_id, data"


class ReceiptStore:
    """``receipts`` in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def insert_receipt(
        self,
        allocator: Any,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str,
        event_id: str,
        data: dict,
        on_row: Optional[Callable[[ReceiptRow], None]] = None,
    ) -> "defer.Deferred[ReceiptRow]":
        """Store a receipt (replacing the previous one of that type and thread) at a new position."""

        def txn_fn(txn: Any) -> ReceiptRow:
            position = allocator.allocate(txn)
            row = ReceiptRow(allocator.shard, position, room_id, receipt_type, user_id, thread_id, event_id, json.dumps(data))
            txn.execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, data, stream_shard, stream_position)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE"
                " SET event_id = EXCLUDED.event_id, data = EXCLUDED.data, stream_shard = EXCLUDED.stream_shard,"
                " stream_position = EXCLUDED.stream_position",
                (room_id, receipt_type, user_id, thread_id, event_id, row.data, row.stream_shard, position),
            )
            if on_row is not None:
                on_row(row)
            return row

        return self._db.run_interaction("insert_receipt", txn_fn)

    def get_rows(self, shard: int, after: int, upto: int, limit: int) -> "defer.Deferred[list[ReceiptRow]]":
        """Receipts of a shard with ``after < position <= upto``, in order (tail catch-up)."""

        def txn_fn(txn: Any) -> list[ReceiptRow]:
            txn.execute(
                f"SELECT {_COLUMNS} FROM receipts WHERE stream_shard = %s AND stream_position > %s AND stream_position <= %s"
                " ORDER BY stream_position LIMIT %s",
                (shard, after, upto, limit),
            )
            return [ReceiptRow(*r) for r in txn.fetchall()]

        return self._db.run_interaction("get_receipt_rows", txn_fn)

    def get_receipts(self, room_ids: Sequence[str], after: int, upto: int) -> "defer.Deferred[list[ReceiptRow]]":
        """Current receipts of some rooms (all on one shard) positioned in ``(after, upto]``."""
        rooms = list(room_ids)

        def txn_fn(txn: Any) -> list[ReceiptRow]:
            if not rooms:
                return []
            txn.execute(
                f"SELECT {_COLUMNS} FROM receipts WHERE room_id = ANY(%s) AND stream_position > %s AND stream_position <= %s"
                " ORDER BY stream_position",
                (rooms, after, upto),
            )
            return [ReceiptRow(*r) for r in txn.fetchall()]

        return self._db.run_interaction("get_receipts", txn_fn)

    def get_max_positions(self, shards: Iterable[int]) -> "defer.Deferred[dict[int, int]]":
        """The highest receipt position of each shard (0 when none)."""
        wanted = sorted(set(shards))

        def txn_fn(txn: Any) -> dict[int, int]:
            out = {s: 0 for s in wanted}
            txn.execute(
                "SELECT stream_shard, MAX(stream_position) FROM receipts WHERE stream_shard = ANY(%s) GROUP BY stream_shard",
                (wanted,),
            )
            out.update(dict(txn.fetchall()))
            return out

        return self._db.run_interaction("get_max_receipt_positions", txn_fn)
