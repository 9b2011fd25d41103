"""Builds the rooms object graph (issue 6): event store, creator, handlers.

``workers`` is the one place that knows storage, the bus and the handlers.
:func:`build_room_api` makes the writer side (allocators for the events
shards this instance owns, their publication on the bus after commit, the
event creator and the room handler); :func:`register_room_api` mounts the
HTTP surface on a ``JsonResource``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

import attrs

from homeserver.handlers.rooms.creation import EventCreator
from homeserver.handlers.rooms.events import EventLoader
from homeserver.handlers.rooms.handler import RoomHandler
from homeserver.sharding import shard_for
from storage.stores.events import EventStore
from storage.streams import Published, ShardPositionAllocator, raise_sequence_above

logger = logging.getLogger(__name__)


def load_or_create_signing_key(path: str) -> Any:
    """The server's current signing key from ``path``, generated on first use.

    One implementation for the whole server: the federation key handling,
    which is safe when several processes start at once.
    """
    from homeserver.federation.keys import load_or_generate_signing_keys

    return load_or_generate_signing_keys(path)[0]


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
    #: timestamp_to_event and room summaries (``RoomLookupHandler``).
    lookups: Any = None
    #: Local aliases and directory listing moved by room upgrades (``RoomAddressStore``).
    addresses: Any = None
    #: Space hierarchies (``SpaceHierarchyHandler``; remote spaces once federation is wired).
    hierarchy: Any = None


async def build_room_api(
    reactor: Any,
    server_name: str,
    database: Any,
    bus: Any,
    signing_key: Any,
    shard_counts: Mapping[str, int],
    owned_event_shards: frozenset[int],
    profile_lookup: Optional[Callable[[str], Any]] = None,
    ratelimiter: Any = None,
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
        reactor, server_name, signing_key, store, loader, allocators, lambda room_id: shard_for(room_id, count),
        shard_count=count,
    )
    rooms = RoomHandler(server_name, creator, store, loader, shard_counts, profile_lookup=profile_lookup, ratelimiter=ratelimiter)
    lookups = build_room_lookups(database, rooms, store)
    from storage.stores.room_upgrades import RoomAddressStore

    from homeserver.handlers.rooms.hierarchy import SpaceHierarchyHandler

    return RoomApi(store=store, loader=loader, creator=creator, rooms=rooms, allocators=allocators, lookups=lookups,
                   addresses=RoomAddressStore(database), hierarchy=SpaceHierarchyHandler(server_name, rooms, store))


def build_room_lookups(database: Any, rooms: RoomHandler, store: EventStore) -> Any:
    """The read-only lookups over rooms: timestamp_to_event and room summaries."""
    from homeserver.handlers.rooms.lookup import RoomLookupHandler
    from storage.stores.room_lookups import RoomLookupStore

    return RoomLookupHandler(rooms, store, RoomLookupStore(database))


def build_room_commands(dispatcher: Any, rooms: RoomApi, ephemeral: "EphemeralApi") -> Any:
    """The rooms area's write commands, registered with ``dispatcher`` (``ctx.dispatcher``,
    or a ``LocalDispatcher`` for a process that owns every shard)."""
    from homeserver.handlers.rooms.commands import RoomCommands

    commands = RoomCommands(dispatcher, rooms.rooms, ephemeral.typing, ephemeral.receipts)
    commands.register()
    if ephemeral.presence_writer is not None:
        from homeserver.handlers.presence.handler import PresenceCommands

        ephemeral.presence_commands = PresenceCommands(dispatcher, ephemeral.presence_writer,
                                                       ephemeral.presence_writer.clock)
        ephemeral.presence_commands.register()
    if ephemeral.to_device_store is not None:
        from homeserver.handlers.to_device import ToDeviceCommands

        count = ephemeral.to_device_shard_count
        ephemeral.to_device_commands = ToDeviceCommands(
            ephemeral.clock, rooms.creator.server_name, dispatcher, ephemeral.to_device_store,
            ephemeral.to_device_allocators, lambda user_id: shard_for(user_id, count),
        )
        ephemeral.to_device_commands.register()
    return commands


def register_room_api(resource: Any, api: RoomApi, commands: Any, authenticator: Any) -> None:
    """Mount the room endpoints: reads from ``api``, writes through ``commands``."""
    from homeserver.rest.client import rooms as rooms_rest

    rooms_rest.register(resource, api.rooms, commands, authenticator)
    if api.lookups is not None:
        from homeserver.rest.client import room_lookups

        room_lookups.register(resource, api.lookups, authenticator)
    if api.hierarchy is not None:
        from homeserver.rest.client import room_lookups

        room_lookups.register_hierarchy(resource, api.hierarchy, authenticator)
    if api.addresses is not None:
        from homeserver.handlers.rooms.upgrade import RoomUpgrader
        from homeserver.rest.client import room_lookups

        upgrader = RoomUpgrader(commands, api.store, api.loader, api.addresses)
        room_lookups.register_upgrade(resource, upgrader, authenticator)


def track_writes(api: RoomApi, sync: "SyncApi") -> None:
    """Read your writes within one process: each event created here is waited for by its sender's next sync."""
    writes = sync.writes
    api.creator.observers.append(
        lambda created: writes.record(created.event.sender, created.stream_shard, created.stream_position)
    )


