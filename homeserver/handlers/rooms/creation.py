"""The event creation pipeline of the events shard owner (DESIGN.md §2–4).

For each new event, under the room's :class:`Linearizer` turn:

1. take the room's forward extremities and current state (kept in memory by
   this writer, the only one of the room's shard, and re-read when a
   persist finds them stale);
2. build the PDU: ``prev_events`` = the extremities, ``auth_events`` chosen
   by ``auth_types_for_event`` from the current state, ``depth``, content
   hash, this server's signature, the room version's event ID;
3. check it with ``check_auth_rules`` against the state before it;
4. persist event, state snapshot, current state, memberships, extremities
   and the client transaction ID in one transaction that also draws the
   event's position from the shard's allocator;
5. after commit the allocator releases positions in order and the wiring in
   ``workers/`` publishes them on the bus (``events:<shard>``), which is
   also how every sync worker, this one included, learns of the event.

A room never forks locally: its events are created one at a time.
"""

from __future__ import annotations

import inspect

import secrets
from typing import Any, Callable, Mapping, Optional

import attrs

from homeserver.core import auth as auth_rules
from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import AuthError, EventSizeError, InvalidEventError
from homeserver.core.events import Event, thaw
from homeserver.core.rooms import (
    DuplicateTransactionError,
    ExtremitiesChangedError,
    NewRoomRow,
    RoomExistsError,
)
from homeserver.core.room_versions import EventFormat, RoomVersion
from homeserver.core.builder import build_local_event
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, not_found
from homeserver.handlers.rooms.events import EventLoader
from homeserver.handlers.rooms.linearizer import Linearizer

StateKey = tuple[str, str]

#: How often a persist that found the room moved on is rebuilt before giving up.
MAX_BUILD_ATTEMPTS = 5


class NotShardOwnerError(MatrixError):
    """This instance does not own the shard a write belongs to (DESIGN.md §4).

    Writes reach the owner as replication commands (``RoomCommands``), so
    this is a safety net for an inconsistent shard map: the client gets a
    503 and nothing is written.
    """

    def __init__(self, stream: str, shard: int, what: str = "") -> None:
        super().__init__(503, Codes.UNKNOWN, f"This instance does not write {stream} shard {shard}{what}")
        self.stream = stream
        self.shard = shard


@attrs.frozen
class CreatedEvent:
    """An event this writer persisted, and where it is on the events stream."""

    event: Event
    stream_shard: int
    stream_position: int
    #: True when a retried client transaction returned the original event.
    deduplicated: bool = False
    #: The other servers the event was queued for, in its own transaction.
    queued_destinations: tuple[str, ...] = ()


@attrs.define
class _RoomHead:
    """The writer's in-memory view of the end of a room."""

    version: RoomVersion
    extremities: tuple[str, ...]
    max_depth: int
    state_group: Optional[int]
    chain_length: int
    state: dict[StateKey, str]


@attrs.frozen
class NewRoom:
    """What createRoom knows about a room before its create event exists."""

    version: RoomVersion
    creator: str
    is_public: bool


