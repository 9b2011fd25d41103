"""Exceptions raised by the bus."""

from __future__ import annotations


class BusError(Exception):
    """Base class of every error raised by the bus."""


class BusUnavailable(BusError):
    """Redis could not be reached, or the connection broke mid-command.

    Retrying later may help; the bus does so itself where it owns a loop
    (subscriptions, group workers, queued publishes).
    """


class MalformedEntry(BusError):
    """A stream entry that does not follow bus/PROTOCOL.md.

    Retrying does not help. Consumers report the entry's position as a gap
    so that the caller re-reads it from PostgreSQL.
    """


class PositionNotIncreasing(BusError):
    """A publish whose position is not above the shard's last entry.

    Raised only when the shard's top entry is *above* the position; an entry
    with exactly the same position is taken to be an earlier attempt of the
    same publish that reached Redis, and the publish counts as done.
    """

    def __init__(self, stream: str, shard: int, position: int, top: int | None):
        super().__init__(
            f"{stream}:{shard}: position {position} is not above the last entry {top}"
        )
        self.stream = stream
        self.shard = shard
        self.position = position
        self.top = top


class PublishDropped(BusError):
    """A queued publish was abandoned (queue overflow or bus closed).

    Nothing is lost for consumers: the next entry published on the shard
    names the dropped position as its ``prev``, so every consumer that needed
    it sees a gap and re-reads PostgreSQL.
    """


class BusClosed(BusError):
    """The bus was closed."""