#: How long a user's write marks stay in Redis after their last write: far longer
#: than any bus delay, short enough that idle users cost nothing.
WRITE_MARK_TTL_SECONDS = 120.0
#: The longest a write waits to record its mark, or a sync to read marks; past
#: it the request goes on without (read-your-writes degrades to "soon").
WRITE_MARK_TIMEOUT_SECONDS = 2.0


def mark_writes(reactor: Any, api: RoomApi, bus: Any) -> None:
    """Read your writes across processes, writer side.

    Each event created here raises its sender's mark ``events.<shard>`` to
    its position in Redis (``Bus.raise_marks``) before the client gets its
    200, so that whichever sync worker serves the sender's next /sync knows
    what it must have seen first (:class:`SharedWriteTracker`).
    """

    async def mark(created: Any) -> None:
        d = bus.raise_marks(
            created.event.sender, {f"events.{created.stream_shard}": created.stream_position}, WRITE_MARK_TTL_SECONDS
        )
        d.addTimeout(WRITE_MARK_TIMEOUT_SECONDS, reactor)
        try:
            await d
        except Exception as e:
            logger.warning("could not record the write mark of %s: %r", created.event.sender, e)

    api.creator.observers.append(mark)


class SharedWriteTracker:
    """Read your writes across processes, reader side: the positions a user wrote,
    from this process' own :class:`WriteTracker` and the marks writers keep in Redis.

    ``positions`` is async (one HGETALL); if Redis does not answer in time the
    local positions alone are used.
    """

    def __init__(self, reactor: Any, bus: Any, local: Any) -> None:
        self._reactor = reactor
        self._bus = bus
        self.local = local

    def record(self, user_id: str, shard: int, position: int) -> None:
        """Remember a write made through this process."""
        self.local.record(user_id, shard, position)

    async def positions(self, user_id: str) -> dict[int, int]:
        """Events shard -> the highest position ``user_id`` wrote (anywhere, as far as known)."""
        out = dict(self.local.positions(user_id))
        d = self._bus.get_marks(user_id)
        d.addTimeout(WRITE_MARK_TIMEOUT_SECONDS, self._reactor)
        try:
            marks = await d
        except Exception as e:
            logger.debug("write marks of %s unavailable: %r", user_id, e)
            return out
        for field, position in marks.items():
            stream, _, shard = field.partition(".")
            if stream == "events" and shard.isdigit():
                out[int(shard)] = max(out.get(int(shard), 0), position)
        return out


# -- typing and receipts (writer side) -------------------------------------------


@attrs.define
class EphemeralApi:
    """Typing and receipts handlers of the shards this instance owns."""

    typing: Any
    receipts: Any
    receipt_store: Any
    #: Presence writer of the owned ``presence`` shards (``PresenceWriter``), its reader and store.
    presence_writer: Any = None
    presence_reader: Any = None
    presence_store: Any = None
    #: Set by :func:`build_room_commands` (``PresenceCommands``).
    presence_commands: Any = None
    #: The device inbox store and allocators of the owned ``to_device`` shards.
    to_device_store: Any = None
    to_device_allocators: Mapping[int, ShardPositionAllocator] = attrs.Factory(dict)
    to_device_shard_count: int = 1
    clock: Any = None
    #: Set by :func:`build_room_commands` (``ToDeviceCommands``).
    to_device_commands: Any = None


