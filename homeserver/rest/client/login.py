"""``/login``, ``/refresh``, ``/logout``, ``/logout/all``, ``/login/get_token``."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource, client_ip
from homeserver.rest.client._common import V1, json_body, paths, route


def register(resource: JsonResource, sessions: Any, authenticator: Any) -> None:
    """Mount the session endpoints on ``resource``."""

    async def get_login(request: Any) -> tuple[int, Any]:
        return 200, {"flows": sessions.login_flows()}

    async def post_login(request: Any) -> tuple[int, Any]:
        body = json_body(request)
        return 200, await sessions.login(body, client_ip(request))

    async def refresh(request: Any) -> tuple[int, Any]:
        body = json_body(request)
        return 200, await sessions.refresh(body)

    async def logout(request: Any) -> tuple[int, Any]:
        # An expired token may still end its own session.
        requester = await authenticator.get_user_by_req(request, allow_guest=True, allow_expired=True)
        await sessions.logout(requester)
        return 200, {}

    async def logout_all(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True, allow_expired=True)
        await sessions.logout_all(requester)
        return 200, {}

    async def get_token(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request, allow_empty=True)
        return 200, await sessions.get_login_token(requester, body)

    route(resource, "GET", paths("/login"), get_login, name="login_flows")
    route(resource, "POST", paths("/login"), post_login, name="login")
    route(resource, "POST", paths("/refresh"), refresh, name="refresh")
    route(resource, "POST", paths("/logout"), logout, name="logout")
    route(resource, "POST", paths("/logout/all"), logout_all, name="logout_all")
    route(resource, "POST", V1 + "/login/get_token", get_token, name="login_get_token")
