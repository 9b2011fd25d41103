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


class _FakeDispatcher:
    """Records commands instead of running them on a shard owner."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, dict]] = []

    def register(self, command: str, stream: str, handler: object) -> None:
        pass

    async def run(self, command: str, key: str, args: dict) -> dict:
        self.runs.append((command, key, args))
        return {}


class _Requester:
    user_id = "@alice:a.test"
    device_id = "ADEV"


class FederatedToDeviceTests(unittest.TestCase):
    """ToDeviceCommands: m.direct_to_device EDUs out and in."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from homeserver.handlers.to_device import ToDeviceCommands

        self.dispatcher = _FakeDispatcher()
        self.sent: list[tuple[str, dict]] = []
        self.commands = ToDeviceCommands(Clock(), "a.test", self.dispatcher, None, {}, lambda user_id: 0)

        async def send_remote(destination: str, edu: dict) -> None:
            self.sent.append((destination, edu))

        self.commands.send_remote = send_remote

    async def test_remote_recipients_grouped_per_server(self) -> None:
        """Local recipients are delivered here; each remote server gets one EDU with all its users."""
        body = {"messages": {"@bob:b.test": {"B1": {"k": 1}}, "@carol:b.test": {"*": {"k": 2}},
                             "@dan:c.test": {"D1": {"k": 3}}, "@eve:a.test": {"E1": {"k": 4}}}}
        await self.commands.send(_Requester(), "m.room_key_request", "txn1", body)
        self.assertEqual([(c, k) for c, k, _ in self.dispatcher.runs], [("to_device.deliver", "@eve:a.test")])
        self.assertEqual([d for d, _ in self.sent], ["b.test", "c.test"])
        edu = self.sent[0][1]
        self.assertEqual(edu["edu_type"], "m.direct_to_device")
        self.assertEqual(edu["content"]["sender"], "@alice:a.test")
        self.assertEqual(edu["content"]["type"], "m.room_key_request")
        self.assertEqual(edu["content"]["messages"], {"@bob:b.test": {"B1": {"k": 1}}, "@carol:b.test": {"*": {"k": 2}}})

    async def test_message_id_stable_per_transaction(self) -> None:
        """A client retry produces the same message_id; another transaction or server a different one."""
        body = {"messages": {"@bob:b.test": {"B1": {}}, "@dan:c.test": {"D1": {}}}}
        await self.commands.send(_Requester(), "m.x", "txn1", body)
        await self.commands.send(_Requester(), "m.x", "txn1", body)
        await self.commands.send(_Requester(), "m.x", "txn2", body)
        ids = [edu["content"]["message_id"] for _, edu in self.sent]
        self.assertEqual(ids[0], ids[2])
        self.assertNotEqual(ids[0], ids[1])
        self.assertNotEqual(ids[0], ids[4])

    async def test_receive_delivers_local_recipients_only(self) -> None:
        """Messages for local users are delivered with message_id as the transaction; others dropped."""
        content = {"sender": "@bob:b.test", "type": "m.room_key", "message_id": "m1",
                   "messages": {"@alice:a.test": {"ADEV": {"x": 1}}, "@zed:z.test": {"Z": {}},
                                "@eve:a.test": {"E": "not an object"}}}
        await self.commands.receive_remote("b.test", content)
        self.assertEqual(self.dispatcher.runs, [("to_device.deliver", "@alice:a.test", {
            "sender": "@bob:b.test", "sender_device": "", "txn_id": "m1", "user_id": "@alice:a.test",
            "event_type": "m.room_key", "messages": {"ADEV": {"x": 1}}})])

    async def test_receive_refusals(self) -> None:
        """A sender of another server is M_FORBIDDEN; malformed fields are M_BAD_JSON; nothing delivered."""
        base = {"sender": "@bob:b.test", "type": "m.t", "message_id": "m1", "messages": {"@alice:a.test": {"D": {}}}}
        cases = [
            ("c.test", base, "M_FORBIDDEN"),
            ("b.test", {**base, "sender": 5}, "M_FORBIDDEN"),
            ("b.test", {**base, "type": "bad type"}, "M_BAD_JSON"),
            ("b.test", {**base, "message_id": ""}, "M_BAD_JSON"),
            ("b.test", {**base, "messages": []}, "M_BAD_JSON"),
            ("b.test", [], "M_BAD_JSON"),
        ]
        for origin, content, code in cases:
            with self.assertRaises(MatrixError) as caught:
                await self.commands.receive_remote(origin, content)
            self.assertEqual(caught.exception.errcode, code, (origin, content))
        self.assertEqual(self.dispatcher.runs, [])

    async def test_without_federation_remote_recipients_skipped(self) -> None:
        """A process that does not federate delivers locally and drops remote recipients."""
        self.commands.send_remote = None
        await self.commands.send(_Requester(), "m.x", "t", {"messages": {"@bob:b.test": {"B1": {}}, "@eve:a.test": {"E": {}}}})
        self.assertEqual([k for _, k, _ in self.dispatcher.runs], ["@eve:a.test"])
