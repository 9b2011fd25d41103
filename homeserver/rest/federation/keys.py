"""``/_matrix/key/v2/server`` (our keys) and ``/_matrix/key/v2/query`` (notary).

Spec: server-server-api "Publishing Keys" and "Querying Keys Through Another
Server" (``keys_server.yaml``, ``keys_query.yaml``). Key endpoints are not
authenticated: they are how authentication is bootstrapped.
"""

from __future__ import annotations

from typing import Any

from homeserver.core.ids import is_valid_server_name
from homeserver.errors import bad_json, invalid_param
from homeserver.http.server import JsonResource, parse_json_object, query_int


def register_key_server(resource: JsonResource, keyring: Any) -> None:
    """Mount the key server and notary endpoints, served by ``keyring``
    (:class:`homeserver.federation.keyring.Keyring`)."""

    async def server_keys(request: Any, keyId: str = "") -> tuple[int, Any]:
        # The {keyId} form is deprecated; servers return all keys anyway.
        return 200, keyring.own_keys_response()

    async def query_one(request: Any, serverName: str) -> tuple[int, Any]:
        if not is_valid_server_name(serverName):
            raise invalid_param("Invalid server name")
        minimum = query_int(request, "minimum_valid_until_ts", None, minimum=0)
        keys = await keyring.query_keys_as_notary({serverName: {}}, default_minimum_valid_until_ts=minimum)
        return 200, {"server_keys": keys}

    async def query_many(request: Any) -> tuple[int, Any]:
        body = parse_json_object(request)
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise bad_json("server_keys must be an object")
        query: dict[str, dict[str, Any]] = {}
        for server_name, criteria in wanted.items():
            if not isinstance(criteria, dict):
                raise bad_json(f"server_keys.{server_name} must be an object")
            for key_id, c in criteria.items():
                if not isinstance(c, dict):
                    raise bad_json(f"server_keys.{server_name}.{key_id} must be an object")
            query[server_name] = criteria
        keys = await keyring.query_keys_as_notary(query)
        return 200, {"server_keys": keys}

    resource.register("GET", ["/_matrix/key/v2/server", "/_matrix/key/v2/server/{keyId}"], server_keys, name="key_server")
    resource.register("GET", "/_matrix/key/v2/query/{serverName}", query_one, name="key_query_one")
    resource.register("POST", "/_matrix/key/v2/query", query_many, name="key_query")


def register_version(resource: JsonResource, name: str = "Estuary", version: str = "0.1.0") -> None:
    """Mount ``GET /_matrix/federation/v1/version`` (unauthenticated, per spec)."""

    async def get_version(request: Any) -> tuple[int, Any]:
        return 200, {"server": {"name": name, "version": version}}

    resource.register("GET", "/_matrix/federation/v1/version", get_version, name="federation_version")
