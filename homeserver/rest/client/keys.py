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
        # Guests may take part in encrypted rooms (Synapse lets them upload keys too).
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
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


def register_key_backup(resource: JsonResource, backup: Any, authenticator: Any) -> None:
    """Mount ``/room_keys/version[/{version}]`` and ``/room_keys/keys[/{roomId}[/{sessionId}]]``
    (``backup``: a ``homeserver.handlers.key_backup.KeyBackupHandler``)."""

    async def create_version(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await backup.create_version(requester, json_body(request))

    async def current_version(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await backup.get_version(requester, None)

    async def get_version(request: Any, version: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await backup.get_version(requester, version)

    async def put_version(request: Any, version: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await backup.update_version(requester, version, json_body(request))

    async def delete_version(request: Any, version: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await backup.delete_version(requester, version)

    def keys_route(method: str, suffix: str, name: str) -> None:
        async def handler(request: Any, roomId: Any = None, sessionId: Any = None) -> tuple[int, Any]:
            requester = await authenticator.get_user_by_req(request)
            version = query_text(request, "version")
            if method == "PUT":
                return 200, await backup.put_keys(requester, version, json_body(request), roomId, sessionId)
            if method == "GET":
                return 200, await backup.get_keys(requester, version, roomId, sessionId)
            return 200, await backup.delete_keys(requester, version, roomId, sessionId)

        route(resource, method, paths(suffix), handler, name=name)

    route(resource, "POST", paths("/room_keys/version"), create_version, name="room_keys_version_create")
    route(resource, "GET", paths("/room_keys/version"), current_version, name="room_keys_version_current")
    route(resource, "GET", paths("/room_keys/version/{version}"), get_version, name="room_keys_version_get")
    route(resource, "PUT", paths("/room_keys/version/{version}"), put_version, name="room_keys_version_put")
    route(resource, "DELETE", paths("/room_keys/version/{version}"), delete_version, name="room_keys_version_delete")
    for method in ("PUT", "GET", "DELETE"):
        keys_route(method, "/room_keys/keys", f"room_keys_{method.lower()}_all")
        keys_route(method, "/room_keys/keys/{roomId}", f"room_keys_{method.lower()}_room")
        keys_route(method, "/room_keys/keys/{roomId}/{sessionId}", f"room_keys_{method.lower()}_session")
