"""Relations and threads endpoints (client-server API, "Event relationships", "Threading")."""

from __future__ import annotations

from typing import Any, Optional

from homeserver.errors import invalid_param
from homeserver.http.server import JsonResource, query_int
from homeserver.rest.client._common import V1, paths, query_text, route


def register_relations(resource: JsonResource, relations: Any, authenticator: Any) -> None:
    """Mount ``/relations`` and ``/threads`` (v1) on ``resource``; ``relations`` is a RelationsHandler."""

    async def get_relations(request: Any, roomId: str, eventId: str, relType: Optional[str] = None,
                            eventType: Optional[str] = None) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        recurse = query_text(request, "recurse") or "false"
        if recurse not in ("true", "false"):
            raise invalid_param("recurse must be true or false")
        return 200, await relations.relations(
            requester, roomId, eventId, relType, eventType, query_text(request, "from"), query_text(request, "to"),
            query_text(request, "dir") or "b", query_int(request, "limit", None, minimum=0), recurse == "true",
        )

    async def get_threads(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await relations.threads(
            requester, roomId, query_text(request, "include") or "all", query_text(request, "from"),
            query_int(request, "limit", None, minimum=1),
        )

    base = "/rooms/{roomId}/relations/{eventId}"
    route(resource, "GET", paths(base + "/{relType}/{eventType}", (V1,)), get_relations, name="room_relations")
    route(resource, "GET", paths(base + "/{relType}", (V1,)), get_relations, name="room_relations")
    route(resource, "GET", paths(base, (V1,)), get_relations, name="room_relations")
    route(resource, "GET", paths("/rooms/{roomId}/threads", (V1,)), get_threads, name="room_threads")
