"""Redis key names for streams, shards and their companion keys.

Every key that belongs to one shard carries the same Redis Cluster hash tag,
``{<stream>:<shard>}``, so all operations on a shard stay in one hash slot.
"""

from __future__ import annotations

import re

DEFAULT_NAMESPACE = "estuary"

_STREAM_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def validate_stream_name(stream: str) -> str:
    """Return ``stream`` if it is a valid stream name, else raise ``ValueError``.

    Stream names are short lowercase identifiers (``events``, ``to_device``):
    they are embedded in key names and hash tags, so braces, colons and
    whitespace are refused.
    """
    if not isinstance(stream, str) or not _STREAM_NAME.match(stream):
        raise ValueError(f"invalid stream name: {stream!r}")
    return stream


def validate_shard(shard: int) -> int:
    """Return ``shard`` if it is a valid shard number (an int >= 0)."""
    if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
        raise ValueError(f"invalid shard number: {shard!r}")
    return shard


def validate_group_name(name: str) -> str:
    """Return ``name`` if usable as a consumer group or consumer name."""
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise ValueError(f"invalid group or consumer name: {name!r}")
    return name


def hash_tag(stream: str, shard: int) -> str:
    """The hash tag shared by every key of one shard: ``{events:7}``."""
    return "{%s:%d}" % (validate_stream_name(stream), validate_shard(shard))


def stream_key(stream: str, shard: int, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The Redis Stream key of one shard: ``estuary:{events:7}``."""
    return f"{namespace}:{hash_tag(stream, shard)}"


def epoch_key(stream: str, shard: int, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The epoch key of one shard: ``estuary:{events:7}:epoch``.

    It holds a random token; when it vanishes or changes, the shard's data in
    Redis was lost (restart without persistence, FLUSHALL, failover) and every
    consumer of the shard must catch up from PostgreSQL.
    """
    return f"{stream_key(stream, shard, namespace)}:epoch"


def marks_key(scope: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The key of one scope's write marks: ``estuary:marks:{@alice:example.org}``.

    The scope (e.g. a user ID) is its own hash tag, so a scope's marks live
    in one slot whatever its characters; braces are refused.
    """
    if not isinstance(scope, str) or not scope or "{" in scope or "}" in scope:
        raise ValueError(f"invalid marks scope: {scope!r}")
    return f"{namespace}:marks:{{{scope}}}"
