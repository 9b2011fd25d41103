"""Estuary's message bus: sharded Redis Streams with gap detection.

Knows nothing of Matrix. The wire format is documented in bus/PROTOCOL.md.
Public interface:

- ``Bus.from_url(url, clock, ...)`` / ``MemoryBus(clock, broker=None, ...)``
- ``Bus.publish(stream, shard, position, payload)``, ``Bus.resume_writer(stream, shard, last)``
- ``Bus.subscribe({ShardId: position}, on_entry, on_gap)`` -> ``Subscription``
- ``Bus.consume_group(shards, group, consumer, handler, on_gap)`` -> ``GroupWorker``
- ``Bus.ping()``, ``Bus.connect()``, ``Bus.close()``
"""

from bus.backoff import Backoff
from bus.bus import Bus, GroupWorker, Subscription
from bus.codec import from_fields, to_fields
from bus.errors import (
    BusClosed,
    BusError,
    BusUnavailable,
    MalformedEntry,
    PositionNotIncreasing,
    PublishDropped,
)
from bus.keys import epoch_key, hash_tag, stream_key
from bus.memory import MemoryBroker, MemoryBus
from bus.model import (
    GAP_CLAIM_DELETED,
    GAP_EPOCH,
    GAP_GROUP_RESET,
    GAP_MALFORMED,
    GAP_MISSED,
    GAP_UNKNOWN_PREV,
    Entry,
    Gap,
    ShardId,
)

__all__ = [
    "Backoff",
    "Bus",
    "BusClosed",
    "BusError",
    "BusUnavailable",
    "Entry",
    "GAP_CLAIM_DELETED",
    "GAP_EPOCH",
    "GAP_GROUP_RESET",
    "GAP_MALFORMED",
    "GAP_MISSED",
    "GAP_UNKNOWN_PREV",
    "Gap",
    "GroupWorker",
    "MalformedEntry",
    "MemoryBroker",
    "MemoryBus",
    "PositionNotIncreasing",
    "PublishDropped",
    "ShardId",
    "Subscription",
    "epoch_key",
    "from_fields",
    "hash_tag",
    "stream_key",
    "to_fields",
]
