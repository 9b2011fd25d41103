"""Helpers shared by the client API servlets: path prefixes and input hygiene.

PostgreSQL cannot store NUL characters (in ``TEXT`` or in ``jsonb``
strings), so every client-supplied string that may reach the database is
checked here once: bodies, path segments and query values containing NUL
are refused with 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM`` instead of
failing later with a 500.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Optional, Union

from homeserver.errors import bad_json, invalid_param
from homeserver.handlers.auth import RequestCredentials
from homeserver.http.server import JsonResource, access_token, client_ip, header, parse_json_object, query_arg

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
#: Versioned paths served under v3 and the legacy r0 prefix alike.
V3_AND_R0 = ("/_matrix/client/v3", "/_matrix/client/r0")


def paths(suffix: str, prefixes: tuple[str, ...] = V3_AND_R0) -> list[str]:
    """``suffix`` under each prefix."""
    return [p + suffix for p in prefixes]


def contains_nul(value: Any) -> bool:
    """Whether a JSON value has a NUL in any string or key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def json_body(request: Any, allow_empty: bool = False) -> dict[str, Any]:
    """The request's JSON object body (``M_NOT_JSON``/``M_BAD_JSON``/``M_TOO_LARGE``), NUL-free."""
    body = parse_json_object(request, allow_empty=allow_empty)
    if contains_nul(body):
        raise bad_json("Strings may not contain NUL characters")
    return body


def query_text(request: Any, name: str) -> Optional[str]:
    """A query parameter, refused if it contains NUL."""
    value = query_arg(request, name)
    if value is not None and "\x00" in value:
        raise invalid_param(f"Query parameter {name!r} may not contain NUL characters")
    return value


def route(resource: JsonResource, method: str, templates: Union[str, Iterable[str]], handler: Any, name: str) -> None:
    """``resource.register`` with path arguments checked for NUL characters."""

    @functools.wraps(handler)
    async def checked(request: Any, **path_args: str) -> Any:
        for key, value in path_args.items():
            if "\x00" in value:
                raise invalid_param(f"Path segment {key!r} may not contain NUL characters")
        return await handler(request, **path_args)

    resource.register(method, templates, checked, name=name)


def request_credentials(request: Any) -> RequestCredentials:
    """The access token, client address and user agent of a request.

    Given to :class:`homeserver.handlers.auth.Authenticator` as its
    ``credentials_of``.
    """
    return RequestCredentials(access_token(request), client_ip(request), header(request, "User-Agent"))
