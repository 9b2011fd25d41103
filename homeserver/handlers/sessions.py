"""Issuing and ending sessions: login, refresh, logout, login tokens.

A session is a device plus its access token (and refresh token when the
client asked for one). Only SHA-256 digests are stored; clear tokens are
returned once, in the response.
"""

from __future__ import annotations

import logging
import secrets
import string
from typing import Any, Callable, Optional, Sequence

import attrs

from homeserver.core.accounts import NewSession
from homeserver.errors import Codes, MatrixError, bad_json, forbidden
from homeserver.handlers.auth import (
    ACCESS_TOKEN_PREFIX,
    LOGIN_TOKEN_PREFIX,
    REFRESH_TOKEN_PREFIX,
    Authenticator,
    Requester,
    generate_token,
    hash_token,
)
from homeserver.handlers.ids import qualify_user_id
from homeserver.handlers.uia import PASSWORD, UserInteractiveAuth

logger = logging.getLogger(__name__)

LOGIN_TYPE_PASSWORD = "m.login.password"
LOGIN_TYPE_TOKEN = "m.login.token"
MAX_DEVICE_ID_LENGTH = 255
MAX_DEVICE_NAME_LENGTH = 1000


@attrs.frozen
class IssuedTokens:
    """Clear tokens for the client plus what to store."""

    stored: NewSession
    access_token: str
    refresh_token: Optional[str]
    expires_in_ms: Optional[int]

    def response_fields(self) -> dict[str, Any]:
        """``access_token`` and, when set, ``refresh_token`` / ``expires_in_ms``."""
        out: dict[str, Any] = {"access_token": self.access_token}
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
        if self.expires_in_ms is not None:
            out["expires_in_ms"] = self.expires_in_ms
        return out


def generate_device_id() -> str:
    """A new device id: 10 random uppercase letters, as Synapse does."""
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


