"""Pure sync assembly: state sections, lazy members, summaries, receipts."""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from homeserver.handlers.sync.assembly import lazy_members, receipt_contents, room_summary, timeline_state

M = "m.room.member"


@attrs.frozen
class Receipt:
    """A receipt row as the store returns it."""
    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    data: str


class AssemblyTests(SynchronousTestCase):
    """Pure sync assembly helpers."""
    def test_timeline_state(self):
        """Full syncs get all state; gappy ones the changes since the token; complete ones nothing."""
        start = {("m.room.name", ""): "$n2", (M, "@a:x"): "$a1", ("m.room.topic", ""): "$t1"}
        since = {("m.room.name", ""): "$n1", (M, "@a:x"): "$a1"}
        self.assertEqual(timeline_state(start, since, full=True, limited=False), start)
        self.assertEqual(timeline_state(start, since, full=False, limited=True),
                         {("m.room.name", ""): "$n2", ("m.room.topic", ""): "$t1"})
        self.assertEqual(timeline_state(start, since, full=False, limited=False), {})

    def test_lazy_members(self):
        """Only the senders' memberships are kept; incremental syncs add them from the start state."""
        state = {(M, "@a:x"): "$a", (M, "@b:x"): "$b", ("m.room.name", ""): "$n"}
        start = {(M, "@a:x"): "$a", (M, "@b:x"): "$b", (M, "@c:x"): "$c"}
        self.assertEqual(lazy_members(state, start, ["@a:x"], full=True), {(M, "@a:x"): "$a", ("m.room.name", ""): "$n"})
        self.assertEqual(lazy_members({}, start, ["@c:x"], full=False), {(M, "@c:x"): "$c"})

    def test_room_summary(self):
        """Heroes are other joined then invited members (at most 5), else those who left."""
        members = [("@me:x", "join"), ("@b:x", "invite"), ("@a:x", "join"), ("@z:x", "leave")]
        self.assertEqual(room_summary(members, "@me:x"),
                         {"m.heroes": ["@a:x", "@b:x"], "m.joined_member_count": 2, "m.invited_member_count": 1})
        alone = room_summary([("@me:x", "join"), ("@z:x", "leave")], "@me:x")
        self.assertEqual(alone["m.heroes"], ["@z:x"])
        many = room_summary([(f"@u{i}:x", "join") for i in range(9)], "@me:x")
        self.assertEqual(len(many["m.heroes"]), 5)

    def test_receipts_private_only_to_owner(self):
        """m.read.private receipts are shown to their owner only."""
        rows = [Receipt("!r:x", "m.read", "@a:x", "$e", '{"ts": 1}'),
                Receipt("!r:x", "m.read.private", "@b:x", "$e", '{"ts": 2}'),
                Receipt("!s:x", "m.read.private", "@me:x", "$f", '{"ts": 3}')]
        out = receipt_contents(rows, "@me:x")
        self.assertEqual(out, {"!r:x": {"$e": {"m.read": {"@a:x": {"ts": 1}}}},
                               "!s:x": {"$f": {"m.read.private": {"@me:x": {"ts": 3}}}}})
