"""Presence endpoints: PUT/GET /presence/{userId}/status.

Thin: authenticate, call the presence commands (writes, run on the owner of
the user's presence shard) or the reader.
"""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register_presence(resource: JsonResource, commands: Any, reader: Any, authenticator: Any) -> None:
    """Mount the presence status endpoints (``commands``: ``PresenceCommands``; ``reader``: ``PresenceReader``)."""

    async def put_status(request: Any, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await commands.set_status(requester, userId, json_body(request))
        return 200, {}

    async def get_status(request: Any, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await reader.get_status(requester, userId)

    route(resource, "PUT", paths("/presence/{userId}/status"), put_status, name="presence_put")
    route(resource, "GET", paths("/presence/{userId}/status"), get_status, name="presence_get")
