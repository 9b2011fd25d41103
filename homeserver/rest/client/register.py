"""``/register``, ``/register/available`` and registration-token validity."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource, client_ip
from homeserver.rest.client._common import V1, json_body, paths, query_text, route


def register(resource: JsonResource, registration: Any) -> None:
    """Mount the registration endpoints on ``resource``."""

    async def post_register(request: Any) -> tuple[int, Any]:
        body = json_body(request)
        kind = query_text(request, "kind") or "user"
        return 200, await registration.register(body, kind, client_ip(request))

    async def available(request: Any) -> tuple[int, Any]:
        return 200, await registration.is_available(query_text(request, "username"), client_ip(request))

    async def token_validity(request: Any) -> tuple[int, Any]:
        return 200, await registration.token_validity(query_text(request, "token"), client_ip(request))

    route(resource, "POST", paths("/register"), post_register, name="register")
    route(resource, "GET", paths("/register/available"), available, name="register_available")
    route(resource, 
        "GET", V1 + "/register/m.login.registration_token/validity", token_validity, name="registration_token_validity"
    )
