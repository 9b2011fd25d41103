"""Server-side room key backups (schema 0014): versions and the session keys stored in them.

Every method is one transaction on the user's rows. Writes lock the
version's row (``FOR UPDATE``), so concurrent uploads to one backup apply
one after the other and its ``etag`` moves once per change.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

import attrs
from twisted.internet import defer

from homeserver.core.key_backup import BackupKey


@attrs.frozen
class BackupVersion:
    """A backup version's metadata."""

    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int
    count: int


@attrs.frozen
class WrongVersion:
    """The version written to is not the user's current one (``current``: None when there is none)."""

    current: Optional[int]


_KEY_COLUMNS = "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"


def _key(row: Sequence[Any]) -> BackupKey:
    return BackupKey(row[0], row[1], int(row[2]), int(row[3]), bool(row[4]), json.loads(row[5]))


class KeyBackupStore:
    """Backup versions and keys in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def _version_txn(self, txn: Any, user_id: str, version: Optional[int]) -> Optional[BackupVersion]:
        if version is None:
            txn.execute(
                "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions WHERE user_id = %s"
                " AND NOT deleted ORDER BY version DESC LIMIT 1", (user_id,),
            )
        else:
            txn.execute(
                "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions WHERE user_id = %s"
                " AND version = %s AND NOT deleted", (user_id, version),
            )
        row = txn.fetchone()
        if row is None:
            return None
        txn.execute("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = %s AND version = %s", (user_id, row[0]))
        return BackupVersion(int(row[0]), row[1], json.loads(row[2]), int(row[3]), int(txn.fetchone()[0]))

    def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> "defer.Deferred[int]":
        """A new version (one more than any the user ever had), which becomes the current one."""

        def txn_fn(txn: Any) -> int:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext('room_keys:' || %s))", (user_id,))
            txn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM e2e_room_keys_versions WHERE user_id = %s", (user_id,))
            version = int(txn.fetchone()[0])
            txn.execute(
                "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data) VALUES (%s, %s, %s, %s)",
                (user_id, version, algorithm, json.dumps(auth_data)),
            )
            return version

        return self._db.run_interaction("create_room_keys_version", txn_fn)

    def get_version(self, user_id: str, version: Optional[int]) -> "defer.Deferred[Optional[BackupVersion]]":
        """A version (None: the current one), or None when it does not exist or was deleted."""
        return self._db.run_interaction("get_room_keys_version", self._version_txn, user_id, version)

    def update_version(self, user_id: str, version: int, auth_data: dict[str, Any]) -> "defer.Deferred[bool]":
        """Replace a version's ``auth_data``; False if it does not exist."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "UPDATE e2e_room_keys_versions SET auth_data = %s WHERE user_id = %s AND version = %s AND NOT deleted",
                (json.dumps(auth_data), user_id, version),
            )
            return txn.rowcount > 0

        return self._db.run_interaction("update_room_keys_version", txn_fn)

    def delete_version(self, user_id: str, version: int) -> "defer.Deferred[bool]":
        """Delete a version and its keys; False if it does not exist."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = TRUE WHERE user_id = %s AND version = %s AND NOT deleted",
                (user_id, version),
            )
            if txn.rowcount == 0:
                return False
            txn.execute("DELETE FROM e2e_room_keys WHERE user_id = %s AND version = %s", (user_id, version))
            return True

        return self._db.run_interaction("delete_room_keys_version", txn_fn)

    def put_keys(self, user_id: str, version: int, keys: Sequence[BackupKey],
                 prefer: Callable[[BackupKey, BackupKey], bool]) -> "defer.Deferred[Any]":
        """Store keys in the current version, each replacing a stored one only if ``prefer(new, old)``.

        Returns ``(etag, count)``, :class:`WrongVersion` when ``version`` is
        not the current version, or None when it does not exist at all.
        """

        def txn_fn(txn: Any) -> Any:
            txn.execute(
                "SELECT version FROM e2e_room_keys_versions WHERE user_id = %s AND NOT deleted"
                " ORDER BY version DESC LIMIT 1 FOR UPDATE", (user_id,),
            )
            row = txn.fetchone()
            current = int(row[0]) if row is not None else None
            if current != version:
                txn.execute("SELECT 1 FROM e2e_room_keys_versions WHERE user_id = %s AND version = %s AND NOT deleted",
                            (user_id, version))
                return WrongVersion(current) if txn.fetchone() is not None or current is not None else None
            changed = False
            for key in keys:
                txn.execute(
                    f"SELECT {_KEY_COLUMNS} FROM e2e_room_keys WHERE user_id = %s AND version = %s AND room_id = %s"
                    " AND session_id = %s", (user_id, version, key.room_id, key.session_id),
                )
                old = txn.fetchone()
                if old is not None and not prefer(key, _key(old)):
                    continue
                txn.execute(
                    "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,"
                    " forwarded_count, is_verified, session_data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                    " first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,"
                    " is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data",
                    (user_id, version, key.room_id, key.session_id, key.first_message_index, key.forwarded_count,
                     key.is_verified, json.dumps(key.session_data)),
                )
                changed = True
            return self._bump_txn(txn, user_id, version, changed)

        return self._db.run_interaction("put_room_keys", txn_fn)

    def _bump_txn(self, txn: Any, user_id: str, version: int, changed: bool) -> tuple[int, int]:
        if changed:
            txn.execute(
                "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = %s AND version = %s RETURNING etag",
                (user_id, version),
            )
        else:
            txn.execute("SELECT etag FROM e2e_room_keys_versions WHERE user_id = %s AND version = %s", (user_id, version))
        etag = int(txn.fetchone()[0])
        txn.execute("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = %s AND version = %s", (user_id, version))
        return etag, int(txn.fetchone()[0])

    def get_keys(self, user_id: str, version: int, room_id: Optional[str] = None,
                 session_id: Optional[str] = None) -> "defer.Deferred[Optional[list[BackupKey]]]":
        """The version's keys (of one room, or one session); None when the version does not exist."""

        def txn_fn(txn: Any) -> Optional[list[BackupKey]]:
            txn.execute("SELECT 1 FROM e2e_room_keys_versions WHERE user_id = %s AND version = %s AND NOT deleted",
                        (user_id, version))
            if txn.fetchone() is None:
                return None
            scope, args = _key_scope(user_id, version, room_id, session_id)
            txn.execute(f"SELECT {_KEY_COLUMNS} FROM e2e_room_keys WHERE {scope} ORDER BY room_id, session_id", args)
            return [_key(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_room_keys", txn_fn)

    def delete_keys(self, user_id: str, version: int, room_id: Optional[str] = None,
                    session_id: Optional[str] = None) -> "defer.Deferred[Optional[tuple[int, int]]]":
        """Delete keys of the version (all, a room's, or one session); ``(etag, count)`` or None if no such version."""

        def txn_fn(txn: Any) -> Optional[tuple[int, int]]:
            txn.execute("SELECT 1 FROM e2e_room_keys_versions WHERE user_id = %s AND version = %s AND NOT deleted"
                        " FOR UPDATE", (user_id, version))
            if txn.fetchone() is None:
                return None
            scope, args = _key_scope(user_id, version, room_id, session_id)
            txn.execute(f"DELETE FROM e2e_room_keys WHERE {scope}", args)
            return self._bump_txn(txn, user_id, version, txn.rowcount > 0)

        return self._db.run_interaction("delete_room_keys", txn_fn)


def _key_scope(user_id: str, version: int, room_id: Optional[str],
               session_id: Optional[str]) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed text, values as parameters) selecting a version's keys:
    all of them, a room's, or one session's."""
    clause = "user_id = %s AND version = %s"
    args: list[Any] = [user_id, version]
    if room_id is not None:
        clause += " AND room_id = %s"
        args.append(room_id)
    if session_id is not None:
        clause += " AND session_id = %s"
        args.append(session_id)
    return clause, args