def parse_device_fields(body: dict[str, Any]) -> tuple[Optional[str], Optional[str]]:
    """``device_id`` and ``initial_device_display_name`` of a login/register body, type-checked."""
    device_id = body.get("device_id")
    if device_id is not None and (not isinstance(device_id, str) or not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH):
        raise bad_json("'device_id' must be a non-empty string of at most 255 characters")
    name = body.get("initial_device_display_name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_DEVICE_NAME_LENGTH):
        raise bad_json("'initial_device_display_name' must be a string of at most 1000 characters")
    return device_id, name


def parse_refresh_flag(body: dict[str, Any]) -> bool:
    """The optional boolean ``refresh_token`` of a login/register body."""
    value = body.get("refresh_token", False)
    if not isinstance(value, bool):
        raise bad_json("'refresh_token' must be a boolean")
    return value


class SessionHandler:
    """Login, refresh, logout and ``/login/get_token``.

    ``accounts`` is the account store, ``hasher`` a
    :class:`homeserver.handlers.passwords.PasswordHasher`, ``ratelimiter`` a
    :class:`homeserver.handlers.ratelimit.RateLimiter`, ``sessions_config``
    the ``sessions`` config section, ``well_known`` the client discovery
    document returned with each login (None: not configured).
    """

    def __init__(
        self,
        clock: Any,
        server_name: str,
        accounts: Any,
        authenticator: Authenticator,
        hasher: Any,
        uia: UserInteractiveAuth,
        ratelimiter: Any,
        sessions_config: Any,
        well_known: Optional[dict[str, Any]] = None,
    ) -> None:
        self._clock = clock
        self._server_name = server_name
        self._accounts = accounts
        self._auth = authenticator
        self._hasher = hasher
        self._uia = uia
        self._ratelimiter = ratelimiter
        self._config = sessions_config
        self._well_known = well_known
        #: Called with ``(user_id, device_ids)`` after a login created (or reused) a device
        #: and after logouts deleted devices (awaited when they return an awaitable).
        self.device_observers: list[Callable[[str, Sequence[str]], Any]] = []

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- tokens ---------------------------------------------------------

    def issue_tokens(self, refreshable: bool) -> IssuedTokens:
        """Fresh access (and optionally refresh) tokens with their expiry."""
        now = self._now_ms()
        access = generate_token(ACCESS_TOKEN_PREFIX)
        if refreshable:
            lifetime: Optional[int] = self._config.refreshable_access_token_lifetime_ms
            refresh: Optional[str] = generate_token(REFRESH_TOKEN_PREFIX)
            rlife = self._config.refresh_token_lifetime_ms
            refresh_expiry = now + rlife if rlife is not None else None
        else:
            lifetime = self._config.nonrefreshable_access_token_lifetime_ms
            refresh = None
            refresh_expiry = None
        stored = NewSession(
            access_token_hash=hash_token(access),
            access_valid_until_ms=now + lifetime if lifetime is not None else None,
            refresh_token_hash=hash_token(refresh) if refresh is not None else None,
            refresh_expiry_ts=refresh_expiry,
        )
        return IssuedTokens(stored, access, refresh, lifetime)

    # -- login --------------------------------------------------------------

    def login_flows(self) -> list[dict[str, Any]]:
        """The flows ``GET /login`` advertises."""
        token_flow: dict[str, Any] = {"type": LOGIN_TYPE_TOKEN}
        if self._config.enable_login_token_request:
            token_flow["get_login_token"] = True
        return [{"type": LOGIN_TYPE_PASSWORD}, token_flow]

    async def login(self, body: dict[str, Any], client_ip: str) -> dict[str, Any]:
        """``POST /login``: check the credentials, create a device and tokens."""
        login_type = body.get("type")
        if not isinstance(login_type, str):
            raise bad_json("'type' must be a string")
        device_id, display_name = parse_device_fields(body)
        refreshable = parse_refresh_flag(body)
        await self._ratelimiter.check_login_address(client_ip)

        if login_type == LOGIN_TYPE_PASSWORD:
            user_id = await self._check_password_login(body)
        elif login_type == LOGIN_TYPE_TOKEN:
            token = body.get("token")
            if not isinstance(token, str):
                raise bad_json("'token' must be a string")
            found = await self._accounts.consume_login_token(hash_token(token), self._now_ms())
            if found is None:
                raise forbidden("Invalid login token")
            user = await self._accounts.get_user(found)
            if user is None or user.deactivated:
                raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
            user_id = found
        else:
            raise MatrixError(400, Codes.UNKNOWN, "Unknown login type")

        if device_id is None:
            device_id = generate_device_id()
        tokens = self.issue_tokens(refreshable)
        await self._accounts.create_session(user_id, device_id, display_name, tokens.stored, self._now_ms())
        # A re-used device_id invalidated that device's previous tokens.
        self._auth.invalidate_user(user_id)
        await self._notify_devices(user_id, [device_id])
        out: dict[str, Any] = {"user_id": user_id, "device_id": device_id, "home_server": self._server_name}
        out.update(tokens.response_fields())
        if self._well_known is not None:
            out["well_known"] = self._well_known
        return out

    async def _check_password_login(self, body: dict[str, Any]) -> str:
        password = body.get("password")
        if not isinstance(password, str):
            raise bad_json("'password' must be a string")
        user = _identifier_user(body)
        qualified = qualify_user_id(user, self._server_name)
        if qualified is None:
            raise forbidden("Invalid username or password")
        account_key = qualified.lower()
        await self._ratelimiter.check_login_account(account_key)
        await self._ratelimiter.check_failed_login(account_key)

        candidates = await self._accounts.get_users_case_insensitive(qualified)
        if len(candidates) > 1:
            # Several accounts differ only by case: only an exact match counts.
            candidates = [u for u in candidates if u.user_id == qualified]
        if len(candidates) != 1:
            await self._hasher.check(password, None)  # same cost as a real check
            await self._ratelimiter.record_failed_login(account_key)
            raise forbidden("Invalid username or password")
        user = candidates[0]
        if user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        if not await self._hasher.check(password, user.password_hash):
            await self._ratelimiter.record_failed_login(account_key)
            raise forbidden("Invalid username or password")
        return user.user_id

    # -- refresh / logout ---------------------------------------------------

    async def refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /refresh``: single-use rotation with reuse detection."""
        token = body.get("refresh_token")
        if not isinstance(token, str):
            raise bad_json("'refresh_token' must be a string")
        tokens = self.issue_tokens(refreshable=True)
        outcome = await self._accounts.rotate_refresh_token(hash_token(token), tokens.stored, self._now_ms())
        if outcome.status == "ok":
            self._auth.invalidate_user(outcome.user_id)
            return tokens.response_fields()
        if outcome.status == "reused":
            logger.warning("Refresh token reuse for %s device %s: session revoked", outcome.user_id, outcome.device_id)
            self._auth.invalidate_user(outcome.user_id)
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Refresh token has already been used", soft_logout=False)
        if outcome.status == "expired":
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Refresh token has expired", soft_logout=True)
        raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown refresh token", soft_logout=False)

    async def logout(self, requester: Requester) -> None:
        """End the requester's session (its device goes too)."""
        device_id = await self._accounts.delete_access_token(requester.access_token_id)
        self._auth.invalidate_user(requester.user_id)
        if device_id is not None:
            await self._notify_devices(requester.user_id, [device_id])

    async def logout_all(self, requester: Requester) -> None:
        """End every session of the requester's account."""
        devices = await self._accounts.delete_all_sessions(requester.user_id)
        self._auth.invalidate_user(requester.user_id)
        if devices:
            await self._notify_devices(requester.user_id, devices)

    async def _notify_devices(self, user_id: str, device_ids: Sequence[str]) -> None:
        from homeserver.handlers.devices import notify_device_observers

        await notify_device_observers(self.device_observers, user_id, device_ids)

    # -- m.login.token --------------------------------------------------------

    async def get_login_token(self, requester: Requester, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /login/get_token``: a short-lived single-use ``m.login.token``, behind UIA."""
        if not self._config.enable_login_token_request:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Login token requests are disabled")
        if requester.is_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests cannot request login tokens")
        session_id, _ = await self._uia.check(
            "get_login_token", [[PASSWORD]], body.get("auth"), requester.user_id, self._server_name
        )
        token = generate_token(LOGIN_TOKEN_PREFIX)
        now = self._now_ms()
        lifetime = self._config.login_token_lifetime_ms
        await self._accounts.add_login_token(hash_token(token), requester.user_id, now, now + lifetime)
        await self._uia.finish(session_id)
        return {"login_token": token, "expires_in_ms": lifetime}


def _identifier_user(body: dict[str, Any]) -> str:
    """The user named by ``identifier`` (``m.id.user``) or the legacy ``user``."""
    ident = body.get("identifier")
    if ident is not None:
        if not isinstance(ident, dict) or not isinstance(ident.get("type"), str):
            raise bad_json("'identifier' must be an object with a string 'type'")
        if ident["type"] != "m.id.user":
            # No third-party identifiers are bound on this server.
            raise forbidden("Invalid username or password")
        user = ident.get("user")
    else:
        user = body.get("user")
    if not isinstance(user, str):
        raise bad_json("'identifier.user' must be a string")
    return user