async def build_ephemeral_api(
    reactor: Any,
    database: Any,
    bus: Any,
    shard_counts: Mapping[str, int],
    owned: Mapping[str, frozenset[int]],
    events_store: Any,
    account_data_store: Any = None,
    presence_enabled: bool = True,
) -> EphemeralApi:
    """Receipts (persisted, ``receipts`` stream), typing (ephemeral, ``typing`` stream) and presence
    (persisted, ``presence`` stream, timed out by its writer) writers."""
    from homeserver.handlers.rooms.ephemeral import ReceiptHandler, TypingHandler
    from storage.stores.receipts import ReceiptStore

    receipt_store = ReceiptStore(database)
    allocators: dict[str, dict[int, ShardPositionAllocator]] = {"receipts": {}, "typing": {}}
    for stream in allocators:
        for shard in sorted(owned.get(stream, frozenset())):
            allocator = await ShardPositionAllocator.create(database, stream, shard)
            allocator.on_publish(publish_on_bus(bus, stream, shard))
            allocators[stream][shard] = allocator

    async def insert(shard: int, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, data: dict) -> Any:
        allocator = allocators["receipts"][shard]
        return await receipt_store.insert_receipt(
            allocator, room_id, receipt_type, user_id, thread_id, event_id, data,
            on_row=lambda row: allocator.attach(row.stream_position, row.to_payload()),
        )

    def announce(shard: int, payload: dict) -> Any:
        allocator = allocators["typing"][shard]

        def txn_fn(txn: Any) -> int:
            position = allocator.allocate(txn)
            allocator.attach(position, payload)
            return position

        return database.run_interaction("typing_position", txn_fn)

    receipts = ReceiptHandler(
        reactor, events_store, insert, frozenset(allocators["receipts"]),
        lambda room_id: shard_for(room_id, shard_counts["receipts"]), account_data=account_data_store,
    )
    typing = TypingHandler(
        reactor, events_store, announce, frozenset(allocators["typing"]),
        lambda room_id: shard_for(room_id, shard_counts["typing"]),
    )
    presence_store, presence_writer, presence_reader = await _build_presence(
        reactor, database, bus, shard_counts, owned, presence_enabled,
    )
    to_device_store = None
    to_device_allocators: dict[int, ShardPositionAllocator] = {}
    if "to_device" in shard_counts:
        from storage.stores.device_inbox import DeviceInboxStore

        to_device_store = DeviceInboxStore(database)
        for shard in sorted(owned.get("to_device", frozenset())):
            allocator = await ShardPositionAllocator.create(database, "to_device", shard)
            allocator.on_publish(publish_on_bus(bus, "to_device", shard))
            to_device_allocators[shard] = allocator
    return EphemeralApi(typing=typing, receipts=receipts, receipt_store=receipt_store,
                        presence_writer=presence_writer, presence_reader=presence_reader, presence_store=presence_store,
                        to_device_store=to_device_store, to_device_allocators=to_device_allocators,
                        to_device_shard_count=shard_counts.get("to_device", 1), clock=reactor)


async def _build_presence(reactor: Any, database: Any, bus: Any, shard_counts: Mapping[str, int],
                          owned: Mapping[str, frozenset[int]], enabled: bool) -> tuple[Any, Any, Any]:
    """The presence store, the writer of the owned ``presence`` shards (started) and the reader."""
    from homeserver.handlers.presence.handler import PresenceReader, PresenceWriter
    from storage.stores.presence import PresenceStore

    store = PresenceStore(database)
    allocators: dict[int, ShardPositionAllocator] = {}
    if enabled:
        for shard in sorted(owned.get("presence", frozenset())):
            allocator = await ShardPositionAllocator.create(database, "presence", shard)
            allocator.on_publish(publish_on_bus(bus, "presence", shard))
            allocators[shard] = allocator
    count = shard_counts.get("presence", 1)
    writer = PresenceWriter(reactor, store, allocators, lambda user_id: shard_for(user_id, count), enabled=enabled)
    await writer.start()
    return store, writer, PresenceReader(reactor, store, enabled=enabled)


# -- sync (reader side) ------------------------------------------------------------


