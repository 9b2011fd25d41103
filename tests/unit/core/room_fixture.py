"""A tiny in-memory room for tests of the pure core (and state resolution).

It builds well-formed PDUs for any room version: the right event ID scheme,
``auth_events`` chosen by the auth events selection algorithm, ``prev_events``
chaining, increasing ``depth`` and ``origin_server_ts``. It does NOT run auth:
tests decide what to check.
"""

from __future__ import annotations

from typing import Any

from homeserver.core.auth import auth_types_for_event
from homeserver.core.events import Event
from homeserver.core.room_versions import EventFormat, RoomVersion

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
MOD = "@mod:a.example"


class RoomFixture:
    """A room under construction: ``state`` maps ``(type, state_key)`` to
    the current state events; ``events`` holds every event built so far."""

    def __init__(self, room_version: RoomVersion, creator: str = ALICE) -> None:
        self.room_version = room_version
        self.creator = creator
        self.state: dict[tuple[str, str], Event] = {}
        self.events: dict[str, Event] = {}
        self.room_id: str | None = None
        self.last: Event | None = None
        self._counter = 0

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def build(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        prev: list[Event] | None = None,
        auth: list[Event] | None = None,
        extra: dict[str, Any] | None = None,
        apply: bool = False,
    ) -> Event:
        """Build an event on top of the current state (not applied unless
        ``apply``). ``auth`` overrides the selected auth events."""
        n = self._next()
        rv = self.room_version
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_000_000 + n,
            "depth": n,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        is_v12_create = rv.room_id_is_create_event_hash and event_type == "m.room.create"
        if not is_v12_create:
            pdu["room_id"] = self.room_id if self.room_id else "!room:a.example"
        if prev is None:
            prev = [self.last] if self.last is not None else []
        if auth is None:
            auth = []
            if event_type != "m.room.create":
                # Select auth events from the current state.
                probe = dict(pdu, prev_events=[], auth_events=[])
                if rv.event_format is EventFormat.V1:
                    probe["event_id"] = "$probe:a.example"
                probe_event = Event.from_pdu(probe, rv)
                for key in sorted(auth_types_for_event(rv, probe_event)):
                    if key in self.state:
                        auth.append(self.state[key])
        if rv.event_format is EventFormat.V1:
            pdu["event_id"] = "$%d:%s" % (n, sender.split(":", 1)[1])
            pdu["prev_events"] = [[e.event_id, {"sha256": "aGFzaA"}] for e in prev]
            pdu["auth_events"] = [[e.event_id, {"sha256": "aGFzaA"}] for e in auth]
        else:
            pdu["prev_events"] = [e.event_id for e in prev]
            pdu["auth_events"] = [e.event_id for e in auth]
        if extra:
            pdu.update(extra)
        event = Event.from_pdu(pdu, rv)
        if apply:
            self.apply(event)
        return event

    def apply(self, event: Event) -> Event:
        """Make ``event`` part of the room: record it, chain it, and update
        the state if it is a state event."""
        self.events[event.event_id] = event
        self.last = event
        if event.type == "m.room.create" and self.room_id is None:
            self.room_id = event.room_id
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        return event

    def auth_state(self) -> dict[tuple[str, str], Event]:
        """The current state as an auth state mapping (includes the create
        event, as v12 callers must)."""
        return dict(self.state)

    # --- conveniences -------------------------------------------------------

    def create(self, content: dict[str, Any] | None = None) -> Event:
        """Create the room (content defaults: room_version and, before v11,
        creator)."""
        c: dict[str, Any] = {"room_version": self.room_version.identifier}
        if not self.room_version.implicit_room_creator:
            c["creator"] = self.creator
        if content:
            c.update(content)
        room_id = None if self.room_version.room_id_is_create_event_hash else "!room:%s" % (
            self.creator.split(":", 1)[1]
        )
        self.room_id = room_id
        return self.build("m.room.create", self.creator, c, state_key="", apply=True)

    def member(self, user: str, membership: str, sender: str | None = None, **content: Any) -> Event:
        """Apply an m.room.member event without auth checks."""
        c = {"membership": membership, **content}
        return self.build("m.room.member", sender or user, c, state_key=user, apply=True)

    def power_levels(self, content: dict[str, Any], sender: str | None = None) -> Event:
        """Apply an m.room.power_levels event without auth checks."""
        return self.build("m.room.power_levels", sender or self.creator, content, state_key="", apply=True)

    def join_rules(self, rule: str, sender: str | None = None, **content: Any) -> Event:
        """Apply an m.room.join_rules event without auth checks."""
        return self.build(
            "m.room.join_rules", sender or self.creator, {"join_rule": rule, **content},
            state_key="", apply=True,
        )

    def standard_room(self, join_rule: str = "public", users: dict[str, int] | None = None) -> "RoomFixture":
        """Create the room, join the creator, set power levels (creator 100
        before v12; ``MOD`` 50) and the join rule."""
        self.create()
        self.member(self.creator, "join")
        levels = {MOD: 50}
        if not self.room_version.creators_have_infinite_power:
            levels[self.creator] = 100
        if users:
            levels.update(users)
        self.power_levels({"users": levels})
        self.join_rules(join_rule)
        return self
