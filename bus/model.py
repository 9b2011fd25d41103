"""Value objects delivered by the bus, and the pure gap rule."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from bus.keys import validate_shard, validate_stream_name

# Positions are the millisecond part of explicit Redis Stream IDs
# (``<position>-0``), which Redis stores as an unsigned 64-bit integer.
MAX_POSITION = 2**64 - 1


def validate_position(position: int) -> int:
    """Return ``position`` if it is a publishable position (1 .. 2**64-1)."""
    if (
        not isinstance(position, int)
        or isinstance(position, bool)
        or not 1 <= position <= MAX_POSITION
    ):
        raise ValueError(f"invalid position: {position!r}")
    return position


def _check_stream(instance, attribute, value):
    validate_stream_name(value)


def _check_shard(instance, attribute, value):
    validate_shard(value)


@attrs.frozen
class ShardId:
    """One shard of one stream, e.g. ``ShardId("events", 7)``."""

    stream: str = attrs.field(validator=_check_stream)
    shard: int = attrs.field(validator=_check_shard)

    def __str__(self) -> str:
        return f"{self.stream}:{self.shard}"


@attrs.frozen
class Entry:
    """One fact read from a shard.

    ``position`` is the writer's position (from its PostgreSQL sequence);
    ``prev`` is the position the writer published just before this one on the
    same shard, or ``None`` when the writer did not know it (it had just
    started). ``payload`` is the JSON object the writer published.
    """

    stream: str
    shard: int
    position: int
    prev: int | None
    payload: Mapping[str, Any]

    @property
    def shard_id(self) -> ShardId:
        """The shard this entry was read from."""
        return ShardId(self.stream, self.shard)


# Why a gap was reported.
GAP_MISSED = "missed"  # entries were trimmed, or lost with Redis' data
GAP_UNKNOWN_PREV = "unknown_prev"  # the writer restarted and cannot vouch
GAP_EPOCH = "epoch"  # the shard's epoch key vanished or changed
GAP_MALFORMED = "malformed"  # an entry could not be decoded
GAP_GROUP_RESET = "group_reset"  # a consumer group vanished and was recreated
GAP_CLAIM_DELETED = "claim_deleted"  # a pending entry was trimmed before its ack


@attrs.frozen
class Gap:
    """Entries of a shard that a consumer may have missed.

    Positions in the open interval ``(after, before)`` may have been
    published without being delivered; the caller re-reads them from
    PostgreSQL. ``after`` is ``None`` when the consumer has no position (a
    consumer group); ``before`` is ``None`` when the upper bound is unknown
    (read everything after ``after``). ``reason`` is one of the ``GAP_*``
    constants.
    """

    stream: str
    shard: int
    after: int | None
    before: int | None
    reason: str

    @property
    def shard_id(self) -> ShardId:
        """The shard the gap is on."""
        return ShardId(self.stream, self.shard)


def gap_before(position: int, entry: Entry) -> Gap | None:
    """The gap a consumer at ``position`` must report before ``entry``, if any.

    The writer of a shard publishes in increasing position order and names
    in every entry the position it published (or attempted) just before, so
    no position exists in ``(entry.prev, entry.position)``. A consumer that
    has everything up to ``position`` therefore misses nothing when
    ``entry.prev <= position``. Holes in the numbering (rolled-back
    transactions) are not gaps. Nor is anything when ``entry`` directly
    follows ``position``: no position fits in between.
    """
    if entry.position == position + 1:
        return None
    if entry.prev is None:
        return Gap(entry.stream, entry.shard, position, entry.position, GAP_UNKNOWN_PREV)
    if entry.prev > position:
        return Gap(entry.stream, entry.shard, position, entry.position, GAP_MISSED)
    return None