@attrs.define
class SyncApi:
    """The sync handler and the tails and subscriptions feeding it."""

    handler: Any
    notifier: Any
    events_tail: Any
    receipts_tail: Any
    typing_tail: Any
    writes: Any
    subscriptions: list[Any]

    def stop(self) -> Any:
        """Stop the bus subscriptions."""
        from twisted.internet import defer

        return defer.gatherResults([s.stop() for s in self.subscriptions])


async def build_sync_api(
    reactor: Any,
    database: Any,
    bus: Any,
    shard_counts: Mapping[str, int],
    loader: Optional[EventLoader] = None,
    account_data_store: Any = None,
    writes: Any = None,
    presence_enabled: bool = True,
    wake_batch_seconds: float = 0.0,
    min_interval_seconds: float = 0.0,
) -> SyncApi:
    """Tails of the events, receipts and typing streams, fed by the bus from its newest entries (see
    :func:`_start_positions`), plus the account data wake-up subscription. ``writes``: where
    read-your-writes positions come from (default: this process' own :class:`WriteTracker`);
    ``wake_batch_seconds``: the batching window of long-polls (``sync.wake_batch_ms``), for those
    woken while waiting (the notifier) and those that find new events at once (the handler);
    ``min_interval_seconds``: ``sync.min_interval_ms``."""
    from bus import ShardId
    from homeserver.handlers.sync.handler import SyncDeps, SyncHandler, TypingRow, TypingState, WriteTracker
    from homeserver.handlers.sync.notifier import Notifier
    from homeserver.handlers.sync.tail import StreamTail
    from storage.stores.events import StreamRow
    from storage.stores.receipts import ReceiptRow, ReceiptStore

    events_store = EventStore(database)
    receipt_store = ReceiptStore(database)
    loader = loader or EventLoader(events_store, reactor)
    notifier = Notifier(reactor, batch_window=wake_batch_seconds)
    n_events, n_receipts, n_typing = shard_counts["events"], shard_counts["receipts"], shard_counts["typing"]
    events_tail = StreamTail(reactor, "events", n_events, events_store.get_stream_rows, StreamRow.from_payload)
    receipts_tail = StreamTail(reactor, "receipts", n_receipts, receipt_store.get_rows, ReceiptRow.from_payload)
    typing_tail = StreamTail(reactor, "typing", n_typing, None, TypingRow.from_payload, durable=False)
    typing_state = TypingState()
    typing_tail.add_listener(typing_state.on_row)

    def on_typing_reset(shard: int, position: int) -> None:
        for room_id in typing_state.on_reset(shard, position):
            notifier.notify_room(room_id)

    def on_event(shard: int, row: Any) -> None:
        notifier.notify_room(row.room_id)
        if row.type == "m.room.member" and row.state_key is not None:
            notifier.notify_user(row.state_key)

    events_tail.add_listener(on_event)
    receipts_tail.add_listener(lambda shard, row: notifier.notify_room(row.room_id))
    typing_tail.add_listener(lambda shard, row: notifier.notify_room(row.room_id))
    typing_tail.add_reset_listener(on_typing_reset)
    if account_data_store is not None:
        account_data_store.observers.append(lambda change: notifier.notify_user(change.user_id))

    event_positions = await _start_positions(bus, "events", n_events, events_store.get_max_positions)
    receipt_positions = await _start_positions(bus, "receipts", n_receipts, receipt_store.get_max_positions)
    events_tail.start([event_positions[s] for s in range(n_events)])
    receipts_tail.start([receipt_positions[s] for s in range(n_receipts)])
    typing_tail.start([0] * n_typing)
    subscriptions = [
        bus.subscribe({ShardId("events", s): event_positions[s] for s in range(n_events)},
                      events_tail.on_entry, events_tail.on_gap, name="sync-events"),
        bus.subscribe({ShardId("receipts", s): receipt_positions[s] for s in range(n_receipts)},
                      receipts_tail.on_entry, receipts_tail.on_gap, name="sync-receipts"),
        bus.subscribe({ShardId("typing", s): 0 for s in range(n_typing)},
                      typing_tail.on_entry, typing_tail.on_gap, name="sync-typing"),
    ]
    if "account_data" in shard_counts:
        subscriptions.append(await _wake_on_account_data(bus, shard_counts["account_data"], notifier))
    presence = None
    if presence_enabled and "presence" in shard_counts:
        presence, presence_subscription = await _presence_source(reactor, database, bus, shard_counts["presence"], notifier)
        subscriptions.append(presence_subscription)
    to_device = None
    if "to_device" in shard_counts:
        to_device, to_device_subscription = await _to_device_source(reactor, database, bus, shard_counts["to_device"], notifier)
        subscriptions.append(to_device_subscription)
    device_lists = None
    if "device_lists" in shard_counts:
        device_lists, device_lists_subscription = await _device_list_source(
            reactor, database, bus, shard_counts["device_lists"], notifier, n_events, events_tail)
        subscriptions.append(device_lists_subscription)
    writes = writes if writes is not None else WriteTracker()
    deps = SyncDeps(
        events_store=events_store,
        receipts_store=receipt_store,
        loader=loader,
        events_tail=events_tail,
        receipts_tail=receipts_tail,
        typing_tail=typing_tail,
        typing_state=typing_state,
        notifier=notifier,
        shard_counts=shard_counts,
        events_shard_of=lambda room_id: shard_for(room_id, n_events),
        receipts_shard_of=lambda room_id: shard_for(room_id, n_receipts),
        typing_shard_of=lambda room_id: shard_for(room_id, n_typing),
        account_data_store=account_data_store,
        writes=writes,
        presence=presence,
        to_device=to_device,
        device_lists=device_lists,
    )
    return SyncApi(SyncHandler(reactor, deps, batch_window=wake_batch_seconds, min_interval=min_interval_seconds), notifier, events_tail, receipts_tail, typing_tail, writes, subscriptions)


