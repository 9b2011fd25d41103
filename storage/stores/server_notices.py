"""Storage of server notice rooms and the notices system user."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer

from homeserver.core.accounts import UserInUse


class ServerNoticeStore:
    def __init__(self, database: Any, accounts: Any) -> None:
        self._db = database
        self._accounts = accounts

    def get_room(self, user_id: str) -> "defer.Deferred[Optional[str]]":
        """The notices room of ``user_id``, if one was made."""

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute("SELECT room_id FROM server_notice_rooms WHERE user_id = %s", (user_id,))
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("server_notice_room", txn_fn)

    def set_room(self, user_id: str, room_id: str, now_ms: int) -> "defer.Deferred[str]":
        """Record ``room_id`` as the user's notices room; the first one recorded wins."""

        def txn_fn(txn: Any) -> str:
            txn.execute(
                "INSERT INTO server_notice_rooms (user_id, room_id, created_ts) VALUES (%s, %s, %s)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, room_id, now_ms),
            )
            txn.execute("SELECT room_id FROM server_notice_rooms WHERE user_id = %s", (user_id,))
            return txn.fetchone()[0]

        return self._db.run_interaction("set_server_notice_room", txn_fn)

    def is_notice_room(self, user_id: str, room_id: str) -> "defer.Deferred[bool]":
        def txn_fn(txn: Any) -> bool:
            txn.execute("SELECT 1 FROM server_notice_rooms WHERE user_id = %s AND room_id = %s", (user_id, room_id))
            return txn.fetchone() is not None

        return self._db.run_interaction("is_server_notice_room", txn_fn)

    def ensure_system_user(self, user_id: str, now_ms: int) -> "defer.Deferred[None]":
        """Create the notices user (no password: nobody can log in as it) if absent."""

        def txn_fn(txn: Any) -> None:
            txn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
            if txn.fetchone() is not None:
                return
            try:
                self._accounts.create_user_txn(txn, user_id, None, now_ms, user_type="support")
            except UserInUse:
                pass

        return self._db.run_interaction("ensure_server_notices_user", txn_fn)
