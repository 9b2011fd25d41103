"""Builds the rooms object graph (issue 6): event store, creator, handlers.

``workers`` is the one place that knows storage, the bus and the handlers.
:func:`build_room_api` makes the writer side (allocators for the events
shards this instance owns, their publication on the bus after commit, the
event creator and the room handler); :func:`register_room_api` mounts the
HTTP surface on a ``JsonResource``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Optional

import attrs

from homeserver.core.signing import format_signing_key_file, generate_signing_key, parse_signing_key_file
from homeserver.handlers.rooms.creation import EventCreator
from homeserver.handlers.rooms.events import EventLoader
from homeserver.handlers.rooms.handler import RoomHandler
from homeserver.sharding import shard_for
from storage.stores.events import EventStore
from storage.streams import Published, ShardPositionAllocator

logger = logging.getLogger(__name__)


def load_or_create_signing_key(path: str) -> Any:
    """The server's first signing key from ``path``, generated (mode 0600) if the file is missing."""
    if os.path.exists(path):
        with open(path, "r", encoding="utf-8") as f:
            return parse_signing_key_file(f.read())[0]
    key = generate_signing_key()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(format_signing_key_file([key]))
    return key


def publish_on_bus(bus: Any, stream: str, shard: int) -> Callable[[Published], None]:
    """An allocator ``on_publish`` callback putting each released payload on ``<stream>:<shard>``.

    Positions arrive in order and ``Bus.publish`` keeps call order per
    shard; a failure is logged (consumers see a gap and catch up from
    PostgreSQL, so nothing is lost).
    """

    def on_publish(published: Published) -> None:
        for payload in published.payloads:
            d = bus.publish(stream, shard, published.position, payload)
            d.addErrback(
                lambda f, p=published.position: logger.warning(
                    "could not publish %s:%s@%s: %s", stream, shard, p, f.getErrorMessage()
                )
            )

    return on_publish


@attrs.define
class RoomApi:
    """The rooms area, wired."""

    store: EventStore
    loader: EventLoader
    creator: EventCreator
    rooms: RoomHandler
    allocators: Mapping[int, ShardPositionAllocator]


async def build_room_api(
    reactor: Any,
    server_name: str,
    database: Any,
    bus: Any,
    signing_key: Any,
    shard_counts: Mapping[str, int],
    owned_event_shards: frozenset[int],
    profile_lookup: Optional[Callable[[str], Any]] = None,
) -> RoomApi:
    """Compose the rooms area for an instance owning ``owned_event_shards`` of the events stream."""
    store = EventStore(database)
    loader = EventLoader(store, reactor)
    count = shard_counts["events"]
    allocators: dict[int, ShardPositionAllocator] = {}
    for shard in sorted(owned_event_shards):
        allocator = await ShardPositionAllocator.create(database, "events", shard)
        allocator.on_publish(publish_on_bus(bus, "events", shard))
        allocators[shard] = allocator
    creator = EventCreator(
        reactor, server_name, signing_key, store, loader, allocators, lambda room_id: shard_for(room_id, count)
    )
    rooms = RoomHandler(server_name, creator, store, loader, shard_counts, profile_lookup=profile_lookup)
    return RoomApi(store=store, loader=loader, creator=creator, rooms=rooms, allocators=allocators)


def register_room_api(resource: Any, api: RoomApi, authenticator: Any, after_write: Any = None) -> None:
    """Mount the room endpoints of ``api`` on ``resource``."""
    from homeserver.rest.client import rooms as rooms_rest

    rooms_rest.register(resource, api.rooms, authenticator, after_write=after_write)
