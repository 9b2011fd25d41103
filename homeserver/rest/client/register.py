"""``/register``, ``/register/available`` and registration-token validity."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource, client_ip, parse_json_object, query_arg
from homeserver.rest.client._common import V1, paths


def register(resource: JsonResource, registration: Any) -> None:
    """Mount the registration endpoints on ``resource``."""

    async def post_register(request: Any) -> tuple[int, Any]:
        body = parse_json_object(request)
        kind = query_arg(request, "kind", "user")
        return 200, await registration.register(body, kind, client_ip(request))

    async def available(request: Any) -> tuple[int, Any]:
        return 200, await registration.is_available(query_arg(request, "username"), client_ip(request))

    async def token_validity(request: Any) -> tuple[int, Any]:
        return 200, await registration.token_validity(query_arg(request, "token"), client_ip(request))

    resource.register("POST", paths("/register"), post_register, name="register")
    resource.register("GET", paths("/register/available"), available, name="register_available")
    resource.register(
        "GET", V1 + "/register/m.login.registration_token/validity", token_validity, name="registration_token_validity"
    )
