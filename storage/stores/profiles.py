"""Profile fields: one row per (user, field), JSON values, size-accounted."""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet import defer

from homeserver.core.accounts import ProfileTooLarge


class ProfileStore:
    """``profile_fields`` in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def get_profile(self, user_id: str) -> "defer.Deferred[dict[str, Any]]":
        """Every field of the user's profile (empty if none)."""

        def txn_fn(txn: Any) -> dict[str, Any]:
            txn.execute("SELECT field, value FROM profile_fields WHERE user_id = %s ORDER BY field", (user_id,))
            return {field: value for field, value in txn.fetchall()}

        return self._db.run_interaction("get_profile", txn_fn)

    def set_field(self, user_id: str, field: str, value: Any, max_total_bytes: int) -> "defer.Deferred[None]":
        """Set one field; raises :class:`ProfileTooLarge` (nothing written) past the limit.

        The size counted is each field's key plus its JSON encoding, the way
        the profile is serialised in ``GET /profile``. The user's row set is
        locked for the check so concurrent writers cannot both squeeze in.
        """
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        size = len(encoded.encode("utf-8")) + len(field.encode("utf-8"))

        def txn_fn(txn: Any) -> None:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("profile:" + user_id,))
            txn.execute(
                "SELECT COALESCE(SUM(size_bytes), 0) FROM profile_fields WHERE user_id = %s AND field <> %s",
                (user_id, field),
            )
            (others,) = txn.fetchone()
            if others + size > max_total_bytes:
                raise ProfileTooLarge(field)
            txn.execute(
                "INSERT INTO profile_fields (user_id, field, value, size_bytes) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (user_id, field) DO UPDATE SET value = EXCLUDED.value, size_bytes = EXCLUDED.size_bytes",
                (user_id, field, encoded, size),
            )

        return self._db.run_interaction("set_profile_field", txn_fn)

    def delete_field(self, user_id: str, field: str) -> "defer.Deferred[bool]":
        """Remove one field; False if it was not set."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("DELETE FROM profile_fields WHERE user_id = %s AND field = %s", (user_id, field))
            return txn.rowcount > 0

        return self._db.run_interaction("delete_profile_field", txn_fn)

    def get_field(self, user_id: str, field: str) -> "defer.Deferred[Optional[tuple[Any]]]":
        """``(value,)`` if the field is set (the value may be JSON null), else None."""

        def txn_fn(txn: Any) -> Optional[tuple[Any]]:
            txn.execute("SELECT value FROM profile_fields WHERE user_id = %s AND field = %s", (user_id, field))
            row = txn.fetchone()
            return (row[0],) if row else None

        return self._db.run_interaction("get_profile_field", txn_fn)