async def _presence_source(reactor: Any, database: Any, bus: Any, count: int, notifier: Any) -> tuple[Any, Any]:
    """The presence tail (as the receipts one: bus from its newest entries, PostgreSQL for gaps) and its source."""
    from bus import ShardId
    from homeserver.handlers.sync.presence import PresenceSource
    from homeserver.handlers.sync.tail import StreamTail
    from storage.stores.presence import PresenceRow, PresenceStore

    store = PresenceStore(database)
    tail = StreamTail(reactor, "presence", count, store.get_rows, PresenceRow.from_payload)
    source = PresenceSource(reactor, store, tail, notifier)
    positions = await _start_positions(bus, "presence", count, store.get_max_positions)
    tail.start([positions[s] for s in range(count)])
    subscription = bus.subscribe({ShardId("presence", s): positions[s] for s in range(count)},
                                 tail.on_entry, tail.on_gap, name="sync-presence")
    return source, subscription


async def _to_device_source(reactor: Any, database: Any, bus: Any, count: int, notifier: Any) -> tuple[Any, Any]:
    """The ``to_device`` tail (bus from its newest entries, PostgreSQL for gaps) and the sync source over it."""
    from bus import ShardId
    from homeserver.handlers.sync.tail import StreamTail
    from homeserver.handlers.sync.to_device import ToDeviceSource
    from storage.stores.device_inbox import DeviceInboxStore, InboxRow

    store = DeviceInboxStore(database)
    tail = StreamTail(reactor, "to_device", count, store.get_rows, InboxRow.from_payload)
    source = ToDeviceSource(store, tail, notifier, lambda user_id: shard_for(user_id, count))
    positions = await _start_positions(bus, "to_device", count, store.get_max_positions)
    tail.start([positions[s] for s in range(count)])
    subscription = bus.subscribe({ShardId("to_device", s): positions[s] for s in range(count)},
                                 tail.on_entry, tail.on_gap, name="sync-to-device")
    return source, subscription


async def _device_list_source(reactor: Any, database: Any, bus: Any, count: int, notifier: Any,
                              events_shards: int, events_tail: Any = None) -> tuple[Any, Any]:
    """The ``device_lists`` tail (bus from its newest entries, PostgreSQL for gaps) and the sync source over it
    (membership changes read from ``events_tail`` where it holds the range)."""
    from bus import ShardId
    from homeserver.handlers.sync.device_lists import DeviceListSource
    from homeserver.handlers.sync.tail import StreamTail
    from storage.stores.e2e_keys import DeviceListRow, E2EKeyStore

    store = E2EKeyStore(database)
    tail = StreamTail(reactor, "device_lists", count, store.get_rows, DeviceListRow.from_payload)
    source = DeviceListSource(store, tail, notifier, lambda room_id: shard_for(room_id, events_shards), events_shards,
                              events_tail=events_tail)
    positions = await _start_positions(bus, "device_lists", count, store.get_max_positions)
    tail.start([positions[s] for s in range(count)])
    subscription = bus.subscribe({ShardId("device_lists", s): positions[s] for s in range(count)},
                                 tail.on_entry, tail.on_gap, name="sync-device-lists")
    return source, subscription


