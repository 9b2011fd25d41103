"""The ``device_inbox`` table: send-to-device messages waiting for local devices."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional

import attrs
from twisted.internet import defer

from storage.stores.stream_tables import UserStreamReads

#: How long a delivered transaction ID is remembered per sender device (client retries come far sooner).
TXN_RETENTION_MS = 24 * 3600 * 1000


@attrs.frozen
class InboxRow:
    """One write to a user's inbox, as the ``to_device`` stream sees it (also the bus payload)."""

    stream_shard: int
    stream_position: int
    user_id: str

    def to_payload(self) -> dict[str, Any]:
        """What goes on the bus: whom to wake (the messages stay in PostgreSQL)."""
        return {"user_id": self.user_id}

    @classmethod
    def from_payload(cls, shard: int, position: int, payload: Mapping[str, Any]) -> "InboxRow":
        """The row a bus entry carries."""
        return cls(shard, position, str(payload["user_id"]))


class DeviceInboxStore(UserStreamReads):
    """Writes (on the owner of the recipient's ``to_device`` shard) and reads of device inboxes."""

    _stream_table = "device_inbox"
    _stream_row = InboxRow
    _stream_name = "to_device"

    def __init__(self, database: Any) -> None:
        self._db = database

    def deliver(self, allocator: Any, sender: str, sender_device: str, txn_id: str, user_id: str,
                event_type: str, messages: Mapping[str, Any], now_ms: int,
                on_row: Optional[Callable[[InboxRow], None]] = None) -> "defer.Deferred[Optional[InboxRow]]":
        """Store ``messages`` (device ID or ``*`` -> content) for ``user_id`` at one new position.

        Returns None (and stores nothing) when this transaction was already
        delivered to this user, or when no addressed device exists. The
        sender device's transaction IDs older than :data:`TXN_RETENTION_MS`
        are forgotten on the way.
        """

        def txn_fn(txn: Any) -> Optional[InboxRow]:
            txn.execute(
                "DELETE FROM device_inbox_txns WHERE sender = %s AND sender_device = %s AND created_ts < %s",
                (sender, sender_device, now_ms - TXN_RETENTION_MS),
            )
            txn.execute(
                "INSERT INTO device_inbox_txns (sender, sender_device, txn_id, user_id, created_ts)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (sender, sender_device, txn_id, user_id, now_ms),
            )
            if txn.rowcount == 0:
                return None
            txn.execute("SELECT device_id FROM devices WHERE user_id = %s", (user_id,))
            devices = {r[0] for r in txn.fetchall()}
            targets: dict[str, Any] = {}
            if "*" in messages:
                targets.update({d: messages["*"] for d in devices})
            targets.update({d: c for d, c in messages.items() if d != "*" and d in devices})
            if not targets:
                return None
            position = allocator.allocate(txn)
            for device_id in sorted(targets):
                txn.execute(
                    "INSERT INTO device_inbox (user_id, device_id, stream_shard, stream_position, sender, event_type,"
                    " content) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (user_id, device_id, allocator.shard, position, sender, event_type,
                     json.dumps(targets[device_id], separators=(",", ":"))),
                )
            row = InboxRow(allocator.shard, position, user_id)
            if on_row is not None:
                on_row(row)
            return row

        return self._db.run_interaction("deliver_to_device", txn_fn)

    def take(self, user_id: str, device_id: str, ack_upto: int, after: int, upto: int,
             limit: int) -> "defer.Deferred[list[tuple[int, dict[str, Any]]]]":
        """Delete the device's messages at positions ``<= ack_upto`` (acknowledged), then return
        ``(position, event)`` of those with ``after < position <= upto``, oldest first, at most ``limit``."""

        def txn_fn(txn: Any) -> list[tuple[int, dict[str, Any]]]:
            if ack_upto > 0:
                txn.execute(
                    "DELETE FROM device_inbox WHERE user_id = %s AND device_id = %s AND stream_position <= %s",
                    (user_id, device_id, ack_upto),
                )
            txn.execute_prepared(
                "device_inbox_range",
                "SELECT stream_position, sender, event_type, content FROM device_inbox WHERE user_id = %s"
                " AND device_id = %s AND stream_position > %s AND stream_position <= %s"
                " ORDER BY stream_position LIMIT %s",
                (user_id, device_id, after, upto, limit),
            )
            return [(r[0], {"sender": r[1], "type": r[2], "content": json.loads(r[3])}) for r in txn.fetchall()]

        return self._db.run_interaction("take_to_device", txn_fn)

