"""``/profile/{userId}`` and ``/profile/{userId}/{keyName}``."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register(resource: JsonResource, profiles: Any, authenticator: Any, require_auth: bool) -> None:
    """Mount the profile endpoints; ``require_auth`` guards the reads."""

    async def get_profile(request: Any, userId: str) -> tuple[int, Any]:
        if require_auth:
            await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await profiles.get_profile(userId)

    async def get_field(request: Any, userId: str, keyName: str) -> tuple[int, Any]:
        if require_auth:
            await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await profiles.get_field(userId, keyName)

    async def put_field(request: Any, userId: str, keyName: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = json_body(request)
        await profiles.set_field(requester, userId, keyName, body)
        return 200, {}

    async def delete_field(request: Any, userId: str, keyName: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        await profiles.delete_field(requester, userId, keyName)
        return 200, {}

    route(resource, "GET", paths("/profile/{userId}"), get_profile, name="profile")
    route(resource, "GET", paths("/profile/{userId}/{keyName}"), get_field, name="profile_field_get")
    route(resource, "PUT", paths("/profile/{userId}/{keyName}"), put_field, name="profile_field_put")
    route(resource, "DELETE", paths("/profile/{userId}/{keyName}"), delete_field, name="profile_field_delete")