@attrs.define
class KeysApi:
    """End-to-end encryption: the key handler (``E2EKeysHandler``) and the key backup (``KeyBackupHandler``)."""

    keys: Any
    backup: Any


async def build_keys_api(reactor: Any, server_name: str, database: Any, bus: Any, shard_counts: Mapping[str, int],
                         owned: frozenset[int], dispatcher: Any, uia: Any = None) -> KeysApi:
    """The E2E keys handler (allocators of the owned ``device_lists`` shards, published on the bus after
    commit; its commands registered with ``dispatcher``) and the key backup handler."""
    from homeserver.handlers.e2e_keys import E2EKeysHandler
    from homeserver.handlers.key_backup import KeyBackupHandler
    from storage.stores.key_backup import KeyBackupStore
    from homeserver.handlers.sync.device_lists import DeviceListSource
    from storage.stores.e2e_keys import E2EKeyStore

    store = E2EKeyStore(database)
    allocators: dict[int, ShardPositionAllocator] = {}
    for shard in sorted(owned):
        allocator = await ShardPositionAllocator.create(database, "device_lists", shard)
        allocator.on_publish(publish_on_bus(bus, "device_lists", shard))
        allocators[shard] = allocator
    count, n_events = shard_counts["device_lists"], shard_counts["events"]
    # /keys/changes reads PostgreSQL only: no tail needed.
    changes = DeviceListSource(store, None, None, lambda room_id: shard_for(room_id, n_events), n_events)
    keys = E2EKeysHandler(reactor, server_name, store, dispatcher, allocators, lambda user_id: shard_for(user_id, count),
                          uia=uia, device_lists=changes, shard_counts=shard_counts)
    keys.register()
    return KeysApi(keys=keys, backup=KeyBackupHandler(KeyBackupStore(database)))


def watch_devices(account_api: Any, keys: KeysApi) -> None:
    """Announce device creations and deletions of the accounts area on the device list stream."""
    for observers in (account_api.sessions.device_observers, account_api.devices.observers,
                      account_api.account.device_observers):
        observers.append(keys.keys.on_devices_changed)


def register_keys_api(resource: Any, keys: "KeysApi", authenticator: Any) -> None:
    """Mount the /keys endpoints and the server-side key backup (/room_keys)."""
    from homeserver.rest.client.keys import register_key_backup, register_keys

    register_keys(resource, keys.keys, authenticator)
    register_key_backup(resource, keys.backup, authenticator)


async def _bus_head(bus: Any, stream: str, shard: int) -> Optional[int]:
    """The position of the newest entry the bus holds for a shard, or None."""
    from bus import stream_key

    try:
        raw = await bus.backend.last_id(stream_key(stream, shard, bus.namespace))
    except Exception:
        return None
    text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    return int(text.split("-")[0]) if text else None


async def _start_positions(bus: Any, stream: str, count: int, max_in_postgres: Callable[[range], Any]) -> dict[int, int]:
    """Where a new tail starts on each shard.

    The newest entry on the bus is the safe start: a writer publishes only
    positions below which everything has committed or rolled back, so
    PostgreSQL holds every row up to it, and anything later reaches the bus
    after it. The highest position in PostgreSQL is not safe on its own (a
    smaller position may still be in flight and commit later), so it is only
    the fallback for shards the bus holds nothing of (a new or flushed Redis).
    """
    in_postgres = await max_in_postgres(range(count))
    positions = {}
    for shard in range(count):
        head = await _bus_head(bus, stream, shard)
        positions[shard] = head if head is not None else in_postgres[shard]
    return positions


async def _wake_on_account_data(bus: Any, shard_count: int, notifier: Any) -> Any:
    """Wake a user's long-polls when their account data changes on any writer.

    Only a wake-up: /sync reads account data from PostgreSQL by position, so
    a lost or skipped entry delays a response but loses nothing. The tail
    starts at each shard's newest entry (history is of no use here).
    """
    from bus import ShardId

    starts = {ShardId("account_data", shard): (await _bus_head(bus, "account_data", shard)) or 0
              for shard in range(shard_count)}

    def on_entry(entry: Any) -> None:
        user_id = entry.payload.get("user_id")
        if isinstance(user_id, str):
            notifier.notify_user(user_id)

    return bus.subscribe(starts, on_entry, lambda gap: None, name="sync-account-data")


