"""End-to-end tests of building local events: IDs, references, hashes,
signatures and auth, for every room version."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from unpaddedbase64 import encode_base64

from homeserver.core.auth import (
    auth_types_for_event,
    check_auth_rules,
    check_state_independent_auth_rules,
)
from homeserver.core.builder import build_local_event
from homeserver.core.events import Event
from homeserver.core.ids import is_valid_event_id, is_valid_room_id
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion
from homeserver.core.signing import (
    check_content_hash,
    compute_reference_hash,
    generate_signing_key,
    get_verify_key,
    verify_event_signature,
)
SERVER = "hs.example"
ALICE = "@alice:hs.example"
BOB = "@bob:hs.example"


class LocalRoom:
    """Builds a room with build_local_event, selecting auth events from the
    current state."""

    def __init__(self, rv: RoomVersion) -> None:
        self.rv = rv
        self.key = generate_signing_key("k")
        self.state: dict[tuple[str, str], Event] = {}
        self.events: list[Event] = []
        self.room_id: str | None = None if rv.room_id_is_create_event_hash else "!r:" + SERVER

    def send(self, event_type: str, sender: str, content: dict, state_key: str | None = None, redacts: str | None = None) -> Event:
        probe_auth: list[Event] = []
        if event_type != "m.room.create":
            # Build once without auth events to learn the selection.
            probe = build_local_event(
                self.rv, event_type=event_type, sender=sender, content=content,
                room_id=self.room_id, prev_events=[], auth_events=[], origin_server_ts=1,
                server_name=SERVER, signing_key=self.key, state_key=state_key,
            )
            probe_auth = [self.state[k] for k in sorted(auth_types_for_event(self.rv, probe)) if k in self.state]
        event = build_local_event(
            self.rv, event_type=event_type, sender=sender, content=content, room_id=self.room_id,
            prev_events=self.events[-1:], auth_events=probe_auth,
            origin_server_ts=1000 + len(self.events), server_name=SERVER, signing_key=self.key,
            state_key=state_key, redacts=redacts,
        )
        if event.type == "m.room.create":
            self.room_id = event.room_id
        self.events.append(event)
        if event.is_state():
            self.state[(event.type, event.state_key)] = event
        return event


class BuildLocalEventTests(SynchronousTestCase):
    """build_local_event in every room version."""

    def test_room_in_every_version(self) -> None:
        """A built room has valid IDs, hashes, signatures, depths and passes
        both auth checks."""
        for rv in KNOWN_ROOM_VERSIONS.values():
            room = LocalRoom(rv)
            creator_content = {"room_version": rv.identifier}
            if not rv.implicit_room_creator:
                creator_content["creator"] = ALICE
            create = room.send("m.room.create", ALICE, creator_content, state_key="")
            room.send("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
            users = {} if rv.creators_have_infinite_power else {ALICE: 100}
            room.send("m.room.power_levels", ALICE, {"users": users}, state_key="")
            room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="")
            room.send("m.room.member", BOB, {"membership": "join"}, state_key=BOB)
            message = room.send("m.room.message", BOB, {"body": "hi"})
            redaction = room.send("m.room.redaction", ALICE, {}, redacts=message.event_id)

            self.assertTrue(is_valid_room_id(create.room_id, rv), rv.identifier)
            if rv.room_id_is_create_event_hash:
                self.assertEqual(create.room_id, "!" + create.event_id[1:])
                self.assertNotIn(create.event_id, message.auth_event_ids)
            else:
                self.assertIn(create.event_id, message.auth_event_ids)
            self.assertEqual(redaction.redacts, message.event_id)
            by_id = {e.event_id: e for e in room.events}
            for depth, event in enumerate(room.events, start=1):
                self.assertEqual(event.depth, depth)
                self.assertTrue(is_valid_event_id(event.event_id, rv))
                pdu = event.get_pdu_json()
                self.assertTrue(check_content_hash(pdu))
                verify_event_signature(rv, pdu, SERVER, get_verify_key(room.key))
                auth = [by_id[i] for i in event.auth_event_ids]
                check_state_independent_auth_rules(rv, event, auth)
                auth_state = {(e.type, e.state_key): e for e in auth}
                auth_state.setdefault(("m.room.create", ""), create)
                check_auth_rules(rv, event, auth_state)

    def test_v1_references_carry_reference_hashes(self) -> None:
        """Rooms v1/v2 reference prev / auth events with their reference
        hashes and get $local:server IDs."""
        rv = KNOWN_ROOM_VERSIONS["2"]
        room = LocalRoom(rv)
        create = room.send("m.room.create", ALICE, {"creator": ALICE}, state_key="")
        join = room.send("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
        self.assertTrue(create.event_id.endswith(":" + SERVER))
        expected = [create.event_id, {"sha256": encode_base64(compute_reference_hash(rv, create.get_pdu_json()))}]
        self.assertEqual(join.get_pdu_json()["prev_events"], [expected])
        self.assertEqual(rv.event_format, EventFormat.V1)

    def test_v12_needs_room_id_for_non_create(self) -> None:
        """v12 non-create events need a room_id."""
        rv = KNOWN_ROOM_VERSIONS["12"]
        self.assertRaises(
            ValueError, build_local_event, rv, event_type="m.room.message", sender=ALICE,
            content={}, room_id=None, prev_events=[], auth_events=[], origin_server_ts=1,
            server_name=SERVER, signing_key=generate_signing_key("k"),
        )
