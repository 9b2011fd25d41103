"""``/devices``, ``/devices/{deviceId}``, ``/delete_devices``."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register(resource: JsonResource, devices: Any, authenticator: Any) -> None:
    """Mount the device endpoints on ``resource``."""

    async def list_devices(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await devices.list_devices(requester)

    async def get_device(request: Any, deviceId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await devices.get_device(requester, deviceId)

    async def put_device(request: Any, deviceId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = json_body(request)
        await devices.update_device(requester, deviceId, body)
        return 200, {}

    async def delete_device(request: Any, deviceId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request, allow_empty=True)
        await devices.delete_device(requester, deviceId, body)
        return 200, {}

    async def delete_devices(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request)
        await devices.delete_devices_request(requester, body)
        return 200, {}

    route(resource, "GET", paths("/devices"), list_devices, name="devices")
    route(resource, "GET", paths("/devices/{deviceId}"), get_device, name="device_get")
    route(resource, "PUT", paths("/devices/{deviceId}"), put_device, name="device_put")
    route(resource, "DELETE", paths("/devices/{deviceId}"), delete_device, name="device_delete")
    route(resource, "POST", paths("/delete_devices"), delete_devices, name="delete_devices")
