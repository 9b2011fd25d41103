"""Pure planning of room upgrades: power levels of the new room, the old room's restriction, aliases."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.handlers.rooms.upgrade import canonical_alias_without, plan_power_levels, restricted_power_levels

V10, V11, V12 = (KNOWN_ROOM_VERSIONS[v] for v in ("10", "11", "12"))


class PlanPowerLevelsTests(unittest.TestCase):
    """plan_power_levels."""

    def test_requester_raised_then_restored(self) -> None:
        """To a version without infinite creators: the copy runs with the requester at the highest level, then the old levels return."""
        old = {"users": {"@a:x": 50, "@b:x": 20}, "events": {"m.room.tombstone": 150}, "state_default": 50}
        initial, final = plan_power_levels(old, "@a:x", V10, frozenset({"@c:x"}), V11, frozenset({"@a:x"}))
        self.assertEqual(initial["users"], {"@a:x": 150, "@b:x": 20})
        self.assertEqual(final, old)

    def test_no_second_event_when_already_highest(self) -> None:
        """A requester already at the top level needs no restoring power levels event."""
        old = {"users": {"@a:x": 100}}
        initial, final = plan_power_levels(old, "@a:x", V10, frozenset({"@a:x"}), V11, frozenset({"@a:x"}))
        self.assertEqual(initial, old)
        self.assertIsNone(final)

    def test_v12_drops_creators(self) -> None:
        """To v12: every creator of the new room leaves ``users``; others stay."""
        old = {"users": {"@a:x": 100, "@c:x": 100, "@b:x": 10}}
        initial, final = plan_power_levels(old, "@a:x", V11, frozenset({"@a:x"}), V12, frozenset({"@a:x", "@c:x"}))
        self.assertEqual(initial["users"], {"@b:x": 10})
        self.assertIsNone(final)
        self.assertEqual(old["users"]["@a:x"], 100)  # input untouched

    def test_infinite_creator_keeps_100_in_older_version(self) -> None:
        """From v12 back to v11: the old room's creator (not in users) ends with 100."""
        initial, final = plan_power_levels({"users": {}}, "@a:x", V12, frozenset({"@a:x"}), V11, frozenset({"@a:x"}))
        self.assertEqual(initial["users"]["@a:x"], 100)
        self.assertIsNone(final)


class RestrictTests(unittest.TestCase):
    """restricted_power_levels and canonical_alias_without."""

    def test_restrict_raises_to_floor(self) -> None:
        """events_default and invite rise to max(50, users_default + 1); other keys stay."""
        out = restricted_power_levels({"users_default": 70, "events_default": 0, "ban": 50})
        self.assertEqual(out, {"users_default": 70, "events_default": 71, "invite": 71, "ban": 50})
        self.assertIsNone(restricted_power_levels({"events_default": 50, "invite": 60}))

    def test_canonical_alias_without(self) -> None:
        """Moved aliases leave alias and alt_aliases; None when nothing changes."""
        content = {"alias": "#a:x", "alt_aliases": ["#a:x", "#b:y"]}
        self.assertEqual(canonical_alias_without(content, {"#a:x"}), {"alt_aliases": ["#b:y"]})
        self.assertEqual(canonical_alias_without(content, {"#a:x", "#b:y"}), {})
        self.assertIsNone(canonical_alias_without(content, {"#z:x"}))