def register_sync_api(resource: Any, sync: SyncApi, authenticator: Any, presence_commands: Any = None) -> None:
    """Mount /sync (``presence_commands``: where ``set_presence`` goes, a ``PresenceCommands``)."""
    from homeserver.rest.client.sync import register_sync

    register_sync(resource, sync.handler, authenticator, presence=presence_commands)


def register_presence_api(resource: Any, ephemeral: EphemeralApi, authenticator: Any) -> None:
    """Mount PUT/GET /presence/{userId}/status."""
    from homeserver.rest.client.presence import register_presence

    register_presence(resource, ephemeral.presence_commands, ephemeral.presence_reader, authenticator)


def register_to_device_api(resource: Any, ephemeral: EphemeralApi, authenticator: Any) -> None:
    """Mount PUT /sendToDevice/{eventType}/{txnId}."""
    from homeserver.rest.client.to_device import register_to_device

    register_to_device(resource, ephemeral.to_device_commands, authenticator)


def register_ephemeral_api(resource: Any, commands: Any, authenticator: Any) -> None:
    """Mount typing, receipts and read markers (writes through ``commands``)."""
    from homeserver.rest.client.sync import register_ephemeral

    register_ephemeral(resource, commands, authenticator)


# -- one process -------------------------------------------------------------------


@attrs.define
class RoomsProcess:
    """The rooms, typing/receipts and sync surfaces of one process, per its roles."""

    rooms: RoomApi
    ephemeral: EphemeralApi
    sync: Optional[SyncApi]
    commands: Any
    #: E2E keys and key backup (``KeysApi``), None when the install has no ``device_lists`` stream.
    keys: Any = None

    def mount(self, resource: Any, authenticator: Any, roles: frozenset[str]) -> None:
        """Mount what ``roles`` serve: room and typing/receipt endpoints on client readers
        and writers (writes run on their shard's owner), /sync on sync workers."""
        from homeserver.config import roles as r

        if roles & {r.CLIENT_READER, r.CLIENT_WRITER}:
            register_room_api(resource, self.rooms, self.commands, authenticator)
            register_ephemeral_api(resource, self.commands, authenticator)
            if self.ephemeral.presence_commands is not None:
                register_presence_api(resource, self.ephemeral, authenticator)
            if self.ephemeral.to_device_commands is not None:
                register_to_device_api(resource, self.ephemeral, authenticator)
            if self.keys is not None:
                register_keys_api(resource, self.keys, authenticator)
        if self.sync is not None:
            register_sync_api(resource, self.sync, authenticator, self.ephemeral.presence_commands)

    def stop(self) -> Any:
        """Stop the presence timer and the sync subscriptions (if any)."""
        from twisted.internet import defer

        if self.ephemeral.presence_writer is not None:
            self.ephemeral.presence_writer.stop()
        return self.sync.stop() if self.sync is not None else defer.succeed(None)


def _presence_enabled(config: Any) -> bool:
    section = getattr(config, "sections", {}).get("presence")
    return True if section is None else bool(section.enabled)


async def wire_account_data(ctx: Any, account_api: Any, counts: Mapping[str, int], owned: frozenset[int]) -> Any:
    """Account data writes on the owner of each user's ``account_data`` shard; returns the writer.

    The owned shards get allocators (their sequences first raised above any
    position already stored, so a token from before never hides a new
    write) publishing on the bus, which wakes the user's long-polls on every
    sync worker; other instances forward their writes to the owner.
    """
    from homeserver.handlers.account_data import AccountDataCommands

    store = account_api.account_data_store
    if "account_data" not in counts:
        return store
    count = counts["account_data"]
    allocators: dict[int, ShardPositionAllocator] = {}
    floor = await store.max_stream_id() if owned else 0
    for shard in sorted(owned):
        await raise_sequence_above(ctx.database, "account_data", shard, floor)
        allocator = await ShardPositionAllocator.create(ctx.database, "account_data", shard)
        allocator.on_publish(publish_on_bus(ctx.bus, "account_data", shard))
        allocators[shard] = allocator
    store.use_allocators(lambda user_id: allocators.get(shard_for(user_id, count)))
    commands = AccountDataCommands(ctx.dispatcher, store)
    commands.register()
    account_api.account_data.use_writer(commands)
    return commands


