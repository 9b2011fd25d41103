"""The ``X-Matrix`` Authorization header: signing and parsing.

Spec: server-server-api "Request Authentication". The request method, target
(path and query, starting with ``/_matrix``), origin, destination and JSON
body are signed as one JSON object with the JSON signing algorithm; the
signature travels in ``Authorization: X-Matrix origin=...,destination=...,
key=...,sig=...``. Parsing follows RFC 9110 section 11.4 as the spec asks
(case-insensitive names, any order, token or quoted values with backslash
escapes, optional whitespace around commas) plus the compatibility rule
that unquoted values may contain colons.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import attrs
import nacl.signing

from homeserver.core.errors import SignatureVerifyError
from homeserver.core.signing import key_id_of, sign_json, verify_signed_json

SCHEME = "X-Matrix"


@attrs.frozen
class XMatrixAuth:
    """The parameters of one ``X-Matrix`` Authorization header."""

    origin: str
    #: Absent in headers from servers older than spec v1.3.
    destination: Optional[str]
    key_id: str
    signature: str


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object whose signature authenticates a request (step 1 of the spec).

    ``content`` is the JSON-parsed request body; ``None`` means the request
    has no body and leaves ``content`` out.
    """
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sign_request(
    origin: str,
    signing_key: nacl.signing.SigningKey,
    destination: str,
    method: str,
    uri: str,
    content: Any = None,
) -> str:
    """The ``Authorization`` header value for a request from ``origin``.

    Written the way the spec asks senders to for compatibility: one space
    after the scheme, lower-case names, no whitespace around commas, and the
    ``destination`` parameter always present.
    """
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    key_id = key_id_of(signing_key)
    sig = signed["signatures"][origin][key_id]
    return (
        f"{SCHEME} origin={_quote(origin)},destination={_quote(destination)},"
        f"key={_quote(key_id)},sig={_quote(sig)}"
    )


# RFC 9110 token characters; colons are additionally accepted in unquoted
# values (the spec's compatibility rule: older servers wrote origin=host:port).
_TOKEN_CHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_NAME_RE = re.compile(f"[{_TOKEN_CHARS}]+")
_UNQUOTED_VALUE_RE = re.compile(f"[{_TOKEN_CHARS}:]+")
_OWS = " \t"


def parse_authorization_header(value: str) -> XMatrixAuth:
    """Parse an ``X-Matrix`` Authorization header; ValueError if malformed.

    Requires ``origin``, ``key`` and ``sig``; ``destination`` is optional
    (older servers). Unknown parameters are ignored; a parameter given twice
    is refused (which value was signed would be ambiguous).
    """
    scheme, sep, rest = value.partition(" ")
    if not sep or scheme.lower() != SCHEME.lower():
        raise ValueError("not an X-Matrix authorization header")
    params: dict[str, str] = {}
    i = 0
    n = len(rest)
    while True:
        while i < n and rest[i] in _OWS:
            i += 1
        m = _NAME_RE.match(rest, i)
        if m is None:
            raise ValueError("expected a parameter name at offset %d" % i)
        name = m.group(0).lower()
        i = m.end()
        while i < n and rest[i] in _OWS:
            i += 1
        if i >= n or rest[i] != "=":
            raise ValueError("expected '=' after %r" % name)
        i += 1
        while i < n and rest[i] in _OWS:
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted value for %r" % name)
                c = rest[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("dangling escape in value for %r" % name)
                    chars.append(rest[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            param_value = "".join(chars)
        else:
            vm = _UNQUOTED_VALUE_RE.match(rest, i)
            if vm is None:
                raise ValueError("expected a value for %r" % name)
            param_value = vm.group(0)
            i = vm.end()
        if name in params:
            raise ValueError("parameter %r given twice" % name)
        params[name] = param_value
        while i < n and rest[i] in _OWS:
            i += 1
        if i >= n:
            break
        if rest[i] != ",":
            raise ValueError("expected ',' at offset %d" % i)
        i += 1
    for required in ("origin", "key", "sig"):
        if not params.get(required):
            raise ValueError("missing %r parameter" % required)
    return XMatrixAuth(
        origin=params["origin"],
        destination=params.get("destination"),
        key_id=params["key"],
        signature=params["sig"],
    )


def verify_request(
    auth: XMatrixAuth,
    method: str,
    uri: str,
    destination: str,
    content: Any,
    verify_key: nacl.signing.VerifyKey,
) -> None:
    """Check the header's signature over the request; SignatureVerifyError if bad.

    ``destination`` is this server's name: it is what the origin must have
    signed whether or not the header carried the parameter.
    """
    if key_id_of(verify_key) != auth.key_id:
        raise SignatureVerifyError("verify key %s does not match header key %s" % (key_id_of(verify_key), auth.key_id))
    obj = request_json(method, uri, auth.origin, destination, content)
    obj["signatures"] = {auth.origin: {auth.key_id: auth.signature}}
    verify_signed_json(obj, auth.origin, verify_key)


def signed_destination_matches(auth: XMatrixAuth, our_server_name: str) -> bool:
    """Whether the header's ``destination`` (if any) names this server."""
    return auth.destination is None or auth.destination == our_server_name


__all__ = [
    "XMatrixAuth",
    "request_json",
    "sign_request",
    "parse_authorization_header",
    "verify_request",
    "signed_destination_matches",
]

