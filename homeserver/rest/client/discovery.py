"""Discovery: ``/versions``, ``/.well-known/matrix/*`` and ``/capabilities``."""

from __future__ import annotations

from typing import Any

from homeserver.errors import not_found
from homeserver.handlers.discovery import client_well_known
from homeserver.http.server import JsonResource
from homeserver.rest.client._common import paths, route

#: Spec versions advertised. The accounts surface of v1.1-v1.16 (refresh
#: tokens 1.3, get_token 1.7, extended profiles 1.16...) is implemented; the
#: lead trims or extends this as the rest of each version lands.
SPEC_VERSIONS: tuple[str, ...] = tuple(f"v1.{n}" for n in range(1, 17))
#: Unstable features (MSCs) implemented and switched on.
UNSTABLE_FEATURES: dict[str, bool] = {}

#: Room versions offered until ``homeserver.core.room_versions`` is merged.
FALLBACK_ROOM_VERSIONS: tuple[str, ...] = tuple(str(v) for v in range(1, 13))
FALLBACK_DEFAULT_ROOM_VERSION = "10"


def room_versions_capability() -> dict[str, Any]:
    """``m.room_versions`` from the room version registry (``homeserver.core.room_versions``)."""
    try:
        from homeserver.core.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
    except ImportError:  # the registry is not merged yet
        return {
            "default": FALLBACK_DEFAULT_ROOM_VERSION,
            "available": {v: "stable" for v in FALLBACK_ROOM_VERSIONS},
        }
    return {
        "default": DEFAULT_ROOM_VERSION.identifier,
        "available": {identifier: "stable" for identifier in KNOWN_ROOM_VERSIONS},
    }


def register(resource: JsonResource, config: Any, sessions_config: Any, authenticator: Any) -> None:
    """Mount the discovery endpoints. ``config`` is an ``AccountsConfig``."""
    wk = config.well_known
    profiles = config.profiles

    async def versions(request: Any) -> tuple[int, Any]:
        return 200, {"versions": list(SPEC_VERSIONS), "unstable_features": dict(UNSTABLE_FEATURES)}

    async def well_known_client(request: Any) -> tuple[int, Any]:
        body = client_well_known(wk)
        if body is None:
            raise not_found("No .well-known/matrix/client configured")
        return 200, body

    async def well_known_server(request: Any) -> tuple[int, Any]:
        if wk.server_delegation is None:
            raise not_found("No .well-known/matrix/server configured")
        return 200, {"m.server": wk.server_delegation}

    async def support(request: Any) -> tuple[int, Any]:
        if not wk.support_contacts:
            raise not_found("No support contacts configured")
        return 200, {"contacts": [dict(c) for c in wk.support_contacts]}

    async def capabilities(request: Any) -> tuple[int, Any]:
        await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.room_versions": room_versions_capability(),
                "m.set_displayname": {"enabled": profiles.allow_set_displayname},
                "m.set_avatar_url": {"enabled": profiles.allow_set_avatar_url},
                "m.3pid_changes": {"enabled": False},
                "m.get_login_token": {"enabled": sessions_config.enable_login_token_request},
                "m.profile_fields": _profile_fields_capability(profiles),
            }
        }

    route(resource, "GET", "/_matrix/client/versions", versions, name="versions")
    route(resource, "GET", "/.well-known/matrix/client", well_known_client, name="well_known_client")
    route(resource, "GET", "/.well-known/matrix/server", well_known_server, name="well_known_server")
    route(resource, "GET", "/.well-known/matrix/support", support, name="well_known_support")
    route(resource, "GET", paths("/capabilities"), capabilities, name="capabilities")


def _profile_fields_capability(profiles: Any) -> dict[str, Any]:
    disallowed = []
    if not profiles.allow_set_displayname:
        disallowed.append("displayname")
    if not profiles.allow_set_avatar_url:
        disallowed.append("avatar_url")
    if not profiles.allow_custom_fields:
        return {"enabled": True, "allowed": [k for k in ("displayname", "avatar_url", "m.tz") if k not in disallowed]}
    out: dict[str, Any] = {"enabled": True}
    if disallowed:
        out["disallowed"] = disallowed
    return out
