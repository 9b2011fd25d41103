"""Server ACL evaluation (``m.room.server_acl``).

Spec: event schema ``m.room.server_acl`` and server-server-api "Server Access
Control Lists (ACLs)". Patterns are the appendices' glob-style matching
(``*`` any run of characters, ``?`` exactly one), case-insensitive, applied
to the server name without its port. Evaluation order: no ACL event allows;
an IP literal is denied when ``allow_ip_literals`` is ``false``; ``deny``
matches deny; ``allow`` matches allow; anything else is denied.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping, Optional

import attrs

from homeserver.errors import forbidden


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A compiled, case-insensitive, whole-string regex for a glob pattern."""
    out = []
    for c in pattern:
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


def strip_port(server_name: str) -> str:
    """The host part of a server name (``[::1]:8448`` -> ``[::1]``)."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    return server_name.split(":", 1)[0]


def is_ip_literal(host: str) -> bool:
    """Whether a host (port already stripped) is an IPv4 or bracketed IPv6 literal."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@attrs.frozen
class ServerAcl:
    """A parsed ``m.room.server_acl`` content, ready to evaluate."""

    allow_ip_literals: bool
    allow: tuple[re.Pattern[str], ...]
    deny: tuple[re.Pattern[str], ...]

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> "ServerAcl":
        """Build from event content, with the schema's defaults.

        ``allow_ip_literals`` is true unless it is exactly ``false``;
        ``allow`` and ``deny`` that are not lists count as empty, and their
        non-string entries are ignored (a malformed entry must not make the
        whole ACL fail open or closed differently from other servers).
        """
        allow_ip = content.get("allow_ip_literals", True)
        return cls(
            allow_ip_literals=allow_ip if isinstance(allow_ip, bool) else True,
            allow=_patterns(content.get("allow")),
            deny=_patterns(content.get("deny")),
        )

    def is_allowed(self, server_name: str) -> bool:
        """Whether ``server_name`` may take part in the room."""
        host = strip_port(server_name)
        if not self.allow_ip_literals and is_ip_literal(host):
            return False
        if any(p.match(host) for p in self.deny):
            return False
        return any(p.match(host) for p in self.allow)


def _patterns(value: Any) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(glob_to_regex(v) for v in value if isinstance(v, str))


def server_allowed(acl_content: Optional[Mapping[str, Any]], server_name: str) -> bool:
    """Evaluate a room's ACL for a server; ``None`` (no ACL event) allows."""
    if acl_content is None:
        return True
    return ServerAcl.from_content(acl_content).is_allowed(server_name)


def ensure_server_allowed(acl_content: Optional[Mapping[str, Any]], server_name: str, room_id: str) -> None:
    """Refuse a request from a server the room's ACL denies: 403 ``M_FORBIDDEN``
    (server-server-api "Server Access Control Lists (ACLs)")."""
    if not server_allowed(acl_content, server_name):
        raise forbidden(f"Server {server_name} is denied by the server ACL of {room_id}")
