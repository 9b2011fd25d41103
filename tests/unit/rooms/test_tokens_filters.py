"""Sync/pagination tokens and event filters (pure)."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from homeserver.errors import MatrixError
from homeserver.handlers.rooms.filters import EventFilter, SyncFilter, apply_event_fields
from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken, TopoToken

COUNTS = {"events": 4, "receipts": 2, "typing": 2}
positions = st.integers(min_value=0, max_value=2**62)


class StreamTokenTests(SynchronousTestCase):
    """Sync token encoding."""
    @given(
        st.lists(positions, min_size=4, max_size=4),
        st.lists(positions, min_size=2, max_size=2),
        st.lists(positions, min_size=2, max_size=2),
        positions,
    )
    def test_round_trip(self, events, receipts, typing, account):
        """Any token encodes to a URL-safe string that decodes to itself."""
        token = StreamToken(tuple(events), tuple(receipts), tuple(typing), account)
        text = token.encode()
        self.assertRegex(text, r"^[0-9a-z._]+$")
        self.assertEqual(StreamToken.decode(text, COUNTS), token)

    def test_compact(self):
        """A fresh install's token is short."""
        self.assertEqual(StreamToken.zero(COUNTS).encode(), "s1_e0.0.0.0_r0.0_t0.0_a0")
        self.assertEqual(StreamToken((36, 0, 0, 1), (0, 0), (0, 0), 35).encode(), "s1_e10.0.0.1_r0.0_t0.0_az")

    def test_refuses_garbage_and_other_layouts(self):
        """Malformed tokens, or tokens made for other shard counts, are refused."""
        for text in ("", "s1", "s2_e0.0.0.0_r0.0_t0.0_a0", "s1_e0.0.0_r0.0_t0.0_a0", "s1_e0.0.0.0_r0.0_t0.0",
                     "s1_e0.0.0.-1_r0.0_t0.0_a0", "s1_x0.0.0.0_r0.0_t0.0_a0", "s1_e0.0.0.0_r0.0_t0.0_aZZ",
                     "s1_e0.0.0.0_r0.0_t0.0_a" + "z" * 14, None, "s1_e..._r0.0_t0.0_a0"):
            with self.assertRaises(InvalidTokenError, msg=text):
                StreamToken.decode(text, COUNTS)  # type: ignore[arg-type]

    def test_max_with(self):
        """Component-wise maximum, used so a token never moves backwards."""
        a = StreamToken((1, 5, 0, 0), (2, 0), (0, 9), 3)
        b = StreamToken((4, 1, 0, 7), (1, 1), (0, 0), 1)
        self.assertEqual(a.max_with(b), StreamToken((4, 5, 0, 7), (2, 1), (0, 9), 3))
        self.assertTrue(a.max_with(b).is_after_or_equal(a))
        self.assertFalse(a.is_after_or_equal(b))

    def test_topo_token_negative_position(self):
        """A backfilled event's negative stream position round-trips and stays distinct from the positive one."""
        t = TopoToken(3, -17)
        self.assertEqual(TopoToken.decode(t.encode()), t)
        self.assertNotEqual(t.encode(), TopoToken(3, 17).encode())

    def test_topo_token(self):
        """Topological tokens round-trip and order by (depth, position)."""
        t = TopoToken(12, 345)
        self.assertEqual(TopoToken.decode(t.encode()), t)
        self.assertLess(TopoToken(1, 9), TopoToken(2, 0))
        for bad in ("12_3", "t", "t1", "t1_x!", "s1_e0"):
            with self.assertRaises(InvalidTokenError):
                TopoToken.decode(bad)


class FilterTests(SynchronousTestCase):
    """Event filters."""
    def ev(self, type="m.room.message", sender="@a:x", room_id="!r:x", content=None):
        """A client event."""
        return {"type": type, "sender": sender, "room_id": room_id, "content": content or {}}

    def test_types_with_wildcards(self):
        """types/not_types accept a trailing * wildcard; not_types wins."""
        f = EventFilter.parse({"types": ["m.room.*"], "not_types": ["m.room.member"]})
        self.assertTrue(f.allows(self.ev("m.room.message")))
        self.assertFalse(f.allows(self.ev("m.room.member")))
        self.assertFalse(f.allows(self.ev("org.custom")))
        self.assertTrue(EventFilter.parse({"types": ["m.room.[x]"]}).allows(self.ev("m.room.[x]")))
        self.assertFalse(EventFilter.parse({"types": []}).allows(self.ev()))

    def test_senders_rooms_and_urls(self):
        """senders/not_senders, rooms/not_rooms and contains_url."""
        f = EventFilter.parse({"senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"], "not_rooms": ["!bad:x"]})
        self.assertTrue(f.allows(self.ev(sender="@a:x")))
        self.assertFalse(f.allows(self.ev(sender="@b:x")))
        self.assertFalse(f.allows(self.ev(sender="@c:x")))
        self.assertFalse(f.allows(self.ev(room_id="!bad:x")))
        urls = EventFilter.parse({"contains_url": True})
        self.assertTrue(urls.allows(self.ev(content={"url": "mxc://x/y"})))
        self.assertFalse(urls.allows(self.ev(content={"body": "x"})))
        self.assertEqual(len(urls.filter([self.ev(content={"url": "mxc://x/y"}), self.ev()])), 1)

    def test_parse_refuses_wrong_types(self):
        """Known keys with the wrong JSON type are M_BAD_JSON."""
        for body in ({"types": "m.room.message"}, {"limit": -1}, {"limit": True}, {"lazy_load_members": "yes"},
                     {"senders": [1]}, [], {"contains_url": 1}):
            with self.assertRaises(MatrixError) as cm:
                EventFilter.parse(body)
            self.assertEqual(cm.exception.errcode, "M_BAD_JSON")
        for body in ({"room": []}, {"room": {"include_leave": 1}}, {"room": {"timeline": {"types": [2]}}}, 5):
            with self.assertRaises(MatrixError):
                SyncFilter.parse(body)

    def test_sync_filter_defaults_and_fields(self):
        """Default timeline limit is 10; room filter; event_fields keeps dotted paths."""
        self.assertEqual(SyncFilter.parse(None).timeline_limit, 10)
        f = SyncFilter.parse({"room": {"rooms": ["!a:x"], "include_leave": True, "timeline": {"limit": 3}},
                              "event_fields": ["type", "content.body", "content.m\\.relates_to"]})
        self.assertEqual(f.timeline_limit, 3)
        self.assertTrue(f.room.include_leave)
        self.assertTrue(f.room.allows_room("!a:x"))
        self.assertFalse(f.room.allows_room("!b:x"))
        event = {"type": "m.room.message", "sender": "@a:x", "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": 1}}
        self.assertEqual(apply_event_fields(event, f.event_fields),
                         {"type": "m.room.message", "content": {"body": "hi", "m.relates_to": 1}})
        self.assertIs(apply_event_fields(event, None), event)
