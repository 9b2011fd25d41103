"""Pure pieces of receiving PDUs: parsing, size limits, content hash handling, auth chain checks."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.core.builder import build_local_event
from homeserver.core.room_versions import get_room_version
from homeserver.core.signing import generate_signing_key
from homeserver.federation.events import PduRefused, federation_pdu, parse_received_pdu
from homeserver.federation.events import check_auth_chain as _auth_chain_accepted

V10 = get_room_version("10")
SERVER = "remote.test"
KEY = generate_signing_key("k1")


def make(event_type, sender, content, prev=(), auth=(), state_key=None, room_id="!r:remote.test", ts=1000):
    """A signed v10 event."""
    return build_local_event(
        V10, server_name=SERVER, signing_key=KEY, event_type=event_type, state_key=state_key, sender=sender,
        content=content, room_id=room_id, prev_events=list(prev), auth_events=list(auth), origin_server_ts=ts,
    )


def small_room():
    """create, creator's join, power levels."""
    create = make("m.room.create", "@a:remote.test", {"room_version": "10", "creator": "@a:remote.test"}, state_key="")
    join = make("m.room.member", "@a:remote.test", {"membership": "join"}, [create], [create], state_key="@a:remote.test", ts=1001)
    power = make("m.room.power_levels", "@a:remote.test", {"users": {"@a:remote.test": 100}}, [join], [create, join],
                 state_key="", ts=1002)
    return create, join, power


class ParseTests(unittest.TestCase):
    def test_valid_pdu_round_trips(self):
        """A well-formed signed PDU parses to the same event."""
        create, join, _ = small_room()
        parsed = parse_received_pdu(federation_pdu(join), V10)
        self.assertEqual(parsed.event_id, join.event_id)
        self.assertEqual(parsed.content["membership"], "join")

    def test_content_hash_mismatch_gives_redacted_form(self):
        """Tampered content: the event is kept in its redacted form (same event ID, content pruned)."""
        create, join, _ = small_room()
        msg = make("m.room.message", "@a:remote.test", {"body": "original"}, [join], [create, join], ts=1003)
        pdu = federation_pdu(msg)
        pdu["content"] = {"body": "tampered"}
        parsed = parse_received_pdu(pdu, V10)
        self.assertEqual(parsed.event_id, msg.event_id)
        self.assertEqual(dict(parsed.content), {})

    def test_oversized_pdu_refused(self):
        """Over 64 KiB is refused outright."""
        create, join, _ = small_room()
        msg = make("m.room.message", "@a:remote.test", {"body": "x" * 70000}, [join], [create, join])
        with self.assertRaises(PduRefused):
            parse_received_pdu(federation_pdu(msg), V10)

    def test_malformed_pdu_refused(self):
        """Missing fields are refused."""
        with self.assertRaises(PduRefused):
            parse_received_pdu({"type": "m.room.message", "room_id": "!r:remote.test"}, V10)
        with self.assertRaises(PduRefused):
            parse_received_pdu(["not", "an", "object"], V10)

    def test_federation_pdu_drops_unsigned(self):
        """Local unsigned data never goes over federation."""
        create, join, _ = small_room()
        pdu = join.get_pdu_json()
        pdu["unsigned"] = {"prev_content": {"x": 1}}
        from homeserver.core.events import Event

        self.assertNotIn("unsigned", federation_pdu(Event.from_pdu(pdu, V10)))


class AuthChainTests(unittest.TestCase):
    def test_consistent_chain_is_accepted(self):
        """A create/join/power chain passes in depth order."""
        create, join, power = small_room()
        accepted = _auth_chain_accepted(V10, {e.event_id: e for e in (power, join, create)})
        self.assertEqual(set(accepted), {create.event_id, join.event_id, power.event_id})

    def test_event_failing_its_auth_events_is_dropped_with_dependants(self):
        """A stranger's power levels change fails; an event citing it is dropped too."""
        create, join, power = small_room()
        evil = make("m.room.power_levels", "@evil:remote.test", {"users": {"@evil:remote.test": 100}}, [power],
                    [create, join], state_key="", ts=1004)
        cites = make("m.room.topic", "@a:remote.test", {"topic": "t"}, [evil], [create, join, evil], state_key="", ts=1005)
        accepted = _auth_chain_accepted(V10, {e.event_id: e for e in (create, join, power, evil, cites)})
        self.assertNotIn(evil.event_id, accepted)
        self.assertNotIn(cites.event_id, accepted)
        self.assertIn(power.event_id, accepted)

    def test_missing_auth_event_drops_event(self):
        """An event whose auth events were not supplied is not accepted."""
        create, join, power = small_room()
        accepted = _auth_chain_accepted(V10, {e.event_id: e for e in (create, power)})
        self.assertNotIn(power.event_id, accepted)
