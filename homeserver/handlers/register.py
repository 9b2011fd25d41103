"""Account registration: open (UIA), guest, and shared-secret (admin bootstrap)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Optional

from homeserver.core.accounts import UserInUse
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, missing_param
from homeserver.handlers.ids import check_localpart_for_registration, localpart_of
from homeserver.handlers.passwords import check_password_policy
from homeserver.handlers.sessions import SessionHandler, generate_device_id, parse_device_fields, parse_refresh_flag
from homeserver.handlers.uia import DUMMY, REGISTRATION_TOKEN, UserInteractiveAuth

MAX_SHARED_SECRET_FIELD = 512


def user_in_use() -> MatrixError:
    """400 ``M_USER_IN_USE``."""
    return MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")


def shared_secret_mac(secret: str, nonce: str, username: str, password: str, admin: bool, user_type: Optional[str] = None) -> str:
    """The HMAC-SHA1 (hex) a shared-secret registration must carry (Synapse's format).

    The message is ``nonce NUL username NUL password NUL ("admin"|"notadmin")``,
    followed by ``NUL user_type`` when a user type is given.
    """
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


class RegistrationHandler:
    """``/register``, ``/register/available``, token validity and shared-secret registration.

    ``config`` is an :class:`homeserver.config.accounts.AccountsConfig`;
    ``store`` the registration store; ``accounts`` the account store.
    """

    def __init__(
        self,
        clock: Any,
        config: Any,
        accounts: Any,
        store: Any,
        uia: UserInteractiveAuth,
        sessions: SessionHandler,
        hasher: Any,
        ratelimiter: Any,
    ) -> None:
        self._clock = clock
        self._config = config
        self._reg = config.registration
        self._server_name = config.server_name
        self._accounts = accounts
        self._store = store
        self._uia = uia
        self._sessions = sessions
        self._hasher = hasher
        self._ratelimiter = ratelimiter

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def flows(self) -> list[list[str]]:
        """The UIA flows that authorise a registration."""
        if self._reg.registration_requires_token:
            return [[REGISTRATION_TOKEN]]
        return [[DUMMY]]

    async def check_username(self, localpart: str) -> str:
        """The user id for ``localpart`` if it is valid and free; raises otherwise."""
        user_id = check_localpart_for_registration(localpart, self._server_name)
        if await self._accounts.is_user_id_taken(user_id):
            raise user_in_use()
        return user_id

    async def is_available(self, username: Optional[str], client_ip: str) -> dict[str, Any]:
        """``GET /register/available``."""
        if not self._reg.enable_registration:
            raise forbidden("Registration has been disabled")
        await self._ratelimiter.check_availability_address(client_ip)
        if username is None:
            raise missing_param("username")
        await self.check_username(username)
        return {"available": True}

    async def register(self, body: dict[str, Any], kind: str, client_ip: str) -> dict[str, Any]:
        """``POST /register``."""
        if kind == "guest":
            return await self._register_guest(body, client_ip)
        if kind != "user":
            raise invalid_param("'kind' must be 'user' or 'guest'")
        if not self._reg.enable_registration:
            raise forbidden("Registration has been disabled")

        username = body.get("username")
        if username is not None and not isinstance(username, str):
            raise bad_json("'username' must be a string")
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise bad_json("'password' must be a string")
        inhibit_login = body.get("inhibit_login", False)
        if not isinstance(inhibit_login, bool):
            raise bad_json("'inhibit_login' must be a boolean")
        device_id, display_name = parse_device_fields(body)
        refreshable = parse_refresh_flag(body)
        await self._ratelimiter.check_registration_address(client_ip, consume=False)

        # Fail early, before any UIA stage is spent, on what is already wrong.
        user_id: Optional[str] = None
        if username is not None:
            user_id = await self.check_username(username.lower())
        if password is not None:
            check_password_policy(password, self._config.password_policy)

        session_id, _ = await self._uia.check("register", self.flows(), body.get("auth"), None, self._server_name)

        if password is None:
            raise missing_param("password")
        await self._ratelimiter.check_registration_address(client_ip)
        if user_id is None:
            user_id = await self._fresh_numeric_user_id(guest=False)
        password_hash = await self._hasher.hash(password)
        return await self._create(
            user_id,
            password_hash,
            inhibit_login=inhibit_login,
            device_id=device_id,
            display_name=display_name,
            refreshable=refreshable,
            uia_session_id=session_id,
        )

    async def _fresh_numeric_user_id(self, guest: bool) -> str:
        localpart = await self._accounts.next_guest_localpart()
        if not guest:
            # Numeric localparts are reserved for guests: prefix the number.
            localpart = "u" + localpart + secrets.token_hex(2)
        return f"@{localpart}:{self._server_name}"

    async def _register_guest(self, body: dict[str, Any], client_ip: str) -> dict[str, Any]:
        if not self._reg.allow_guest_access:
            raise forbidden("Guest access is disabled")
        _, display_name = parse_device_fields(body)
        await self._ratelimiter.check_registration_address(client_ip)
        user_id = await self._fresh_numeric_user_id(guest=True)
        return await self._create(
            user_id, None, is_guest=True, display_name=display_name, refreshable=parse_refresh_flag(body), set_displayname=False
        )

    async def _create(
        self,
        user_id: str,
        password_hash: Optional[str],
        *,
        inhibit_login: bool = False,
        device_id: Optional[str] = None,
        display_name: Optional[str] = None,
        refreshable: bool = False,
        uia_session_id: Optional[str] = None,
        is_guest: bool = False,
        is_admin: bool = False,
        user_type: Optional[str] = None,
        displayname: Optional[str] = None,
        set_displayname: bool = True,
    ) -> dict[str, Any]:
        tokens = None
        if not inhibit_login:
            device_id = device_id or generate_device_id()
            tokens = self._sessions.issue_tokens(refreshable)
        try:
            await self._store.register_user(
                user_id,
                password_hash,
                self._now_ms(),
                is_admin=is_admin,
                is_guest=is_guest,
                user_type=user_type,
                displayname=(displayname or localpart_of(user_id)) if set_displayname else None,
                device_id=device_id,
                initial_device_display_name=display_name,
                tokens=tokens.stored if tokens else None,
                uia_session_id=uia_session_id,
            )
        except UserInUse:
            raise user_in_use()
        out: dict[str, Any] = {"user_id": user_id, "home_server": self._server_name}
        if tokens is not None:
            out["device_id"] = device_id
            out.update(tokens.response_fields())
        return out

    def check_localpart(self, localpart: str) -> str:
        """The user id for ``localpart`` if its grammar allows registration (``M_INVALID_USERNAME``)."""
        return check_localpart_for_registration(localpart, self._server_name)

    async def create_by_admin(
        self, localpart: str, password_hash: Optional[str], is_admin: bool, user_type: Optional[str],
        displayname: Optional[str],
    ) -> str:
        """Create an account without a session (Synapse's admin PUT /v2/users); returns its user id.

        The localpart is checked as for registration (``M_INVALID_USERNAME``,
        ``M_USER_IN_USE``); the display name defaults to the localpart.
        """
        user_id = check_localpart_for_registration(localpart, self._server_name)
        await self._create(
            user_id, password_hash, inhibit_login=True, is_admin=is_admin, user_type=user_type,
            displayname=displayname,
        )
        return user_id

    # -- registration tokens -------------------------------------------------

    async def token_validity(self, token: Optional[str], client_ip: str) -> dict[str, Any]:
        """``GET /register/m.login.registration_token/validity``."""
        if not (self._reg.enable_registration and self._reg.registration_requires_token):
            raise forbidden("Registration tokens are not in use on this server")
        await self._ratelimiter.check_availability_address(client_ip)
        if token is None:
            raise missing_param("token")
        found = await self._store.get_registration_token(token)
        return {"valid": found is not None and found.is_valid(self._now_ms())}

    # -- shared-secret registration --------------------------------------------

    def _require_shared_secret(self) -> str:
        secret = self._reg.registration_shared_secret
        if secret is None:
            raise MatrixError(400, Codes.UNKNOWN, "Shared secret registration is not enabled")
        return secret

    async def new_nonce(self) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/register``: a single-use nonce."""
        self._require_shared_secret()
        nonce = secrets.token_hex(32)
        now = self._now_ms()
        await self._store.add_nonce(nonce, now, now - self._reg.shared_secret_nonce_lifetime_ms)
        return {"nonce": nonce}

    async def register_with_shared_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /_synapse/admin/v1/register``: HMAC-authenticated account creation."""
        secret = self._require_shared_secret()
        fields: dict[str, str] = {}
        for name in ("nonce", "username", "password", "mac"):
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise bad_json(f"'{name}' must be a non-empty string")
            if len(value) > MAX_SHARED_SECRET_FIELD:
                raise bad_json(f"'{name}' is too long")
            fields[name] = value
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise bad_json("'admin' must be a boolean")
        user_type = body.get("user_type")
        if user_type is not None and not isinstance(user_type, str):
            raise bad_json("'user_type' must be a string")
        displayname = body.get("displayname")
        if displayname is not None and not isinstance(displayname, str):
            raise bad_json("'displayname' must be a string")

        now = self._now_ms()
        if not await self._store.consume_nonce(fields["nonce"], now - self._reg.shared_secret_nonce_lifetime_ms):
            raise MatrixError(400, Codes.UNKNOWN, "Unrecognised nonce")
        want = shared_secret_mac(secret, fields["nonce"], fields["username"], fields["password"], admin, user_type)
        if not hmac.compare_digest(want.encode("ascii"), fields["mac"].encode("utf-8", "replace")):
            raise forbidden("HMAC incorrect")

        user_id = await self.check_username(fields["username"].lower())
        check_password_policy(fields["password"], self._config.password_policy)
        password_hash = await self._hasher.hash(fields["password"])
        return await self._create(
            user_id,
            password_hash,
            is_admin=admin,
            user_type=user_type,
            displayname=displayname,
        )
