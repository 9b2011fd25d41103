"""Password change, deactivation and ``whoami``."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from homeserver.errors import Codes, MatrixError, bad_json
from homeserver.handlers.auth import Authenticator, Requester
from homeserver.handlers.passwords import check_password_policy
from homeserver.handlers.uia import PASSWORD, UserInteractiveAuth


class AccountHandler:
    """Operations on the requester's own account.

    ``deactivation_observers`` are called with ``(user_id, erase)`` after an
    account is deactivated: the rooms issue hooks leaving every joined room
    there (and redaction-for-erasure).
    """

    def __init__(
        self,
        server_name: str,
        accounts: Any,
        authenticator: Authenticator,
        uia: UserInteractiveAuth,
        hasher: Any,
        password_policy: Any,
    ) -> None:
        self._server_name = server_name
        self._accounts = accounts
        self._auth = authenticator
        self._uia = uia
        self._hasher = hasher
        self._policy = password_policy
        self.deactivation_observers: list[Callable[[str, bool], None]] = []
        #: Called with (user_id, device_ids) when devices go away with a password change.
        self.device_observers: list[Callable[[str, Sequence[str]], None]] = []

    @staticmethod
    def whoami(requester: Requester) -> dict[str, Any]:
        """``GET /account/whoami``."""
        out: dict[str, Any] = {"user_id": requester.user_id, "is_guest": requester.is_guest}
        if requester.device_id is not None:
            out["device_id"] = requester.device_id
        return out

    async def change_password(self, requester: Requester, body: dict[str, Any]) -> None:
        """``POST /account/password``: UIA with the old password, then the new hash."""
        new_password = body.get("new_password")
        if not isinstance(new_password, str):
            raise bad_json("'new_password' must be a string")
        logout_devices = body.get("logout_devices", True)
        if not isinstance(logout_devices, bool):
            raise bad_json("'logout_devices' must be a boolean")
        if requester.is_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests cannot set a password")
        check_password_policy(new_password, self._policy)
        session_id, _ = await self._uia.check(
            "change_password", [[PASSWORD]], body.get("auth"), requester.user_id, self._server_name
        )
        await self.set_password(requester.user_id, new_password, logout_devices, keep_device_id=requester.device_id)
        await self._uia.finish(session_id)

    async def set_password(
        self, user_id: str, new_password: str, logout_devices: bool, keep_device_id: Optional[str] = None
    ) -> None:
        """Check the policy, store the new hash, log out the other devices if asked.

        Shared by ``/account/password`` (after UIA) and the admin API; every
        cached token of the user is dropped here and, over the ``caches``
        stream, on every other process.
        """
        await self.store_password_hash(user_id, await self.hash_new_password(new_password), logout_devices, keep_device_id)

    async def store_password_hash(
        self, user_id: str, password_hash: str, logout_devices: bool, keep_device_id: Optional[str] = None
    ) -> None:
        """Second half of :meth:`set_password`, for callers that hashed (and so checked) first."""
        removed = await self._accounts.set_password_hash(user_id, password_hash, keep_device_id, logout_devices)
        self._auth.invalidate_user(user_id)
        if removed:
            from homeserver.handlers.devices import notify_device_observers

            await notify_device_observers(self.device_observers, user_id, removed)

    async def hash_new_password(self, new_password: str) -> str:
        """The bcrypt hash of a new password that meets the policy (``M_WEAK_PASSWORD`` otherwise)."""
        check_password_policy(new_password, self._policy)
        return await self._hasher.hash(new_password)

    async def deactivate(self, requester: Requester, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /account/deactivate``: UIA, then log out everywhere and lock the account."""
        erase = body.get("erase", False)
        if not isinstance(erase, bool):
            raise bad_json("'erase' must be a boolean")
        id_server = body.get("id_server")
        if id_server is not None and not isinstance(id_server, str):
            raise bad_json("'id_server' must be a string")
        if requester.is_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests cannot deactivate their account")
        session_id, _ = await self._uia.check(
            "deactivate", [[PASSWORD]], body.get("auth"), requester.user_id, self._server_name
        )
        await self.deactivate_user(requester.user_id, erase)
        await self._uia.finish(session_id)
        # No third-party identifiers are ever bound here, so none were unbound.
        return {"id_server_unbind_result": "no-support"}

    async def deactivate_user(self, user_id: str, erase: bool) -> None:
        """Lock the account, drop its password, devices and tokens (and profile with ``erase``).

        Shared by ``/account/deactivate`` (after UIA) and the admin API; the
        observers then run (leaving rooms, device-list updates).
        """
        removed = await self._accounts.deactivate_user(user_id, erase)
        self._auth.invalidate_user(user_id)
        for observer in list(self.deactivation_observers):
            observer(user_id, erase)
        if removed:
            from homeserver.handlers.devices import notify_device_observers

            await notify_device_observers(self.device_observers, user_id, removed)
