"""Device management: list, inspect, rename, delete (behind UIA).

``observers`` are called with ``(user_id, device_ids)`` after devices are
deleted or renamed; the E2E keys handler hooks in there to publish
``device_lists`` facts (and drop the keys of deleted devices).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Optional, Sequence

from homeserver.errors import bad_json, not_found
from homeserver.handlers.auth import Authenticator, Requester
from homeserver.handlers.sessions import MAX_DEVICE_NAME_LENGTH
from homeserver.handlers.uia import PASSWORD, UserInteractiveAuth

MAX_DEVICES_PER_REQUEST = 1000

logger = logging.getLogger(__name__)


async def notify_device_observers(observers: Sequence[Callable[[str, Sequence[str]], Any]], user_id: str,
                                  device_ids: Sequence[str]) -> None:
    """Call each observer with ``(user_id, device_ids)``, awaiting those that return an awaitable.

    The device change has committed already: an observer's failure is logged,
    not raised to the client (whose request did succeed).
    """
    for observer in list(observers):
        try:
            result = observer(user_id, list(device_ids))
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("device observer failed for %s %s", user_id, list(device_ids))


def device_json(device: Any) -> dict[str, Any]:
    """A device as the client API shows it (absent values are left out)."""
    out: dict[str, Any] = {"device_id": device.device_id}
    if device.display_name is not None:
        out["display_name"] = device.display_name
    if device.last_seen_ip is not None:
        out["last_seen_ip"] = device.last_seen_ip
    if device.last_seen_ts is not None:
        out["last_seen_ts"] = device.last_seen_ts
    return out


class DeviceHandler:
    """Devices of the requesting user."""

    def __init__(self, server_name: str, accounts: Any, authenticator: Authenticator, uia: UserInteractiveAuth) -> None:
        self._server_name = server_name
        self._accounts = accounts
        self._auth = authenticator
        self._uia = uia
        self.observers: list[Callable[[str, Sequence[str]], Any]] = []

    async def _notify(self, user_id: str, device_ids: Sequence[str]) -> None:
        await notify_device_observers(self.observers, user_id, device_ids)

    async def list_devices(self, requester: Requester) -> dict[str, Any]:
        """``GET /devices``."""
        devices = await self._accounts.get_devices(requester.user_id)
        return {"devices": [device_json(d) for d in devices]}

    async def get_device(self, requester: Requester, device_id: str) -> dict[str, Any]:
        """``GET /devices/{deviceId}``."""
        device = await self._accounts.get_device(requester.user_id, device_id)
        if device is None:
            raise not_found("Device not found")
        return device_json(device)

    async def update_device(self, requester: Requester, device_id: str, body: dict[str, Any]) -> None:
        """``PUT /devices/{deviceId}``: only ``display_name`` may change."""
        await self.rename_device(requester.user_id, device_id, body)

    async def rename_device(self, user_id: str, device_id: str, body: dict[str, Any]) -> None:
        """Apply a ``PUT /devices/{deviceId}`` body to one of ``user_id``'s devices (also the admin API's)."""
        name = body.get("display_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_DEVICE_NAME_LENGTH):
            raise bad_json("'display_name' must be a string of at most 1000 characters")
        if "display_name" not in body:
            # Nothing to change; the device must still exist.
            if await self._accounts.get_device(user_id, device_id) is None:
                raise not_found("Device not found")
            return
        if not await self._accounts.update_device_display_name(user_id, device_id, name):
            raise not_found("Device not found")
        await self._notify(user_id, [device_id])

    async def delete_devices(self, requester: Requester, device_ids: Sequence[str], auth: Any) -> None:
        """Delete devices (and their tokens) after UIA with the account's password."""
        session_id, _ = await self._uia.check(
            "delete_devices", [[PASSWORD]], auth, requester.user_id, self._server_name,
            params={"devices": sorted(set(device_ids))},
        )
        await self.remove_devices(requester.user_id, device_ids)
        await self._uia.finish(session_id)

    async def remove_devices(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Delete devices and their tokens without UIA (after it, or for an admin).

        The tokens' cache entries go here and, over the ``caches`` stream, on
        every other process; the observers hear of the deleted devices.
        """
        await self._accounts.delete_devices(user_id, device_ids)
        self._auth.invalidate_user(user_id)
        await self._notify(user_id, device_ids)

    async def delete_device(self, requester: Requester, device_id: str, body: Optional[dict[str, Any]]) -> None:
        """``DELETE /devices/{deviceId}``: 404 for an unknown device, before any UIA."""
        if await self._accounts.get_device(requester.user_id, device_id) is None:
            raise not_found("Device not found")
        await self.delete_devices(requester, [device_id], (body or {}).get("auth"))

    async def delete_devices_request(self, requester: Requester, body: dict[str, Any]) -> None:
        """``POST /delete_devices``."""
        devices = body.get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json("'devices' must be a list of strings")
        if len(devices) > MAX_DEVICES_PER_REQUEST:
            raise bad_json(f"At most {MAX_DEVICES_PER_REQUEST} devices per request")
        await self.delete_devices(requester, devices, body.get("auth"))
