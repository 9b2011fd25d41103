"""``/keys/upload``, ``/keys/query``, ``/keys/claim``, ``/keys/changes``,
``/keys/device_signing/upload``, ``/keys/signatures/upload`` (client-server
API, "End-to-End Encryption"). Thin: authenticate, hand the body to the
:class:`homeserver.handlers.e2e_keys.E2EKeysHandler`.
"""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource
from homeserver.rest.client._common import json_body, paths, query_text, route


def register_keys(resource: JsonResource, keys: Any, authenticator: Any) -> None:
    """Mount the key endpoints."""

    async def upload(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await keys.upload(requester, json_body(request))

    async def upload_for_device(request: Any, deviceId: str) -> tuple[int, Any]:
        # The deprecated r0 form names the device in the path; it must be the requester's.
        requester = await authenticator.get_user_by_req(request)
        if deviceId != requester.device_id:
            from homeserver.errors import invalid_param

            raise invalid_param("The device in the path is not the requesting device")
        return 200, await keys.upload(requester, json_body(request))

    async def query(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await keys.query(requester, json_body(request))

    async def claim(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await keys.claim(requester, json_body(request))

    async def changes(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await keys.changes(requester, query_text(request, "from"), query_text(request, "to"))

    async def device_signing(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        await keys.upload_device_signing(requester, json_body(request))
        return 200, {}

    async def signatures(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await keys.upload_signatures(requester, json_body(request))

    route(resource, "POST", paths("/keys/upload"), upload, name="keys_upload")
    route(resource, "POST", paths("/keys/upload/{deviceId}"), upload_for_device, name="keys_upload_device")
    route(resource, "POST", paths("/keys/query"), query, name="keys_query")
    route(resource, "POST", paths("/keys/claim"), claim, name="keys_claim")
    route(resource, "GET", paths("/keys/changes"), changes, name="keys_changes")
    route(resource, "POST", paths("/keys/device_signing/upload", ("/_matrix/client/v3", "/_matrix/client/unstable")),
          device_signing, name="keys_device_signing")
    route(resource, "POST", paths("/keys/signatures/upload", ("/_matrix/client/v3", "/_matrix/client/unstable")),
          signatures, name="keys_signatures")