def _wake_batch_seconds(config: Any) -> float:
    from homeserver.config.sync import DEFAULT_WAKE_BATCH_MS

    section = getattr(config, "sections", {}).get("sync")
    return (DEFAULT_WAKE_BATCH_MS if section is None else section.wake_batch_ms) / 1000.0


def _min_interval_seconds(config: Any) -> float:
    from homeserver.config.sync import DEFAULT_MIN_INTERVAL_MS

    section = getattr(config, "sections", {}).get("sync")
    return (DEFAULT_MIN_INTERVAL_MS if section is None else section.min_interval_ms) / 1000.0


async def build_rooms_process(ctx: Any, account_api: Any) -> RoomsProcess:
    """Everything of issue 6 for the process described by ``ctx`` (a ``workers.app.ProcessContext``).

    Async because the shard allocators read their sequences first: call it
    from ``EstuaryProcess.start`` after ``ensure_stream_shards``, then
    :meth:`RoomsProcess.mount` on the main resource. The write commands are
    registered with ``ctx.dispatcher``, whose replication endpoint serves
    those forwarded by other instances. ``account_api`` is the
    ``workers.accounts.AccountApi`` (authenticator, profiles, account data,
    filters).
    """
    from homeserver.config import roles as r

    config, instance = ctx.config, ctx.instance
    counts = dict(config.stream_shards)
    writer = r.CLIENT_WRITER in instance.roles
    owned = {s: frozenset(instance.shards.get(s, frozenset())) if writer else frozenset() for s in counts}
    signing_key = load_or_create_signing_key(config.signing_key_path)
    rooms = await build_room_api(
        ctx.reactor, config.server_name, ctx.database, ctx.bus, signing_key, counts, owned["events"],
        profile_lookup=account_api.profile_store.get_profile, ratelimiter=account_api.ratelimiter,
    )
    account_data = await wire_account_data(ctx, account_api, counts, owned.get("account_data", frozenset()))
    ephemeral = await build_ephemeral_api(
        ctx.reactor, ctx.database, ctx.bus, counts, owned, rooms.store, account_data,
        presence_enabled=_presence_enabled(config),
    )
    others = [i for i in config.instances.values() if i.name != instance.name]
    # Writes made here may be read through another sync worker: publish marks.
    if owned["events"] and any(r.SYNC in i.roles for i in others):
        mark_writes(ctx.reactor, rooms, ctx.bus)
    sync = None
    if r.SYNC in instance.roles:
        from homeserver.handlers.sync.handler import WriteTracker

        writes: Any = WriteTracker()
        # Another instance writes events: its writes are known here only by their marks.
        if any(i.shards.get("events") for i in others):
            writes = SharedWriteTracker(ctx.reactor, ctx.bus, writes)
        sync = await build_sync_api(
            ctx.reactor, ctx.database, ctx.bus, counts, loader=rooms.loader,
            account_data_store=account_api.account_data_store, writes=writes,
            presence_enabled=_presence_enabled(config), wake_batch_seconds=_wake_batch_seconds(config),
            min_interval_seconds=_min_interval_seconds(config),
        )
        track_writes(rooms, sync)
    commands = build_room_commands(ctx.dispatcher, rooms, ephemeral)
    keys = None
    if "device_lists" in counts:
        keys = await build_keys_api(ctx.reactor, config.server_name, ctx.database, ctx.bus, counts,
                                    owned["device_lists"], ctx.dispatcher, uia=account_api.uia)
        watch_devices(account_api, keys)
    return RoomsProcess(rooms=rooms, ephemeral=ephemeral, sync=sync, commands=commands, keys=keys)


def part_on_deactivation(accounts: Any, rooms: RoomApi, commands: Any) -> Any:
    """Deactivated accounts leave their rooms (``homeserver.handlers.deactivation``); returns the parter."""
    from homeserver.handlers.deactivation import RoomParter

    parter = RoomParter(rooms.store, commands)
    accounts.account.deactivation_observers.append(parter.on_deactivated)
    return parter
