"""The one table that says which role serves which URL.

The built-in router (``workers/router.py``) and the generated nginx config
(``workers/nginx.py``) are both made from :data:`ROUTES`, so they cannot
disagree. Rules are tried in order; the first whose pattern matches the
(decoded) path and whose methods include the request's method wins.

Affinity says which instance of the role gets the request:

- ``ANY``: round robin over the healthy instances of the role;
- ``TOKEN``: sticky by access token (``/sync``: a client's long-polls land
  on the instance whose in-memory tail already serves it);
- ``ROOM`` / ``USER``: the path names a room or user in the ``key`` group;
  the request goes to the ``client_writer`` owning that ID's shard of
  ``stream`` (DESIGN.md §4: commands go to the shard owner). When the group
  holds an alias rather than an ID, any instance of the role takes it and
  forwards internally.
"""

from __future__ import annotations

import enum
import re
from typing import Optional

import attrs

from homeserver.config.roles import (
    ADMIN,
    CLIENT_READER,
    CLIENT_WRITER,
    FEDERATION_INBOUND,
    MEDIA,
    SYNC,
)


class Affinity(enum.Enum):
    ANY = "any"
    TOKEN = "token"
    ROOM = "room"
    USER = "user"


@attrs.frozen
class RouteRule:
    """One line of the routing table."""

    name: str
    pattern: str
    role: str
    methods: Optional[frozenset[str]] = None
    affinity: Affinity = Affinity.ANY
    #: The stream whose shard owner takes ROOM / USER requests.
    stream: Optional[str] = None

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)

    def matches(self, method: str, path: str) -> Optional[re.Match[str]]:
        if self.methods is not None and method not in self.methods:
            return None
        return self.regex.match(path)


_cache: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _cache.get(pattern)
    if rx is None:
        rx = _cache[pattern] = re.compile(pattern)
    return rx


_WRITE = frozenset({"PUT", "POST", "DELETE"})
_READ = frozenset({"GET", "HEAD", "OPTIONS"})
_CS = r"^/_matrix/client/(?:r0|v3|unstable|v1)"

ROUTES: tuple[RouteRule, ...] = (
    # Liveness of the deployment as a whole: any client reader answers.
    RouteRule("health", r"^/health$", CLIENT_READER),
    # /sync and the legacy event stream: sticky, served from memory tails.
    RouteRule("sync", _CS + r"/sync$", SYNC, affinity=Affinity.TOKEN),
    RouteRule("sliding_sync", r"^/_matrix/client/unstable/org\.matrix\.simplified_msc3575/sync$", SYNC, affinity=Affinity.TOKEN),
    RouteRule("legacy_events", _CS + r"/(?:events|initialSync)$", SYNC, affinity=Affinity.TOKEN),
    RouteRule("room_initial_sync", _CS + r"/rooms/[^/]+/initialSync$", SYNC, affinity=Affinity.TOKEN),
    # Media.
    RouteRule("media", r"^/_matrix/media/", MEDIA),
    RouteRule("client_media", r"^/_matrix/client/v1/media/", MEDIA),
    # Federation and keys.
    RouteRule("federation", r"^/_matrix/federation/", FEDERATION_INBOUND),
    RouteRule("keys", r"^/_matrix/key/", FEDERATION_INBOUND),
    # Synapse-compatible admin API.
    RouteRule("admin", r"^/_synapse/admin/", ADMIN),
    # Room-scoped writes go to the owner of the room's events shard.
    RouteRule(
        "room_write",
        _CS + r"/rooms/(?P<key>[^/]+)/(?:send|state|redact|invite|join|leave|kick|ban|unban|knock|forget|typing|receipt|read_markers|upgrade|report)(?:/|$)",
        CLIENT_WRITER,
        methods=_WRITE,
        affinity=Affinity.ROOM,
        stream="events",
    ),
    RouteRule("join", _CS + r"/(?:join|knock)/(?P<key>[^/]+)$", CLIENT_WRITER, methods=_WRITE, affinity=Affinity.ROOM, stream="events"),
    # User-scoped writes go to the owner of the user's account data shard.
    RouteRule(
        "user_write",
        _CS + r"/user/(?P<key>[^/]+)/(?:account_data|rooms|filter)(?:/|$)",
        CLIENT_WRITER,
        methods=_WRITE,
        affinity=Affinity.USER,
        stream="account_data",
    ),
    RouteRule("presence_write", _CS + r"/presence/(?P<key>[^/]+)/status$", CLIENT_WRITER, methods=_WRITE, affinity=Affinity.USER, stream="presence"),
    # E2E key queries only read (a POST for its body): any client reader answers.
    RouteRule("keys_query", _CS + r"/keys/query$", CLIENT_READER, methods=frozenset({"POST"})),
    # Everything else: reads to readers, writes to any writer (which forwards
    # to the shard owner when the write is sharded).
    RouteRule("client_read", r"^/_matrix/client/", CLIENT_READER, methods=_READ),
    RouteRule("client_write", r"^/_matrix/client/", CLIENT_WRITER),
    RouteRule("well_known", r"^/\.well-known/matrix/", CLIENT_READER),
)


@attrs.frozen
class RouteMatch:
    rule: RouteRule
    key: Optional[str]


def match_route(method: str, path: str) -> Optional[RouteMatch]:
    """The first rule serving ``method path``, with its affinity key."""
    for rule in ROUTES:
        m = rule.matches(method, path)
        if m is not None:
            key = m.groupdict().get("key")
            return RouteMatch(rule, key)
    return None


def roles_needed() -> frozenset[str]:
    """Every role some route sends requests to."""
    return frozenset(r.role for r in ROUTES)
