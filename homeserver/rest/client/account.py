"""``/account/whoami``, ``/account/password``, ``/account/deactivate``."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource, parse_json_object
from homeserver.rest.client._common import paths


def register(resource: JsonResource, account: Any, authenticator: Any) -> None:
    """Mount the account endpoints on ``resource``."""

    async def whoami(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, account.whoami(requester)

    async def password(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request)
        await account.change_password(requester, body)
        return 200, {}

    async def deactivate(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request, allow_empty=True)
        return 200, await account.deactivate(requester, body)

    resource.register("GET", paths("/account/whoami"), whoami, name="whoami")
    resource.register("POST", paths("/account/password"), password, name="account_password")
    resource.register("POST", paths("/account/deactivate"), deactivate, name="account_deactivate")
