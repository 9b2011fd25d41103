"""``POST /user/{userId}/openid/request_token`` (client-server API "OpenID")."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register(resource: JsonResource, openid: Any, authenticator: Any) -> None:
    """Mount the token request; ``openid`` is a :class:`homeserver.handlers.openid.OpenIdHandler`."""

    async def request_token(request: Any, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        json_body(request)  # the spec's body is an empty object, reserved for later
        return 200, await openid.request_token(requester, userId)

    route(resource, "POST", paths("/user/{userId}/openid/request_token"), request_token, name="openid_request_token")
