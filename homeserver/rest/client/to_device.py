"""PUT /sendToDevice/{eventType}/{txnId} (client-server API, "Send-to-Device messaging").

Thin: authenticate, hand the body to the to-device commands.
"""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register_to_device(resource: JsonResource, commands: Any, authenticator: Any) -> None:
    """Mount sendToDevice (``commands``: a ``homeserver.handlers.to_device.ToDeviceCommands``)."""

    async def put_send(request: Any, eventType: str, txnId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await commands.send(requester, eventType, txnId, json_body(request))
        return 200, {}

    route(resource, "PUT", paths("/sendToDevice/{eventType}/{txnId}"), put_send, name="send_to_device")