class EventCreator:
    """Builds, authorises and persists local events of the shards this instance owns.

    ``store`` is the event store, ``allocators`` maps each owned events
    shard to its ``ShardPositionAllocator``; ``shard_of(room_id)`` is the
    installation's shard function; ``signing_key`` a nacl signing key with
    ``version``; ``clock`` gives ``seconds()``.
    """

    def __init__(
        self,
        clock: Any,
        server_name: str,
        signing_key: Any,
        store: Any,
        loader: EventLoader,
        allocators: Mapping[int, Any],
        shard_of: Callable[[str], int],
        linearizer: Optional[Linearizer] = None,
        shard_count: int = 1,
    ) -> None:
        self._clock = clock
        self.server_name = server_name
        self._key = signing_key
        #: The key local events are signed with (federation signs remote joins with it too).
        self.signing_key = signing_key
        self._store = store
        self.loader = loader
        self._allocators = dict(allocators)
        self.shard_of = shard_of
        self._shard_count = shard_count
        self.linearizer = linearizer or Linearizer("rooms")
        self._heads: dict[str, _RoomHead] = {}
        self._last_create_ts = 0
        #: Called with each created event after commit (in creation order per room); an
        #: observer returning an awaitable delays the creator's answer until it completes.
        self.observers: list[Callable[[CreatedEvent], Any]] = []
        #: ``event -> OutboundPdu or None``: what to queue for the room's other
        #: servers inside the event's persist transaction (set by the
        #: federation wiring; None on a server without federation).
        self.outbound_for: Optional[Callable[[Event], Any]] = None

    def owns_room(self, room_id: str) -> bool:
        """Whether this instance writes the events shard of ``room_id``."""
        return self.shard_of(room_id) in self._allocators

    def allocator_for(self, room_id: str) -> Any:
        """The events shard allocator of ``room_id``; :class:`NotShardOwnerError` if not ours."""
        shard = self.shard_of(room_id)
        allocator = self._allocators.get(shard)
        if allocator is None:
            raise NotShardOwnerError("events", shard, f" (room {room_id})")
        return allocator

    def forget_head(self, room_id: str) -> None:
        """Drop the cached end of ``room_id`` (another path, e.g. federation, appended to it)."""
        self._heads.pop(room_id, None)

    @staticmethod
    def stream_payload(event: Event) -> dict[str, Any]:
        """The events stream (bus) payload of ``event``."""
        return _stream_payload(event)

    def owned_shards(self) -> frozenset[int]:
        """The events shards this instance writes."""
        return frozenset(self._allocators)

    def now_ms(self) -> int:
        """Milliseconds on the injected clock."""
        return int(self._clock.seconds() * 1000)

    def new_room_id(self) -> str:
        """A fresh room ID (room versions 1–11) on a shard this instance owns."""
        if not self._allocators:
            raise NotShardOwnerError("events", secrets.randbelow(self._shard_count), " (it writes none)")
        while True:
            room_id = "!" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b") + ":" + self.server_name
            if self.owns_room(room_id):
                return room_id

    # -- the pipeline ---------------------------------------------------------

    async def create_room_event(
        self,
        new_room: NewRoom,
        content: Mapping[str, Any],
        room_id: Optional[str] = None,
    ) -> CreatedEvent:
        """Create and persist the ``m.room.create`` event of a new room.

        Rooms v1–11 need ``room_id`` (see :meth:`new_room_id`); in v12 the
        room ID is the create event's hash, and the timestamp is nudged (by
        milliseconds) until that ID falls on a shard this instance owns, so
        the room's writer is its creator.
        """
        version = new_room.version
        if version.room_id_is_create_event_hash != (room_id is None):
            raise ValueError("room_id is required exactly for room versions before 12")
        for _ in range(MAX_BUILD_ATTEMPTS):
            try:
                return await self._create_room_event(new_room, content, room_id)
            except RoomExistsError:
                if room_id is not None:
                    raise MatrixError(400, Codes.ROOM_IN_USE, "Room already exists")
                # Same creator, content and millisecond elsewhere: a later
                # timestamp gives another room ID.
        raise MatrixError(503, Codes.UNKNOWN, "Could not allocate a room ID; try again")

    async def _create_room_event(self, new_room: NewRoom, content: Mapping[str, Any], room_id: Optional[str]) -> CreatedEvent:
        version = new_room.version
        if not self._allocators:
            raise NotShardOwnerError("events", secrets.randbelow(self._shard_count), " (it writes none)")
        # Strictly increasing per process, so that two rooms created with the
        # same content in the same millisecond still get distinct v12 IDs.
        ts = self._last_create_ts = max(self.now_ms(), self._last_create_ts + 1)
        for _ in range(10_000):
            event = self._sign(
                version,
                event_type=auth_rules.CREATE,
                state_key="",
                sender=new_room.creator,
                content=thaw(content),
                room_id=room_id,
                prev_events=[],
                auth_events=[],
                origin_server_ts=ts,
            )
            if self.owns_room(event.room_id):
                break
            ts += 1
            self._last_create_ts = ts
        else:  # pragma: no cover - needs 10k hashes missing every owned shard
            raise MatrixError(503, Codes.UNKNOWN, "Could not place the room on an owned shard")
        try:
            auth_rules.check_size_limits(event)
            auth_rules.check_auth_rules(version, event, {})
        except AuthError as e:
            raise _auth_error(e)
        shard = self.shard_of(event.room_id)
        row = NewRoomRow(event.room_id, version.identifier, new_room.creator, new_room.is_public, event.origin_server_ts)
        self.loader.remember_version(event.room_id, version)
        async with self.linearizer.lock(event.room_id):
            try:
                return await self._persist(
                    self._allocators[shard], None, event, {(auth_rules.CREATE, ""): event.event_id}, None, row
                )
            except _Stale:  # pragma: no cover - a new room has no extremities to move
                raise RoomExistsError(event.room_id)

    async def create_event(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: Optional[str] = None,
        redacts: Optional[str] = None,
        txn_key: Any = None,
        check: Optional[Callable[[Mapping[StateKey, Event], Event], None]] = None,
        countersign: Optional[Callable[[Event], Any]] = None,
    ) -> CreatedEvent:
        """Create, authorise and persist one event in an existing room.

        ``check(state, event)`` may refuse the event with a MatrixError
        before auth rules run (membership preconditions with better error
        messages). ``txn_key`` (a ``TxnKey``) makes the call idempotent:
        a retried transaction returns the original event. ``countersign(event)``
        (async) returns the event as signed by another server too (invites
        of remote users), after the auth rules passed and before persisting.
        """
        shard = self.shard_of(room_id)
        allocator = self._allocators.get(shard)
        if allocator is None:
            raise NotShardOwnerError("events", shard, f" (room {room_id})")
        if txn_key is not None:
            existing = await self._store.get_txn_event(txn_key)
            if existing is not None:
                return await self._existing(room_id, existing)
        async with self.linearizer.lock(room_id):
            for attempt in range(MAX_BUILD_ATTEMPTS):
                head = await self._head(room_id)
                event, state_after, auth_state = await self._build(
                    head, room_id, sender, event_type, content, state_key, redacts
                )
                if check is not None:
                    check(auth_state, event)
                try:
                    auth_rules.check_size_limits(event)
                    auth_rules.check_auth_rules(head.version, event, auth_state)
                except AuthError as e:
                    raise _auth_error(e)
                if countersign is not None:
                    event = await countersign(event)
                try:
                    return await self._persist(allocator, head, event, state_after, txn_key, None)
                except _Stale:
                    self._heads.pop(room_id, None)
                    continue
                except _Duplicate as d:
                    return await self._existing(room_id, d.event_id)
            raise MatrixError(503, Codes.UNKNOWN, "The room changed too often while creating the event; try again")

    # -- helpers ---------------------------------------------------------------

    async def _existing(self, room_id: str, event_id: str) -> CreatedEvent:
        rows = await self._store.get_events(room_id, [event_id])
        row = rows.get(event_id)
        if row is None:
            raise not_found("The event of this transaction is gone")
        version = await self.loader.room_version(room_id)
        assert version is not None
        return CreatedEvent(self.loader.parse(row, version), row.stream_shard, row.stream_position, deduplicated=True)

    async def _head(self, room_id: str) -> _RoomHead:
        head = self._heads.get(room_id)
        if head is not None:
            return head
        snapshot = await self._store.get_room_snapshot(room_id)
        if snapshot is None or not snapshot.extremities:
            raise not_found("Unknown room")
        version = await self.loader.room_version(room_id)
        assert version is not None
        head = _RoomHead(
            version=version,
            extremities=snapshot.extremities,
            max_depth=snapshot.max_depth,
            state_group=snapshot.state_group,
            chain_length=snapshot.chain_length,
            state=dict(snapshot.current_state),
        )
        if len(head.extremities) > 1:
            # Only federation can fork a room; until state resolution is
            # wired in, build on the newest extremity's state (current_state).
            pass
        self._heads[room_id] = head
        return head

    async def _build(
        self,
        head: _RoomHead,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: Optional[str],
        redacts: Optional[str],
    ) -> tuple[Event, Optional[dict[StateKey, str]], dict[StateKey, Event]]:
        version = head.version
        content = thaw(content)
        pdu: dict[str, Any] = {
            "room_id": room_id,
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": 0,
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if version.event_format is EventFormat.V1:
            pdu["event_id"] = f"$provisional:{self.server_name}"
        try:
            # Only to ask which state entries authorise it.
            provisional = Event.from_pdu(pdu, version)
        except InvalidEventError as e:
            raise bad_json(str(e))
        wanted = auth_rules.auth_types_for_event(version, provisional)
        auth_ids = [head.state[k] for k in sorted(wanted) if k in head.state]
        lookup = set(auth_ids) | set(head.extremities)
        create_id = head.state.get((auth_rules.CREATE, ""))
        if create_id is not None:
            lookup.add(create_id)
        replaced_id = head.state.get((event_type, state_key)) if state_key is not None else None
        if replaced_id is not None:
            lookup.add(replaced_id)
        events = await self.loader.get_events(room_id, lookup)
        auth_state = {k: events[head.state[k]] for k in wanted if k in head.state and head.state[k] in events}
        if create_id is not None and create_id in events:
            auth_state[(auth_rules.CREATE, "")] = events[create_id]
        unsigned: dict[str, Any] = {}
        if replaced_id is not None and replaced_id in events:
            replaced = events[replaced_id]
            unsigned = {"replaces_state": replaced_id, "prev_content": thaw(replaced.content), "prev_sender": replaced.sender}
        event = self._sign(
            version,
            event_type=event_type,
            state_key=state_key,
            sender=sender,
            content=content,
            room_id=room_id,
            prev_events=[events[e] for e in head.extremities if e in events],
            auth_events=[events[e] for e in auth_ids if e in events],
            origin_server_ts=self.now_ms(),
            redacts=redacts,
            unsigned=unsigned,
        )
        state_after = None
        if state_key is not None:
            state_after = dict(head.state)
            state_after[(event_type, state_key)] = event.event_id
        return event, state_after, auth_state

    def _sign(self, version: RoomVersion, **fields: Any) -> Event:
        """Build, hash and sign an event with this server's key (``homeserver.core.builder``)."""
        try:
            return build_local_event(version, server_name=self.server_name, signing_key=self._key, **fields)
        except InvalidEventError as e:
            raise bad_json(str(e))

    async def _persist(
        self,
        allocator: Any,
        head: Optional[_RoomHead],
        event: Event,
        state_after: Optional[dict[StateKey, str]],
        txn_key: Any,
        new_room: Any,
    ) -> CreatedEvent:
        pdu_json = encode_canonical_json(event.get_pdu_json(), allow_floats=True).decode("utf-8")

        def attach(position: int) -> None:
            allocator.attach(position, _stream_payload(event))

        try:
            result = await self._store.persist_event(
                allocator,
                event,
                pdu_json,
                expected_extremities=head.extremities if head else (),
                prev_state_group=head.state_group if head else None,
                prev_chain_length=head.chain_length if head else 0,
                state_after=state_after,
                txn_key=txn_key,
                new_room=new_room,
                now_ms=self.now_ms(),
                on_position=attach,
                outbound=self.outbound_for(event) if self.outbound_for is not None else None,
            )
        except ExtremitiesChangedError as e:
            raise _Stale() from e
        except DuplicateTransactionError as e:
            raise _Duplicate(e.event_id) from e
        self.loader.remember(event)
        new_state = state_after if state_after is not None else (head.state if head else {})
        self._heads[event.room_id] = _RoomHead(
            version=event.room_version,
            extremities=(event.event_id,),
            max_depth=event.depth,
            state_group=result.state_group,
            chain_length=result.chain_length,
            state=dict(new_state),
        )
        created = CreatedEvent(event, result.stream_shard, result.stream_position,
                               queued_destinations=tuple(getattr(result, "queued_destinations", ())))
        for observer in list(self.observers):
            outcome = observer(created)
            if inspect.isawaitable(outcome):
                # An observer may hold the answer back until it is done, e.g.
                # recording the write's position for read-your-writes elsewhere.
                await outcome
        return created


class _Stale(Exception):
    pass


class _Duplicate(Exception):
    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


def _stream_payload(event: Event) -> dict[str, Any]:
    payload: dict[str, Any] = {"room_id": event.room_id, "event_id": event.event_id, "type": event.type, "sender": event.sender}
    if event.state_key is not None:
        payload["state_key"] = event.state_key
    if event.type == auth_rules.MEMBER and event.membership is not None:
        payload["membership"] = event.membership
    return payload


def _auth_error(e: AuthError) -> MatrixError:
    if isinstance(e, EventSizeError):
        return MatrixError(413, Codes.TOO_LARGE, e.reason)
    return forbidden(e.reason)

