"""Tests for the Event value type and PDU format validation."""

from __future__ import annotations

import copy
import pickle
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.errors import InvalidEventError
from homeserver.core.events import Event, FrozenDict, FrozenList, freeze, thaw
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.core.signing import compute_event_id

V1, V3, V4, V6, V10, V11, V12 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "3", "4", "6", "10", "11", "12"))
H4 = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
H3 = "$Rqnc+F+dvnEYJTyHq/iKxU2bZ1CI92+kuZq3a5lr5Zg"


def pdu(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!r:example.org",
        "sender": "@a:example.org",
        "content": {"body": "hi", "nested": {"list": [1, 2]}},
        "origin_server_ts": 1234,
        "depth": 5,
        "prev_events": [H4],
        "auth_events": [H4],
        "hashes": {"sha256": "abc"},
        "signatures": {"example.org": {"ed25519:a": "sig"}},
        "unsigned": {"age": 4},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


class FromPduTests(SynchronousTestCase):
    """Event.from_pdu for each event format."""

    def test_v4_format(self) -> None:
        """v4+ events get a URL-safe hash ID and keep their fields."""
        data = pdu()
        event = Event.from_pdu(data, V10)
        self.assertEqual(event.event_id, compute_event_id(V10, data))
        self.assertEqual(event.room_id, "!r:example.org")
        self.assertEqual(event.type, "m.room.message")
        self.assertIsNone(event.state_key)
        self.assertFalse(event.is_state())
        self.assertEqual(event.sender, "@a:example.org")
        self.assertEqual(event.content, {"body": "hi", "nested": {"list": [1, 2]}})
        self.assertEqual(event.prev_event_ids, (H4,))
        self.assertEqual(event.auth_event_ids, (H4,))
        self.assertEqual(event.depth, 5)
        self.assertEqual(event.origin_server_ts, 1234)
        self.assertIs(event.room_version, V10)
        self.assertEqual(event.get_pdu_json(), data)
        self.assertEqual(event.unsigned, {"age": 4})
        self.assertEqual(event.hashes, {"sha256": "abc"})

    def test_v1_format(self) -> None:
        """v1/v2 take event_id from the PDU and normalise [id, hashes] pairs."""
        data = pdu(
            event_id="$e1:example.org",
            prev_events=[["$p:example.org", {"sha256": "x"}]],
            auth_events=[["$a1:example.org", {"sha256": "y"}], ["$a2:other.org", {}]],
        )
        event = Event.from_pdu(data, V1)
        self.assertEqual(event.event_id, "$e1:example.org")
        self.assertEqual(event.prev_event_ids, ("$p:example.org",))
        self.assertEqual(event.auth_event_ids, ("$a1:example.org", "$a2:other.org"))
        self.assertEqual(event.get_pdu_json()["event_id"], "$e1:example.org")

    def test_v1_requires_pairs_and_event_id(self) -> None:
        """v1 refuses plain ID lists and a missing event_id."""
        self.assertRaises(InvalidEventError, Event.from_pdu, pdu(event_id="$e:x.org", prev_events=["$p:x.org"]), V1)
        self.assertRaises(InvalidEventError, Event.from_pdu, pdu(prev_events=[["$p:x.org", {}]], auth_events=[]), V1)

    def test_v3_format(self) -> None:
        """v3 uses standard base64 IDs, for the event and its references."""
        event = Event.from_pdu(pdu(prev_events=[H3], auth_events=[]), V3)
        self.assertEqual(len(event.event_id), 44)
        self.assertRaises(InvalidEventError, Event.from_pdu, pdu(prev_events=[H4 + "x"]), V3)

    def test_event_id_key_dropped_for_hashed_formats(self) -> None:
        """A stray event_id does not change the computed ID and is dropped."""
        plain = Event.from_pdu(pdu(), V10)
        with_id = Event.from_pdu(pdu(event_id="$whatever"), V10)
        self.assertEqual(plain.event_id, with_id.event_id)
        self.assertNotIn("event_id", with_id.get_pdu_json())

    def test_state_event(self) -> None:
        """state_key makes a state event."""
        event = Event.from_pdu(pdu(type="m.room.member", state_key="@a:example.org", content={"membership": "join"}), V10)
        self.assertTrue(event.is_state())
        self.assertEqual(event.state_key_tuple, ("m.room.member", "@a:example.org"))
        self.assertEqual(event.membership, "join")

    def test_v12_create_derives_room_id(self) -> None:
        """v12 create events have no room_id; it is derived from the ID."""
        data = pdu(type="m.room.create", state_key="", room_id=..., prev_events=[], auth_events=[],
                   content={"room_version": "12"})
        event = Event.from_pdu(data, V12)
        self.assertEqual(event.room_id, "!" + event.event_id[1:])
        self.assertNotIn("room_id", event.get_pdu_json())

    def test_v12_implied_create_auth_event(self) -> None:
        """v12 non-create events implicitly cite the create event; earlier
        versions and the create event itself do not."""
        create = Event.from_pdu(
            pdu(type="m.room.create", state_key="", room_id=..., prev_events=[], auth_events=[],
                content={"room_version": "12"}), V12)
        self.assertEqual(create.auth_event_ids_with_create, ())
        message = Event.from_pdu(pdu(room_id=create.room_id), V12)
        self.assertEqual(message.auth_event_ids_with_create, (H4, create.event_id))
        old = Event.from_pdu(pdu(), V11)
        self.assertEqual(old.auth_event_ids_with_create, (H4,))

    def test_v12_create_type_with_other_state_key(self) -> None:
        """Only the ("m.room.create", "") event gets a derived room ID."""
        data = pdu(type="m.room.create", state_key="x", room_id=..., prev_events=[], auth_events=[])
        self.assertRaises(InvalidEventError, Event.from_pdu, data, V12)

    def test_v12_non_create_needs_hash_room_id(self) -> None:
        """v12 non-create events carry a hash room ID."""
        self.assertRaises(InvalidEventError, Event.from_pdu, pdu(), V12)
        Event.from_pdu(pdu(room_id="!" + H4[1:]), V12)

    def test_redacts(self) -> None:
        """redacts is top-level before v11 and in content from v11."""
        old = Event.from_pdu(pdu(type="m.room.redaction", redacts=H4, content={}), V10)
        self.assertEqual(old.redacts, H4)
        new = Event.from_pdu(pdu(type="m.room.redaction", content={"redacts": H4}), V11)
        self.assertEqual(new.redacts, H4)
        self.assertIsNone(Event.from_pdu(pdu(type="m.room.redaction", redacts=H4, content={}), V11).redacts)
        self.assertIsNone(Event.from_pdu(pdu(redacts=H4), V10).redacts)

    def test_invalid_shapes(self) -> None:
        """Missing or mistyped fields are InvalidEventError (a ValueError)."""
        bad = [
            pdu(type=...), pdu(type=5), pdu(sender=...), pdu(sender="nope"), pdu(content=...),
            pdu(content=[]), pdu(origin_server_ts="1"), pdu(depth=...), pdu(depth=-1),
            pdu(depth=True), pdu(state_key=5), pdu(hashes=[]), pdu(signatures="x"),
            pdu(prev_events="x"), pdu(prev_events=[5]), pdu(auth_events=["$short"]),
            pdu(room_id=...), pdu(room_id="nope"),
        ]
        for data in bad:
            self.assertRaises(InvalidEventError, Event.from_pdu, data, V10)
            self.assertRaises(ValueError, Event.from_pdu, data, V10)
        self.assertRaises(InvalidEventError, Event.from_pdu, "not a dict", V10)

    def test_strict_canonical_json(self) -> None:
        """v6+ refuse floats and out-of-range integers anywhere; v1-v5 accept."""
        for data in (pdu(content={"x": 1.5}), pdu(content={"x": 2**53}), pdu(origin_server_ts=2**60)):
            self.assertRaises(InvalidEventError, Event.from_pdu, data, V6)
            Event.from_pdu(data, V4)
        self.assertRaises(InvalidEventError, Event.from_pdu, pdu(depth=2**63), V4)


class FromStoredTests(SynchronousTestCase):
    """Event.from_stored rebuilds exactly what from_pdu built, without re-validating."""

    def assertSameEvent(self, stored: Event, original: Event) -> None:
        for field in ("event_id", "room_id", "type", "state_key", "sender", "content", "auth_event_ids",
                      "prev_event_ids", "depth", "origin_server_ts", "redacts", "room_version"):
            self.assertEqual(getattr(stored, field), getattr(original, field), field)
        self.assertEqual(stored.get_pdu_json(), original.get_pdu_json())
        self.assertEqual(stored, original)

    def test_same_event_across_formats(self) -> None:
        """Messages, state, v1 pairs, redactions (both rules) and a v12 create round-trip through the stored PDU."""
        cases = [
            (pdu(), V10),
            (pdu(type="m.room.member", state_key="@a:example.org", content={"membership": "join"}), V6),
            (pdu(event_id="$e1:example.org", prev_events=[["$p:example.org", {"sha256": "x"}]],
                 auth_events=[["$a1:example.org", {}]]), V1),
            (pdu(type="m.room.redaction", redacts=H4, content={}), V10),
            (pdu(type="m.room.redaction", content={"redacts": H4}), V11),
            (pdu(type="m.room.create", state_key="", room_id=..., prev_events=[], auth_events=[],
                 content={"room_version": "12"}), V12),
        ]
        for data, version in cases:
            original = Event.from_pdu(data, version)
            stored = Event.from_stored(original.get_pdu_json(), version, original.event_id)
            self.assertSameEvent(stored, original)
            self.assertIsInstance(stored.content, FrozenDict)

    def test_event_id_key_dropped(self) -> None:
        """A stored v3+ PDU carrying event_id does not keep the key."""
        original = Event.from_pdu(pdu(), V10)
        data = dict(original.get_pdu_json(), event_id=original.event_id)
        stored = Event.from_stored(data, V10, original.event_id)
        self.assertNotIn("event_id", stored.get_pdu_json())
        self.assertSameEvent(stored, original)

    def test_trusts_the_given_event_id(self) -> None:
        """The event ID is taken as given (no reference hash is computed)."""
        stored = Event.from_stored(pdu(), V10, "$given")
        self.assertEqual(stored.event_id, "$given")


class ImmutabilityTests(SynchronousTestCase):
    """Events are deeply immutable."""

    def test_content_frozen(self) -> None:
        """content and nested values cannot be mutated."""
        event = Event.from_pdu(pdu(), V10)
        self.assertIsInstance(event.content, FrozenDict)
        self.assertIsInstance(event.content, dict)
        with self.assertRaises(TypeError):
            event.content["x"] = 1  # type: ignore[index]
        with self.assertRaises(TypeError):
            event.content["nested"].pop("list")
        with self.assertRaises(TypeError):
            event.content["nested"]["list"].append(3)
        self.assertEqual(event.content["nested"]["list"], [1, 2])
        with self.assertRaises(AttributeError):
            event.type = "x"  # type: ignore[misc]

    def test_input_and_output_are_independent(self) -> None:
        """Mutating the input dict or get_pdu_json's result changes nothing."""
        data = pdu()
        event = Event.from_pdu(data, V10)
        data["content"]["body"] = "changed"
        out = event.get_pdu_json()
        out["content"]["nested"]["list"].append(3)
        self.assertEqual(event.content["body"], "hi")
        self.assertEqual(event.get_pdu_json()["content"]["nested"]["list"], [1, 2])

    def test_equality_hash_copy_pickle(self) -> None:
        """Equal PDUs make equal events; copies and pickles round-trip."""
        a = Event.from_pdu(pdu(), V10)
        b = Event.from_pdu(pdu(), V10)
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))
        self.assertNotEqual(a, Event.from_pdu(pdu(depth=6), V10))
        self.assertIs(copy.deepcopy(a.content), a.content)
        self.assertEqual(pickle.loads(pickle.dumps(a)), a)

    def test_freeze_thaw(self) -> None:
        """freeze / thaw convert deeply."""
        value = {"a": [1, {"b": [2]}]}
        frozen = freeze(value)
        self.assertEqual(frozen["a"][1]["b"], [2])
        self.assertIsInstance(frozen["a"], FrozenList)
        self.assertEqual(thaw(frozen), value)
        self.assertEqual(hash(freeze({"x": 1})), hash(freeze({"x": 1})))
