"""User-interactive authentication ("User-Interactive Authentication API"
in the client-server spec).

An operation (register, delete devices, change password...) declares the
flows that may authorise it. :meth:`UserInteractiveAuth.check` either returns
the completed stages of a finished flow or raises :class:`AuthRequired`, the
401 whose body lists the flows, the session and what is completed so far.
Sessions and their completed stages live in PostgreSQL, so the stages of one
session may be completed on different instances.
"""

from __future__ import annotations

import secrets
from typing import Any, Optional, Sequence

from homeserver.errors import Codes, MatrixError, bad_json

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"


class AuthRequired(MatrixError):
    """401 carrying the UIA state; ``errcode`` only when a stage just failed."""

    def __init__(
        self,
        flows: Sequence[Sequence[str]],
        session_id: str,
        completed: Sequence[str],
        params: Optional[dict] = None,
        errcode: Optional[str] = None,
        error: Optional[str] = None,
    ) -> None:
        super().__init__(401, errcode or "", error or "User-interactive authentication required")
        self.body: dict[str, Any] = {
            "flows": [{"stages": list(f)} for f in flows],
            "params": params or {},
            "session": session_id,
        }
        if completed:
            self.body["completed"] = sorted(completed)
        if errcode:
            self.body["errcode"] = errcode
            self.body["error"] = error or ""

    def to_json(self) -> dict[str, Any]:
        """The UIA response body (``flows``, ``params``, ``session``...)."""
        return dict(self.body)


class UserInteractiveAuth:
    """Runs UIA sessions against the registration store.

    ``password_checker`` is ``async (user_id, password) -> bool``: whether
    the password is the account's.
    """

    def __init__(self, clock: Any, store: Any, password_checker: Any, session_lifetime_ms: int) -> None:
        self._clock = clock
        self._store = store
        self._check_password = password_checker
        self._lifetime_ms = session_lifetime_ms

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def check(
        self,
        operation: str,
        flows: Sequence[Sequence[str]],
        auth: Any,
        user_id: Optional[str] = None,
        server_name: str = "",
        params: Optional[dict[str, Any]] = None,
    ) -> tuple[str, dict[str, Any]]:
        """Advance the session named in ``auth`` (the request's ``auth`` dict).

        ``user_id`` is the authenticated user for operations on an existing
        account: a password stage must then prove that account's password.
        ``params`` describes what exactly is being authorised (e.g. which
        devices to delete): a session started for some params cannot
        complete an operation with others (403 ``M_FORBIDDEN``).
        Returns ``(session_id, completed)`` once one flow is complete (the
        caller deletes the session after a successful operation, unless the
        operation's own transaction consumes it).
        """
        params = params or {}
        if auth is not None and not isinstance(auth, dict):
            raise bad_json("'auth' must be an object")
        now = self._now_ms()
        session_id = auth.get("session") if auth else None
        if session_id is not None and not isinstance(session_id, str):
            raise bad_json("'auth.session' must be a string")

        if session_id is None:
            session_id = secrets.token_urlsafe(18)
            await self._store.create_uia_session(session_id, operation, user_id, params, now, now - self._lifetime_ms)
            completed: dict[str, Any] = {}
        else:
            session = await self._store.get_uia_session(session_id)
            if session is None or session.created_ts < now - self._lifetime_ms:
                raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired UIA session")
            if session.operation != operation or session.user_id != user_id:
                raise MatrixError(403, Codes.FORBIDDEN, "This session belongs to another operation")
            if session.params != params:
                raise MatrixError(403, Codes.FORBIDDEN, "Requested operation has changed during the UI authentication session")
            completed = dict(session.completed)

        if auth is None or "type" not in auth:
            if _flow_done(flows, completed):
                return session_id, completed
            raise AuthRequired(flows, session_id, list(completed))

        stage = auth["type"]
        if not isinstance(stage, str):
            raise bad_json("'auth.type' must be a string")
        if not any(stage in f for f in flows):
            raise AuthRequired(flows, session_id, list(completed), errcode=Codes.UNRECOGNIZED, error=f"Unsupported stage {stage}")

        result = await self._attempt(stage, auth, session_id, user_id, server_name, now)
        if result is None:
            raise AuthRequired(flows, session_id, list(completed), errcode=_FAILURE_CODES[stage], error=_FAILURE_TEXT[stage])
        if stage != REGISTRATION_TOKEN:  # that stage records itself with its reservation
            if not await self._store.mark_stage_completed(session_id, stage, result):
                raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired UIA session")
        completed[stage] = result
        if _flow_done(flows, completed):
            return session_id, completed
        raise AuthRequired(flows, session_id, list(completed))

    async def _attempt(
        self, stage: str, auth: dict, session_id: str, user_id: Optional[str], server_name: str, now: int
    ) -> Any:
        """What the stage proved, or None if it failed."""
        if stage == DUMMY:
            return True
        if stage == PASSWORD:
            if user_id is None:
                return None
            password = auth.get("password")
            if not isinstance(password, str):
                raise bad_json("'auth.password' must be a string")
            claimed = _claimed_user(auth, server_name)
            if claimed is not None and claimed.lower() != user_id.lower():
                return None
            return user_id if await self._check_password(user_id, password) else None
        if stage == REGISTRATION_TOKEN:
            token = auth.get("token")
            if not isinstance(token, str):
                raise bad_json("'auth.token' must be a string")
            ok = await self._store.reserve_registration_token(session_id, token, now)
            return token if ok else None
        return None

    async def finish(self, session_id: str) -> None:
        """Forget a session whose operation succeeded."""
        await self._store.delete_uia_session(session_id)


def _claimed_user(auth: dict, server_name: str) -> Optional[str]:
    ident = auth.get("identifier")
    user = None
    if isinstance(ident, dict) and ident.get("type") == "m.id.user":
        user = ident.get("user")
    elif "user" in auth:
        user = auth.get("user")
    if not isinstance(user, str):
        return None
    return user if user.startswith("@") else f"@{user}:{server_name}"


def _flow_done(flows: Sequence[Sequence[str]], completed: dict) -> bool:
    return any(all(s in completed for s in f) for f in flows)


_FAILURE_CODES = {
    PASSWORD: Codes.FORBIDDEN,
    REGISTRATION_TOKEN: Codes.UNAUTHORIZED,
    DUMMY: Codes.FORBIDDEN,
}
_FAILURE_TEXT = {
    PASSWORD: "Invalid password",
    REGISTRATION_TOKEN: "Invalid registration token",
    DUMMY: "Stage failed",
}
