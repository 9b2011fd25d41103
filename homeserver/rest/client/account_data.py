"""Account data, room tags and filters.

Guests may use filters (their /sync needs them) but not account data or
tags (not in the guest access list of the spec).
"""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register(resource: JsonResource, account_data: Any, filters: Any, authenticator: Any) -> None:
    """Mount ``/user/{userId}/...`` account data, tags and filter endpoints."""

    async def put_global(request: Any, userId: str, type: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request)
        await account_data.set_account_data(requester, userId, None, type, body)
        return 200, {}

    async def get_global(request: Any, userId: str, type: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await account_data.get_account_data(requester, userId, None, type)

    async def put_room(request: Any, userId: str, roomId: str, type: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request)
        await account_data.set_account_data(requester, userId, roomId, type, body)
        return 200, {}

    async def get_room(request: Any, userId: str, roomId: str, type: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await account_data.get_account_data(requester, userId, roomId, type)

    async def get_tags(request: Any, userId: str, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await account_data.get_tags(requester, userId, roomId)

    async def put_tag(request: Any, userId: str, roomId: str, tag: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request)
        await account_data.set_tag(requester, userId, roomId, tag, body)
        return 200, {}

    async def delete_tag(request: Any, userId: str, roomId: str, tag: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await account_data.remove_tag(requester, userId, roomId, tag)
        return 200, {}

    async def post_filter(request: Any, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = json_body(request)
        return 200, await filters.create(requester, userId, body)

    async def get_filter(request: Any, userId: str, filterId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await filters.get(requester, userId, filterId)

    route(resource, "PUT", paths("/user/{userId}/account_data/{type}"), put_global, name="account_data_put")
    route(resource, "GET", paths("/user/{userId}/account_data/{type}"), get_global, name="account_data_get")
    route(resource, "PUT", paths("/user/{userId}/rooms/{roomId}/account_data/{type}"), put_room, name="room_account_data_put")
    route(resource, "GET", paths("/user/{userId}/rooms/{roomId}/account_data/{type}"), get_room, name="room_account_data_get")
    route(resource, "GET", paths("/user/{userId}/rooms/{roomId}/tags"), get_tags, name="tags_get")
    route(resource, "PUT", paths("/user/{userId}/rooms/{roomId}/tags/{tag}"), put_tag, name="tag_put")
    route(resource, "DELETE", paths("/user/{userId}/rooms/{roomId}/tags/{tag}"), delete_tag, name="tag_delete")
    route(resource, "POST", paths("/user/{userId}/filter"), post_filter, name="filter_post")
    route(resource, "GET", paths("/user/{userId}/filter/{filterId}"), get_filter, name="filter_get")
