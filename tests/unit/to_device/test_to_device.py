"""The to-device section of sync tokens and sendToDevice body validation (pure)."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.errors import MatrixError
from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken
from homeserver.handlers.to_device import parse_send_body

COUNTS = {"events": 1, "receipts": 1, "typing": 1, "presence": 1, "to_device": 2}


class ToDeviceTokenTests(unittest.TestCase):
    """StreamToken.to_device."""

    def test_round_trip_and_max(self) -> None:
        """A d section follows p, decodes back, and max_with takes the per-shard maximum."""
        token = StreamToken((1,), (2,), (3,), 4, (5,), (6, 40))
        text = token.encode()
        self.assertTrue(text.endswith("_p5_d6.14"))
        self.assertEqual(StreamToken.decode(text, COUNTS), token)
        other = StreamToken((0,), (0,), (0,), 0, (0,), (9, 1))
        self.assertEqual(token.max_with(other).to_device, (9, 40))

    def test_missing_sections_read_as_zero(self) -> None:
        """Tokens without d (or without p and d) decode with to_device 0; a d without p is read too."""
        self.assertEqual(StreamToken.decode("s1_e1_r2_t3_a4_p5", COUNTS).to_device, (0, 0))
        self.assertEqual(StreamToken.decode("s1_e1_r2_t3_a4", COUNTS).to_device, (0, 0))
        token = StreamToken.decode("s1_e1_r2_t3_a4_d7.8", {**COUNTS, "presence": 0})
        self.assertEqual((token.presence, token.to_device), ((), (7, 8)))

    def test_bad_sections_refused(self) -> None:
        """Wrong shard counts, repeated or out-of-order sections are refused."""
        for text in ("s1_e1_r2_t3_a4_p5_d1", "s1_e1_r2_t3_a4_d1.2_p5", "s1_e1_r2_t3_a4_d1.2_d1.2",
                     "s1_e1_r2_t3_a4_p5_d1.2_x1"):
            self.assertRaises(InvalidTokenError, StreamToken.decode, text, COUNTS)


class ParseSendBodyTests(unittest.TestCase):
    """parse_send_body."""

    def test_valid_body(self) -> None:
        """Users with no devices are dropped; device maps are kept as given."""
        body = {"messages": {"@a:hs": {"D1": {"x": 1}, "*": {}}, "@b:hs": {}}}
        self.assertEqual(parse_send_body("m.room_key_request", "t", body), {"@a:hs": {"D1": {"x": 1}, "*": {}}})

    def test_refusals(self) -> None:
        """Shape errors are M_BAD_JSON, bad identifiers M_INVALID_PARAM."""
        cases = [
            ("m.t", "t", [], "M_BAD_JSON"),
            ("m.t", "t", {"messages": []}, "M_BAD_JSON"),
            ("m.t", "t", {"messages": {"@a:hs": {"D": 1}}}, "M_BAD_JSON"),
            ("m.t", "t", {"messages": {"a": {}}}, "M_INVALID_PARAM"),
            ("m.t", "t", {"messages": {"@a:hs": {"": {}}}}, "M_INVALID_PARAM"),
            ("bad type", "t", {"messages": {}}, "M_INVALID_PARAM"),
            ("", "t", {"messages": {}}, "M_INVALID_PARAM"),
            ("m.t", "x" * 256, {"messages": {}}, "M_INVALID_PARAM"),
        ]
        for etype, txn, body, code in cases:
            with self.assertRaises(MatrixError) as cm:
                parse_send_body(etype, txn, body)
            self.assertEqual(cm.exception.errcode, code, (etype, body))
