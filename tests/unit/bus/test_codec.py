"""The entry codec: pure, no Redis."""

import json

from twisted.trial.unittest import SynchronousTestCase

from bus.codec import after_id, entry_id, from_fields, parse_entry_id, to_fields
from bus.errors import MalformedEntry
from bus.model import MAX_POSITION, Entry


class EntryIdTests(SynchronousTestCase):
    def test_entry_id_is_position_dash_zero(self):
        """A position maps to the explicit stream ID ``<position>-0``."""
        self.assertEqual(entry_id(42), "42-0")
        self.assertEqual(entry_id(MAX_POSITION), f"{MAX_POSITION}-0")

    def test_entry_id_refuses_non_positions(self):
        """Zero, negatives, bools, too-large and non-int positions are refused."""
        for bad in (0, -1, MAX_POSITION + 1, True, 1.0, "3"):
            self.assertRaises(ValueError, entry_id, bad)

    def test_after_id_accepts_zero(self):
        """Reading after position 0 means reading the whole stream."""
        self.assertEqual(after_id(0), "0-0")
        self.assertEqual(after_id(7), "7-0")
        self.assertRaises(ValueError, after_id, -1)

    def test_parse_entry_id(self):
        """IDs of the form <position>-0 parse; anything else is malformed."""
        self.assertEqual(parse_entry_id(b"17-0"), 17)
        self.assertEqual(parse_entry_id("17-0"), 17)
        for bad in (b"17-1", b"17", b"0-0", b"x-0", b"-0", b"1700000000000-3"):
            self.assertRaises(MalformedEntry, parse_entry_id, bad)


class FieldsTests(SynchronousTestCase):
    def test_round_trip(self):
        """to_fields then from_fields gives back prev and payload."""
        payload = {"room_id": "!a:b", "n": 3, "nested": {"x": [1, None, True]}, "é": "ü"}
        fields = to_fields(4, payload)
        entry = from_fields("events", 2, b"9-0", fields)
        self.assertEqual(entry, Entry("events", 2, 9, 4, payload))

    def test_unknown_prev_is_omitted(self):
        """A writer that does not know its previous position sends no prev field."""
        fields = to_fields(None, {})
        self.assertNotIn(b"prev", fields)
        self.assertIsNone(from_fields("events", 0, b"5-0", fields).prev)

    def test_encoding_is_compact_sorted_utf8(self):
        """The data field is compact JSON with sorted keys, in UTF-8."""
        fields = to_fields(1, {"b": 1, "a": "é"})
        self.assertEqual(fields[b"v"], b"1")
        self.assertEqual(fields[b"prev"], b"1")
        self.assertEqual(fields[b"data"], '{"a":"é","b":1}'.encode())

    def test_str_keys_are_accepted(self):
        """Fields decoded to str by a client still decode."""
        entry = from_fields("typing", 0, "3-0", {"v": "1", "prev": "2", "data": "{}"})
        self.assertEqual((entry.position, entry.prev, entry.payload), (3, 2, {}))

    def test_payload_must_be_a_json_object(self):
        """Non-mapping payloads and non-JSON values are refused at encoding time."""
        self.assertRaises(TypeError, to_fields, 1, ["a"])
        self.assertRaises(ValueError, to_fields, 1, {"x": float("nan")})
        self.assertRaises(TypeError, to_fields, 1, {"x": object()})
        self.assertRaises(ValueError, to_fields, -1, {})

    def test_malformed_entries(self):
        """Every protocol violation raises MalformedEntry, never something else."""
        good = {b"v": b"1", b"prev": b"1", b"data": b"{}"}
        cases = [
            {**good, b"v": b"2"},
            {k: v for k, v in good.items() if k != b"v"},
            {**good, b"prev": b"x"},
            {**good, b"prev": b"-1"},
            {**good, b"prev": b"5"},  # prev not below the position
            {k: v for k, v in good.items() if k != b"data"},
            {**good, b"data": b"not json"},
            {**good, b"data": b"[1]"},
            {**good, b"data": b"\xff"},
        ]
        for fields in cases:
            self.assertRaises(MalformedEntry, from_fields, "events", 0, b"5-0", fields)
        self.assertRaises(MalformedEntry, from_fields, "events", 0, b"5-1", good)

    def test_data_is_plain_json(self):
        """Any JSON library can read the data field (documented in PROTOCOL.md)."""
        fields = to_fields(None, {"k": [1, 2]})
        self.assertEqual(json.loads(fields[b"data"]), {"k": [1, 2]})
