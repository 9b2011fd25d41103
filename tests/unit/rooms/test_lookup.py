"""Pure parts of room summaries: allowed rooms of restricted join rules, the summary object."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.handlers.rooms.lookup import allowed_room_ids, summary_from_state


class _Event:
    def __init__(self, content: dict) -> None:
        self.content = content


class AllowedRoomIdsTests(unittest.TestCase):
    """allowed_room_ids."""

    def test_restricted_rules_list_membership_rooms(self) -> None:
        """Only m.room_membership entries with a string room_id count, for restricted rules only."""
        rules = {"join_rule": "restricted", "allow": [
            {"type": "m.room_membership", "room_id": "!a:x"}, {"type": "other", "room_id": "!b:x"},
            {"type": "m.room_membership", "room_id": 5}, "junk"]}
        self.assertEqual(allowed_room_ids(rules), ["!a:x"])
        self.assertEqual(allowed_room_ids({**rules, "join_rule": "knock_restricted"}), ["!a:x"])
        self.assertEqual(allowed_room_ids({**rules, "join_rule": "invite"}), [])
        self.assertEqual(allowed_room_ids({"join_rule": "restricted", "allow": "nope"}), [])
        self.assertEqual(allowed_room_ids(None), [])


class SummaryFromStateTests(unittest.TestCase):
    """summary_from_state."""

    def test_defaults_without_state(self) -> None:
        """A room without optional state: invite join rule, not world readable, no guests, no optional keys."""
        self.assertEqual(summary_from_state("!r:x", "12", {}, 0), {
            "room_id": "!r:x", "num_joined_members": 0, "world_readable": False, "guest_can_join": False,
            "join_rule": "invite", "room_version": "12",
        })

    def test_ignores_malformed_values(self) -> None:
        """Non-string or empty names, topics and join rules are left out or defaulted."""
        state = {"m.room.name": _Event({"name": 3}), "m.room.topic": _Event({"topic": ""}),
                 "m.room.join_rules": _Event({"join_rule": ["public"]}),
                 "m.room.guest_access": _Event({"guest_access": "can_join"}),
                 "m.room.history_visibility": _Event({"history_visibility": "world_readable"})}
        summary = summary_from_state("!r:x", "11", state, 3)
        self.assertNotIn("name", summary)
        self.assertNotIn("topic", summary)
        self.assertEqual(summary["join_rule"], "invite")
        self.assertTrue(summary["guest_can_join"])
        self.assertTrue(summary["world_readable"])
