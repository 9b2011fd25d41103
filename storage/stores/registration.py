"""User-interactive auth sessions, registration tokens, shared-secret nonces,
and the one transaction that creates an account.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs
from twisted.internet import defer

from homeserver.core.accounts import NewSession, TokenExists
from storage.stores.accounts import AccountStore


@attrs.frozen
class UiaSession:
    """A user-interactive auth session and the stages it has completed."""

    session_id: str
    created_ts: int
    operation: str
    user_id: Optional[str]
    params: dict
    registration_token: Optional[str]
    #: stage type -> what it proved.
    completed: dict


@attrs.frozen
class RegistrationToken:
    """A row of ``registration_tokens`` (Synapse's admin API shape)."""

    token: str
    uses_allowed: Optional[int]
    pending: int
    completed: int
    expiry_time: Optional[int]

    def is_valid(self, now_ms: int) -> bool:
        """Whether the token may start one more registration now."""
        if self.expiry_time is not None and self.expiry_time <= now_ms:
            return False
        if self.uses_allowed is not None and self.pending + self.completed >= self.uses_allowed:
            return False
        return True


_TOKEN_COLUMNS = "token, uses_allowed, pending, completed, expiry_time"


class RegistrationStore:
    """UIA sessions, registration tokens and account creation."""

    def __init__(self, database: Any, accounts: AccountStore) -> None:
        self._db = database
        self._accounts = accounts

    # -- UIA sessions ------------------------------------------------------

    def create_uia_session(
        self, session_id: str, operation: str, user_id: Optional[str], params: dict, now_ms: int, expire_before_ms: int
    ) -> "defer.Deferred[None]":
        """Start a session; sessions older than ``expire_before_ms`` are purged first."""

        def txn_fn(txn: Any) -> None:
            self._expire_sessions_txn(txn, expire_before_ms)
            txn.execute(
                "INSERT INTO ui_auth_sessions (session_id, created_ts, operation, user_id, params)"
                " VALUES (%s, %s, %s, %s, %s)",
                (session_id, now_ms, operation, user_id, json.dumps(params)),
            )

        return self._db.run_interaction("create_uia_session", txn_fn)

    def _expire_sessions_txn(self, txn: Any, expire_before_ms: int) -> None:
        txn.execute(
            "DELETE FROM ui_auth_sessions WHERE created_ts < %s RETURNING registration_token",
            (expire_before_ms,),
        )
        for (token,) in txn.fetchall():
            if token is not None:
                txn.execute(
                    "UPDATE registration_tokens SET pending = GREATEST(pending - 1, 0) WHERE token = %s", (token,)
                )

    def get_uia_session(self, session_id: str) -> "defer.Deferred[Optional[UiaSession]]":
        """The session with its completed stages, or None."""

        def txn_fn(txn: Any) -> Optional[UiaSession]:
            txn.execute(
                "SELECT session_id, created_ts, operation, user_id, params, registration_token"
                " FROM ui_auth_sessions WHERE session_id = %s",
                (session_id,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            txn.execute("SELECT stage, result FROM ui_auth_session_stages WHERE session_id = %s", (session_id,))
            completed = {stage: result for stage, result in txn.fetchall()}
            return UiaSession(*row, completed=completed)

        return self._db.run_interaction("get_uia_session", txn_fn)

    def mark_stage_completed(self, session_id: str, stage: str, result: Any) -> "defer.Deferred[bool]":
        """Record a completed stage; False if the session no longer exists."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("SELECT 1 FROM ui_auth_sessions WHERE session_id = %s FOR UPDATE", (session_id,))
            if txn.fetchone() is None:
                return False
            txn.execute(
                "INSERT INTO ui_auth_session_stages (session_id, stage, result) VALUES (%s, %s, %s)"
                " ON CONFLICT (session_id, stage) DO UPDATE SET result = EXCLUDED.result",
                (session_id, stage, json.dumps(result)),
            )
            return True

        return self._db.run_interaction("mark_stage_completed", txn_fn)

    def reserve_registration_token(self, session_id: str, token: str, now_ms: int) -> "defer.Deferred[bool]":
        """Complete ``m.login.registration_token``: count one pending use of ``token``.

        False if the token is unknown, expired or used up, or the session is
        gone. A session reserves at most one token (a second call is a no-op
        returning True for the same token).
        """

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "SELECT registration_token FROM ui_auth_sessions WHERE session_id = %s FOR UPDATE", (session_id,)
            )
            row = txn.fetchone()
            if row is None:
                return False
            if row[0] is not None:
                return row[0] == token
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = %s FOR UPDATE", (token,))
            trow = txn.fetchone()
            if trow is None or not RegistrationToken(*trow).is_valid(now_ms):
                return False
            txn.execute("UPDATE registration_tokens SET pending = pending + 1 WHERE token = %s", (token,))
            txn.execute(
                "UPDATE ui_auth_sessions SET registration_token = %s WHERE session_id = %s", (token, session_id)
            )
            txn.execute(
                "INSERT INTO ui_auth_session_stages (session_id, stage, result) VALUES (%s, %s, %s)"
                " ON CONFLICT (session_id, stage) DO NOTHING",
                (session_id, "m.login.registration_token", json.dumps(token)),
            )
            return True

        return self._db.run_interaction("reserve_registration_token", txn_fn)

    def delete_uia_session(self, session_id: str) -> "defer.Deferred[None]":
        """Forget a finished session (a reserved registration token is released)."""

        def txn_fn(txn: Any) -> None:
            self._delete_session_txn(txn, session_id, completed_registration=False)

        return self._db.run_interaction("delete_uia_session", txn_fn)

    def _delete_session_txn(self, txn: Any, session_id: str, completed_registration: bool) -> None:
        txn.execute(
            "DELETE FROM ui_auth_sessions WHERE session_id = %s RETURNING registration_token", (session_id,)
        )
        row = txn.fetchone()
        if row is None or row[0] is None:
            return
        if completed_registration:
            txn.execute(
                "UPDATE registration_tokens SET pending = GREATEST(pending - 1, 0), completed = completed + 1"
                " WHERE token = %s",
                (row[0],),
            )
        else:
            txn.execute(
                "UPDATE registration_tokens SET pending = GREATEST(pending - 1, 0) WHERE token = %s", (row[0],)
            )

    # -- account creation --------------------------------------------------

    def register_user(
        self,
        user_id: str,
        password_hash: Optional[str],
        now_ms: int,
        *,
        is_admin: bool = False,
        is_guest: bool = False,
        user_type: Optional[str] = None,
        displayname: Optional[str] = None,
        device_id: Optional[str] = None,
        initial_device_display_name: Optional[str] = None,
        tokens: Optional[NewSession] = None,
        uia_session_id: Optional[str] = None,
    ) -> "defer.Deferred[Optional[int]]":
        """Create the account, its default display name and (unless
        ``tokens`` is None) its first device and tokens, in one transaction.

        Consumes the UIA session (turning a reserved registration token's
        pending use into a completed one). Raises
        :class:`homeserver.core.accounts.UserInUse`; nothing is written then.
        Returns the access token id, or None without tokens.
        """

        def txn_fn(txn: Any) -> Optional[int]:
            self._accounts.create_user_txn(txn, user_id, password_hash, now_ms, is_admin, is_guest, user_type)
            if displayname is not None:
                value = json.dumps(displayname)
                txn.execute(
                    "INSERT INTO profile_fields (user_id, field, value, size_bytes) VALUES (%s, 'displayname', %s, %s)",
                    (user_id, value, len(value.encode("utf-8"))),
                )
            if uia_session_id is not None:
                self._delete_session_txn(txn, uia_session_id, completed_registration=True)
            if tokens is None:
                return None
            return self._accounts.create_session_txn(txn, user_id, device_id, initial_device_display_name, tokens, now_ms)

        return self._db.run_interaction("register_user", txn_fn)

    # -- registration tokens (admin) ---------------------------------------

    def get_registration_token(self, token: str) -> "defer.Deferred[Optional[RegistrationToken]]":
        """One token, or None."""

        def txn_fn(txn: Any) -> Optional[RegistrationToken]:
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = %s", (token,))
            row = txn.fetchone()
            return RegistrationToken(*row) if row else None

        return self._db.run_interaction("get_registration_token", txn_fn)

    def list_registration_tokens(self) -> "defer.Deferred[list[RegistrationToken]]":
        """Every token, by name."""

        def txn_fn(txn: Any) -> list[RegistrationToken]:
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens ORDER BY token")
            return [RegistrationToken(*r) for r in txn.fetchall()]

        return self._db.run_interaction("list_registration_tokens", txn_fn)

    def create_registration_token(
        self, token: str, uses_allowed: Optional[int], expiry_time: Optional[int]
    ) -> "defer.Deferred[RegistrationToken]":
        """Add a token; raises :class:`TokenExists`."""

        def txn_fn(txn: Any) -> RegistrationToken:
            txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES (%s, %s, %s)"
                f" ON CONFLICT (token) DO NOTHING RETURNING {_TOKEN_COLUMNS}",
                (token, uses_allowed, expiry_time),
            )
            row = txn.fetchone()
            if row is None:
                raise TokenExists(token)
            return RegistrationToken(*row)

        return self._db.run_interaction("create_registration_token", txn_fn)

    def update_registration_token(self, token: str, changes: dict) -> "defer.Deferred[Optional[RegistrationToken]]":
        """Change ``uses_allowed`` and/or ``expiry_time``; None if no such token."""
        allowed = {"uses_allowed", "expiry_time"}
        if not set(changes) <= allowed:
            raise ValueError(f"unknown columns {set(changes) - allowed}")

        def txn_fn(txn: Any) -> Optional[RegistrationToken]:
            for column in ("uses_allowed", "expiry_time"):
                if column in changes:
                    # The column name comes from the fixed set above.
                    txn.execute(
                        f"UPDATE registration_tokens SET {column} = %s WHERE token = %s", (changes[column], token)
                    )
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = %s", (token,))
            row = txn.fetchone()
            return RegistrationToken(*row) if row else None

        return self._db.run_interaction("update_registration_token", txn_fn)

    def delete_registration_token(self, token: str) -> "defer.Deferred[bool]":
        """Remove a token; False if there was none."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("DELETE FROM registration_tokens WHERE token = %s", (token,))
            return txn.rowcount > 0

        return self._db.run_interaction("delete_registration_token", txn_fn)

    # -- shared-secret registration nonces --------------------------------

    def add_nonce(self, nonce: str, now_ms: int, expire_before_ms: int) -> "defer.Deferred[None]":
        """Store a fresh nonce (and purge stale ones)."""

        def txn_fn(txn: Any) -> None:
            txn.execute("DELETE FROM registration_nonces WHERE created_ts < %s", (expire_before_ms,))
            txn.execute("INSERT INTO registration_nonces (nonce, created_ts) VALUES (%s, %s)", (nonce, now_ms))

        return self._db.run_interaction("add_registration_nonce", txn_fn)

    def consume_nonce(self, nonce: str, expire_before_ms: int) -> "defer.Deferred[bool]":
        """Use a nonce once; False if unknown, used or stale."""

        def txn_fn(txn: Any) -> bool:
            txn.execute("DELETE FROM registration_nonces WHERE nonce = %s RETURNING created_ts", (nonce,))
            row = txn.fetchone()
            return row is not None and row[0] >= expire_before_ms

        return self._db.run_interaction("consume_registration_nonce", txn_fn)
