"""Search, user directory and reporting endpoints."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, query_text, route


def register_search(resource: JsonResource, search: Any, user_directory: Any, reports: Any, authenticator: Any) -> None:
    """Mount POST /search, POST /user_directory/search and the three report endpoints."""

    async def post_search(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await search.search(requester, json_body(request), query_text(request, "next_batch"))

    async def post_user_search(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await user_directory.search(requester, json_body(request))

    async def report_event(request: Any, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await reports.report_event(requester, roomId, eventId, json_body(request, allow_empty=True))
        return 200, {}

    async def report_room(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await reports.report_room(requester, roomId, json_body(request))
        return 200, {}

    async def report_user(request: Any, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await reports.report_user(requester, userId, json_body(request))
        return 200, {}

    route(resource, "POST", paths("/search"), post_search, name="search")
    route(resource, "POST", paths("/user_directory/search"), post_user_search, name="user_directory_search")
    route(resource, "POST", paths("/rooms/{roomId}/report/{eventId}"), report_event, name="report_event")
    route(resource, "POST", paths("/rooms/{roomId}/report"), report_room, name="report_room")
    route(resource, "POST", paths("/users/{userId}/report"), report_user, name="report_user")
