"""Room aliases and the published room directory (client-server API "Room discovery", "Room aliases")."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource, query_int
from homeserver.rest.client._common import json_body, paths, query_text, route


def register_directory(resource: JsonResource, directory: Any, authenticator: Any) -> None:
    """Mount the alias and room directory endpoints; ``directory`` is a DirectoryHandler."""

    async def put_alias(request: Any, roomAlias: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await directory.create_alias(requester, roomAlias, json_body(request))
        return 200, {}

    async def get_alias(request: Any, roomAlias: str) -> tuple[int, Any]:
        return 200, await directory.resolve_alias(roomAlias)

    async def delete_alias(request: Any, roomAlias: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await directory.delete_alias(requester, roomAlias)
        return 200, {}

    async def room_aliases(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await directory.room_aliases(requester, roomId)

    async def get_visibility(request: Any, roomId: str) -> tuple[int, Any]:
        return 200, await directory.get_visibility(roomId)

    async def put_visibility(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request)
        await directory.set_visibility(requester, roomId, body.get("visibility"))
        return 200, {}

    async def get_public_rooms(request: Any) -> tuple[int, Any]:
        return 200, await directory.public_rooms(
            query_text(request, "server"), query_int(request, "limit", None, minimum=0), query_text(request, "since"),
        )

    async def post_public_rooms(request: Any) -> tuple[int, Any]:
        await authenticator.get_user_by_req(request)
        body = json_body(request, allow_empty=True)
        return 200, await directory.public_rooms(
            query_text(request, "server"), body.get("limit"), body.get("since"), body.get("filter"),
            body.get("third_party_instance_id"),
        )

    route(resource, "PUT", paths("/directory/room/{roomAlias}"), put_alias, name="directory_alias_put")
    route(resource, "GET", paths("/directory/room/{roomAlias}"), get_alias, name="directory_alias_get")
    route(resource, "DELETE", paths("/directory/room/{roomAlias}"), delete_alias, name="directory_alias_delete")
    route(resource, "GET", paths("/rooms/{roomId}/aliases"), room_aliases, name="room_aliases")
    route(resource, "GET", paths("/directory/list/room/{roomId}"), get_visibility, name="directory_visibility_get")
    route(resource, "PUT", paths("/directory/list/room/{roomId}"), put_visibility, name="directory_visibility_put")
    route(resource, "GET", paths("/publicRooms"), get_public_rooms, name="public_rooms")
    route(resource, "POST", paths("/publicRooms"), post_public_rooms, name="public_rooms_filtered")
