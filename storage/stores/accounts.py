"""Users, devices, access/refresh/login tokens.

Every method is one named transaction. Secrets arrive already hashed
(SHA-256, computed by the auth handler); this module never sees a token in
clear. Times are milliseconds passed in by the caller, so the store never
reads a clock.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
from twisted.internet import defer

from homeserver.core.accounts import NewSession, UserInUse

__all__ = ["AccountStore", "UserRecord", "DeviceRecord", "AccessTokenRecord", "RefreshOutcome", "NewSession", "UserInUse"]


@attrs.frozen
class UserRecord:
    """A row of ``users``."""

    user_id: str
    password_hash: Optional[str]
    created_ts: int
    is_admin: bool
    is_guest: bool
    user_type: Optional[str]
    deactivated: bool
    erased: bool

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "UserRecord":
        """From a row selected as ``_USER_COLUMNS``."""
        return cls(*row)


_USER_COLUMNS = "user_id, password_hash, created_ts, is_admin, is_guest, user_type, deactivated, erased"


@attrs.frozen
class DeviceRecord:
    """A row of ``devices``."""

    user_id: str
    device_id: str
    display_name: Optional[str]
    last_seen_ts: Optional[int]
    last_seen_ip: Optional[str]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "DeviceRecord":
        """From ``(user_id, device_id, display_name, last_seen_ts, last_seen_ip)``."""
        return cls(*row)


@attrs.frozen
class AccessTokenRecord:
    """What an access token authenticates, joined with its user."""

    token_id: int
    user_id: str
    device_id: Optional[str]
    valid_until_ms: Optional[int]
    refresh_token_id: Optional[int]
    used: bool
    is_guest: bool
    is_admin: bool
    deactivated: bool


@attrs.frozen
class RefreshOutcome:
    """Result of :meth:`AccountStore.rotate_refresh_token`.

    ``status`` is ``"ok"``, ``"unknown"``, ``"expired"`` or ``"reused"``.
    """

    status: str
    user_id: Optional[str] = None
    device_id: Optional[str] = None


class AccountStore:
    """Users, devices and tokens in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    # -- users ------------------------------------------------------------

    def get_user(self, user_id: str) -> "defer.Deferred[Optional[UserRecord]]":
        """The user with exactly this id, or None."""

        def txn_fn(txn: Any) -> Optional[UserRecord]:
            txn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = %s", (user_id,))
            row = txn.fetchone()
            return UserRecord.from_row(row) if row else None

        return self._db.run_interaction("get_user", txn_fn)

    def get_users_case_insensitive(self, user_id: str) -> "defer.Deferred[list[UserRecord]]":
        """Every user whose id equals ``user_id`` ignoring case."""

        def txn_fn(txn: Any) -> list[UserRecord]:
            txn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE user_id_lower = %s ORDER BY user_id",
                (user_id.lower(),),
            )
            return [UserRecord.from_row(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_users_case_insensitive", txn_fn)

    def is_user_id_taken(self, user_id: str) -> "defer.Deferred[bool]":
        """Whether an account exists whose id matches ignoring case."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("SELECT 1 FROM users WHERE user_id_lower = %s LIMIT 1", (user_id.lower(),))
            return txn.fetchone() is not None

        return self._db.run_interaction("is_user_id_taken", txn_fn)

    def next_guest_localpart(self) -> "defer.Deferred[str]":
        """A fresh numeric localpart for a guest."""

        def txn_fn(txn: Any) -> str:
            txn.execute("SELECT nextval('guest_localpart_seq')")
            return str(txn.fetchone()[0])

        return self._db.run_interaction("next_guest_localpart", txn_fn)

    def create_user_txn(
        self,
        txn: Any,
        user_id: str,
        password_hash: Optional[str],
        now_ms: int,
        is_admin: bool = False,
        is_guest: bool = False,
        user_type: Optional[str] = None,
    ) -> None:
        """Insert a user inside ``txn``; raises :class:`homeserver.core.accounts.UserInUse`.

        Ids equal ignoring case count as taken (logins match them
        case-insensitively). Serialised by a transaction-scoped advisory lock
        on the lowered id, so two concurrent registrations cannot both win.
        """
        lower = user_id.lower()
        txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lower,))
        txn.execute("SELECT 1 FROM users WHERE user_id_lower = %s", (lower,))
        if txn.fetchone() is not None:
            raise UserInUse(user_id)
        txn.execute(
            "INSERT INTO users (user_id, user_id_lower, password_hash, created_ts, is_admin, is_guest, user_type)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (user_id, lower, password_hash, now_ms, is_admin, is_guest, user_type),
        )

    def set_admin(self, user_id: str, is_admin: bool) -> "defer.Deferred[None]":
        """Grant or revoke server admin."""

        def txn_fn(txn: Any) -> None:
            txn.execute("UPDATE users SET is_admin = %s WHERE user_id = %s", (is_admin, user_id))

        return self._db.run_interaction("set_admin", txn_fn)

    def set_password_hash(
        self, user_id: str, password_hash: str, keep_device_id: Optional[str], logout_devices: bool
    ) -> "defer.Deferred[list[str]]":
        """Change the password; optionally log out every other device.

        Returns the device ids removed.
        """

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))
            if not logout_devices:
                return []
            txn.execute(
                "SELECT device_id FROM devices WHERE user_id = %s AND device_id IS DISTINCT FROM %s",
                (user_id, keep_device_id),
            )
            devices = [r[0] for r in txn.fetchall()]
            self._delete_devices_txn(txn, user_id, devices)
            # Tokens without a device (shared-secret admin tokens) go too.
            txn.execute(
                "DELETE FROM access_tokens WHERE user_id = %s AND device_id IS NULL",
                (user_id,),
            )
            return devices

        return self._db.run_interaction("set_password_hash", txn_fn)

    def deactivate_user(self, user_id: str, erase: bool) -> "defer.Deferred[list[str]]":
        """Mark the account deactivated, remove its password, devices and tokens.

        ``erase`` also removes the profile. Returns the removed device ids.
        """

        def txn_fn(txn: Any) -> list[str]:
            txn.execute(
                "UPDATE users SET deactivated = TRUE, password_hash = NULL, erased = erased OR %s"
                " WHERE user_id = %s",
                (erase, user_id),
            )
            txn.execute("SELECT device_id FROM devices WHERE user_id = %s", (user_id,))
            devices = [r[0] for r in txn.fetchall()]
            self._delete_devices_txn(txn, user_id, devices)
            txn.execute("DELETE FROM access_tokens WHERE user_id = %s", (user_id,))
            txn.execute("DELETE FROM refresh_tokens WHERE user_id = %s", (user_id,))
            txn.execute("DELETE FROM login_tokens WHERE user_id = %s", (user_id,))
            if erase:
                txn.execute("DELETE FROM profile_fields WHERE user_id = %s", (user_id,))
            return devices

        return self._db.run_interaction("deactivate_user", txn_fn)

    # -- devices ----------------------------------------------------------

    def _upsert_device_txn(self, txn: Any, user_id: str, device_id: str, display_name: Optional[str], now_ms: int) -> None:
        txn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET display_name ="
            " COALESCE(EXCLUDED.display_name, devices.display_name)",
            (user_id, device_id, display_name, now_ms),
        )

    def _delete_devices_txn(self, txn: Any, user_id: str, device_ids: Sequence[str]) -> None:
        if not device_ids:
            return
        ids = list(device_ids)
        txn.execute("DELETE FROM devices WHERE user_id = %s AND device_id = ANY(%s)", (user_id, ids))
        txn.execute("DELETE FROM access_tokens WHERE user_id = %s AND device_id = ANY(%s)", (user_id, ids))
        txn.execute("DELETE FROM refresh_tokens WHERE user_id = %s AND device_id = ANY(%s)", (user_id, ids))

    def get_devices(self, user_id: str) -> "defer.Deferred[list[DeviceRecord]]":
        """Every device of the user, by id."""

        def txn_fn(txn: Any) -> list[DeviceRecord]:
            txn.execute(
                "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
                " WHERE user_id = %s ORDER BY device_id",
                (user_id,),
            )
            return [DeviceRecord.from_row(r) for r in txn.fetchall()]

        return self._db.run_interaction("get_devices", txn_fn)

    def get_device(self, user_id: str, device_id: str) -> "defer.Deferred[Optional[DeviceRecord]]":
        """One device, or None."""

        def txn_fn(txn: Any) -> Optional[DeviceRecord]:
            txn.execute(
                "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
                " WHERE user_id = %s AND device_id = %s",
                (user_id, device_id),
            )
            row = txn.fetchone()
            return DeviceRecord.from_row(row) if row else None

        return self._db.run_interaction("get_device", txn_fn)

    def update_device_display_name(self, user_id: str, device_id: str, display_name: Optional[str]) -> "defer.Deferred[bool]":
        """Set a device's display name; False if there is no such device."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = %s WHERE user_id = %s AND device_id = %s",
                (display_name, user_id, device_id),
            )
            return txn.rowcount > 0

        return self._db.run_interaction("update_device_display_name", txn_fn)

    def delete_devices(self, user_id: str, device_ids: Sequence[str]) -> "defer.Deferred[None]":
        """Delete devices and every token bound to them (unknown ids are ignored)."""

        def txn_fn(txn: Any) -> None:
            self._delete_devices_txn(txn, user_id, device_ids)

        return self._db.run_interaction("delete_devices", txn_fn)

    def record_device_seen(self, user_id: str, device_id: str, ip: str, user_agent: Optional[str], now_ms: int) -> "defer.Deferred[None]":
        """Update a device's last-seen columns."""

        def txn_fn(txn: Any) -> None:
            txn.execute(
                "UPDATE devices SET last_seen_ts = %s, last_seen_ip = %s, last_seen_user_agent = %s"
                " WHERE user_id = %s AND device_id = %s",
                (now_ms, ip, user_agent, user_id, device_id),
            )

        return self._db.run_interaction("record_device_seen", txn_fn)

    # -- sessions (device + tokens) -------------------------------------------

    def _create_tokens_txn(self, txn: Any, user_id: str, device_id: Optional[str], tokens: NewSession, now_ms: int) -> int:
        refresh_id = None
        if tokens.refresh_token_hash is not None:
            txn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expiry_ts)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (tokens.refresh_token_hash, user_id, device_id, now_ms, tokens.refresh_expiry_ts),
            )
            refresh_id = txn.fetchone()[0]
        txn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ms, refresh_token_id)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (tokens.access_token_hash, user_id, device_id, now_ms, tokens.access_valid_until_ms, refresh_id),
        )
        return txn.fetchone()[0]

    def create_session_txn(
        self,
        txn: Any,
        user_id: str,
        device_id: Optional[str],
        initial_display_name: Optional[str],
        tokens: NewSession,
        now_ms: int,
    ) -> int:
        """Inside ``txn``: create (or reuse) the device and its tokens.

        Logging in again with an existing ``device_id`` replaces that device's
        previous tokens, as the spec requires. Returns the access token id.
        """
        if device_id is not None:
            self._upsert_device_txn(txn, user_id, device_id, initial_display_name, now_ms)
            txn.execute("DELETE FROM access_tokens WHERE user_id = %s AND device_id = %s", (user_id, device_id))
            txn.execute("DELETE FROM refresh_tokens WHERE user_id = %s AND device_id = %s", (user_id, device_id))
        return self._create_tokens_txn(txn, user_id, device_id, tokens, now_ms)

    def create_session(
        self,
        user_id: str,
        device_id: Optional[str],
        initial_display_name: Optional[str],
        tokens: NewSession,
        now_ms: int,
    ) -> "defer.Deferred[int]":
        """Create a device (if given) and its tokens for an existing user."""
        return self._db.run_interaction(
            "create_session", self.create_session_txn, user_id, device_id, initial_display_name, tokens, now_ms
        )

    def get_access_token(self, token_hash: bytes) -> "defer.Deferred[Optional[AccessTokenRecord]]":
        """The token and its user's flags, or None if unknown."""

        def txn_fn(txn: Any) -> Optional[AccessTokenRecord]:
            txn.execute_prepared(
                "accounts_access_token",
                "SELECT t.id, t.user_id, t.device_id, t.valid_until_ms, t.refresh_token_id, t.used,"
                " u.is_guest, u.is_admin, u.deactivated"
                " FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = %s",
                (token_hash,),
            )
            row = txn.fetchone()
            return AccessTokenRecord(*row) if row else None

        return self._db.run_interaction("get_access_token", txn_fn)

    def mark_access_token_used(self, token_id: int, refresh_token_id: int) -> "defer.Deferred[None]":
        """First use of a refreshed access token: the refresh token it replaced is now revoked."""

        def txn_fn(txn: Any) -> None:
            txn.execute("UPDATE access_tokens SET used = TRUE WHERE id = %s", (token_id,))
            txn.execute("UPDATE refresh_tokens SET revoked = TRUE WHERE next_token_id = %s", (refresh_token_id,))

        return self._db.run_interaction("mark_access_token_used", txn_fn)

    def delete_access_token(self, token_id: int) -> "defer.Deferred[Optional[str]]":
        """Log out one token: the token, its device and the device's refresh tokens.

        Returns the deleted device id (None for a token without a device).
        """

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute("DELETE FROM access_tokens WHERE id = %s RETURNING user_id, device_id", (token_id,))
            row = txn.fetchone()
            if row is None:
                return None
            user_id, device_id = row
            if device_id is not None:
                self._delete_devices_txn(txn, user_id, [device_id])
            return device_id

        return self._db.run_interaction("delete_access_token", txn_fn)

    def delete_all_sessions(self, user_id: str) -> "defer.Deferred[list[str]]":
        """Log out everywhere: every device and token of the user."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT device_id FROM devices WHERE user_id = %s", (user_id,))
            devices = [r[0] for r in txn.fetchall()]
            self._delete_devices_txn(txn, user_id, devices)
            txn.execute("DELETE FROM access_tokens WHERE user_id = %s", (user_id,))
            txn.execute("DELETE FROM refresh_tokens WHERE user_id = %s", (user_id,))
            return devices

        return self._db.run_interaction("delete_all_sessions", txn_fn)

    def rotate_refresh_token(
        self, refresh_hash: bytes, new_tokens: NewSession, now_ms: int
    ) -> "defer.Deferred[RefreshOutcome]":
        """Exchange a refresh token for a new access + refresh token pair.

        - unknown or expired: nothing changes.
        - already exchanged and its successor has been used (``revoked``):
          token reuse, which means it leaked; every token of the device is
          deleted (the device stays, its user must log in again).
        - already exchanged but the successor was never used (the client lost
          the response): the unused successor is replaced by the new pair.
        Otherwise the new pair is stored, the old access tokens of this
        refresh token are deleted, and the old refresh token stays valid until
        the new pair is first used.
        """

        def txn_fn(txn: Any) -> RefreshOutcome:
            txn.execute(
                "SELECT id, user_id, device_id, expiry_ts, next_token_id, revoked FROM refresh_tokens"
                " WHERE token_hash = %s FOR UPDATE",
                (refresh_hash,),
            )
            row = txn.fetchone()
            if row is None:
                return RefreshOutcome("unknown")
            rid, user_id, device_id, expiry_ts, next_id, revoked = row
            if revoked:
                txn.execute("DELETE FROM access_tokens WHERE user_id = %s AND device_id = %s", (user_id, device_id))
                txn.execute("DELETE FROM refresh_tokens WHERE user_id = %s AND device_id = %s", (user_id, device_id))
                return RefreshOutcome("reused", user_id, device_id)
            if expiry_ts is not None and expiry_ts <= now_ms:
                return RefreshOutcome("expired", user_id, device_id)
            if next_id is not None:
                # Drop the unused successor (and its access token).
                txn.execute("DELETE FROM access_tokens WHERE refresh_token_id = %s", (next_id,))
                txn.execute("DELETE FROM refresh_tokens WHERE id = %s", (next_id,))
            txn.execute("DELETE FROM access_tokens WHERE refresh_token_id = %s", (rid,))
            self._create_tokens_txn(txn, user_id, device_id, new_tokens, now_ms)
            txn.execute("SELECT id FROM refresh_tokens WHERE token_hash = %s", (new_tokens.refresh_token_hash,))
            new_id = txn.fetchone()[0]
            txn.execute("UPDATE refresh_tokens SET next_token_id = %s WHERE id = %s", (new_id, rid))
            # Predecessors of this token are revoked now that it is used.
            txn.execute("UPDATE refresh_tokens SET revoked = TRUE WHERE next_token_id = %s", (rid,))
            return RefreshOutcome("ok", user_id, device_id)

        return self._db.run_interaction("rotate_refresh_token", txn_fn)

    # -- login tokens -----------------------------------------------------

    def add_login_token(self, token_hash: bytes, user_id: str, now_ms: int, expiry_ts: int) -> "defer.Deferred[None]":
        """Store a single-use ``m.login.token`` (and purge expired ones)."""

        def txn_fn(txn: Any) -> None:
            txn.execute("DELETE FROM login_tokens WHERE expiry_ts <= %s", (now_ms,))
            txn.execute(
                "INSERT INTO login_tokens (token_hash, user_id, created_ts, expiry_ts) VALUES (%s, %s, %s, %s)",
                (token_hash, user_id, now_ms, expiry_ts),
            )

        return self._db.run_interaction("add_login_token", txn_fn)

    def consume_login_token(self, token_hash: bytes, now_ms: int) -> "defer.Deferred[Optional[str]]":
        """Use a login token once: its user id, or None if unknown/expired/used."""

        def txn_fn(txn: Any) -> Optional[str]:
            txn.execute("DELETE FROM login_tokens WHERE token_hash = %s RETURNING user_id, expiry_ts", (token_hash,))
            row = txn.fetchone()
            if row is None or row[1] <= now_ms:
                return None
            return row[0]

        return self._db.run_interaction("consume_login_token", txn_fn)
