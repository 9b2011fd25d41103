"""Synapse-compatible admin endpoints of the accounts area.

``/_synapse/admin/v1/register`` (shared-secret registration, for operators
bootstrapping admins) and ``/_synapse/admin/v1/registration_tokens``.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import invalid_param
from homeserver.handlers.auth import require_admin
from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, query_text, route

ADMIN_V1 = "/_synapse/admin/v1"


def register(resource: JsonResource, registration: Any, token_admin: Any, authenticator: Any) -> None:
    """Mount the admin registration endpoints on ``resource``."""

    async def get_nonce(request: Any) -> tuple[int, Any]:
        return 200, await registration.new_nonce()

    async def post_register(request: Any) -> tuple[int, Any]:
        body = json_body(request)
        return 200, await registration.register_with_shared_secret(body)

    async def list_tokens(request: Any) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        valid = query_text(request, "valid")
        if valid not in (None, "true", "false"):
            raise invalid_param("'valid' must be true or false")
        return 200, await token_admin.list(None if valid is None else valid == "true")

    async def new_token(request: Any) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await token_admin.create(json_body(request, allow_empty=True))

    async def get_token(request: Any, token: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await token_admin.get(token)

    async def put_token(request: Any, token: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await token_admin.update(token, json_body(request))

    async def delete_token(request: Any, token: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await token_admin.delete(token)

    route(resource, "GET", ADMIN_V1 + "/register", get_nonce, name="admin_register_nonce")
    route(resource, "POST", ADMIN_V1 + "/register", post_register, name="admin_register")
    route(resource, "GET", ADMIN_V1 + "/registration_tokens", list_tokens, name="admin_registration_tokens")
    route(resource, "POST", ADMIN_V1 + "/registration_tokens/new", new_token, name="admin_registration_token_new")
    route(resource, "GET", ADMIN_V1 + "/registration_tokens/{token}", get_token, name="admin_registration_token_get")
    route(resource, "PUT", ADMIN_V1 + "/registration_tokens/{token}", put_token, name="admin_registration_token_put")
    route(resource, "DELETE", ADMIN_V1 + "/registration_tokens/{token}", delete_token, name="admin_registration_token_delete")
