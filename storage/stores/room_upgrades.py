"""What a room upgrade moves from the old room to its replacement: local aliases, directory listing."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer


class RoomAddressStore:
    """Local aliases and the room directory listing, moved as one transaction."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def move_room_addresses(self, old_room_id: str, new_room_id: str) -> "defer.Deferred[list[str]]":
        """Point every local alias of ``old_room_id`` at ``new_room_id`` and move its
        directory publication; returns the aliases moved (sorted)."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute(
                "UPDATE room_aliases SET room_id = %s WHERE room_id = %s RETURNING room_alias",
                (new_room_id, old_room_id),
            )
            moved = sorted(r[0] for r in txn.fetchall())
            txn.execute("SELECT is_public FROM rooms WHERE room_id = %s", (old_room_id,))
            row = txn.fetchone()
            if row is not None and row[0]:
                txn.execute("UPDATE rooms SET is_public = TRUE WHERE room_id = %s", (new_room_id,))
                txn.execute("UPDATE rooms SET is_public = FALSE WHERE room_id = %s", (old_room_id,))
            return moved

        return self._db.run_interaction("move_room_addresses", txn_fn)
