"""``/account/whoami``, ``/account/password``, ``/account/deactivate``, ``/account/3pid``."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, route


def register(resource: JsonResource, account: Any, authenticator: Any) -> None:
    """Mount the account endpoints on ``resource``."""

    async def whoami(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, account.whoami(requester)

    async def password(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request)
        await account.change_password(requester, body)
        return 200, {}

    async def deactivate(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = json_body(request, allow_empty=True)
        return 200, await account.deactivate(requester, body)

    async def threepids(request: Any) -> tuple[int, Any]:
        # Third-party identifiers are not supported (m.3pid_changes is off),
        # so an account never has any.
        await authenticator.get_user_by_req(request)
        return 200, {"threepids": []}

    route(resource, "GET", paths("/account/whoami"), whoami, name="whoami")
    route(resource, "GET", paths("/account/3pid"), threepids, name="account_3pid")
    route(resource, "POST", paths("/account/password"), password, name="account_password")
    route(resource, "POST", paths("/account/deactivate"), deactivate, name="account_deactivate")
