"""``GET /_matrix/client/v3/admin/whois/{userId}`` (client-server API, "Server Administration").

The spec lets a server restrict it to the user themself or a server admin;
Estuary does exactly that (as Synapse does). The answer is the admin API's
whois (:meth:`homeserver.handlers.admin.AdminUsers.whois`).
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import forbidden
from homeserver.http.server import JsonResource
from homeserver.rest.client._common import paths, route


def register(resource: JsonResource, users: Any, authenticator: Any) -> None:
    """Mount the client API's whois."""

    async def whois(request: Any, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        if not requester.is_admin and requester.user_id != userId:
            raise forbidden("You may only look up yourself unless you are a server admin")
        return 200, await users.whois(userId)

    route(resource, "GET", paths("/admin/whois/{userId}"), whois, name="client_admin_whois")
