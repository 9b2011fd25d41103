"""Tests for power level helpers and the room versions registry."""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.errors import UnsupportedRoomVersionError
from homeserver.core.power_levels import (
    CREATOR_POWER_LEVEL,
    get_named_level,
    get_notification_level,
    get_power_level_for_auth_state,
    get_room_creators,
    get_send_level,
    get_user_power_level,
    parse_power_level,
)
from homeserver.core.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    StateResolutionVersion,
    get_room_version,
    is_valid_room_version_string,
)

from tests.unit.core.room_fixture import ALICE, BOB, CAROL, RoomFixture

V9, V10, V11, V12 = (KNOWN_ROOM_VERSIONS[v] for v in ("9", "10", "11", "12"))


class ParsePowerLevelTests(SynchronousTestCase):
    """fragments v1-stringy-power-levels, v1-floaty-power-levels; rooms/v10."""

    def test_stringy_before_v10(self) -> None:
        """The spec's accepted string forms parse before v10."""
        cases = {"100": 100, "000100": 100, "+100": 100, "-100": -100, " 100 ": 100,
                 " 00100 ": 100, " +100 ": 100, " -100 ": -100, "\t7\n": 7}
        for text, value in cases.items():
            self.assertEqual(parse_power_level(text, V9), value, text)
        for bad in ("1.5", "1e3", "", " ", "+-1", "abc", "0x10"):
            self.assertRaises(ValueError, parse_power_level, bad, V9)
        # Synapse coerces with int(); we match it where the spec is silent.
        self.assertEqual(parse_power_level("1_000", V9), 1000)
        self.assertEqual(parse_power_level(True, V9), 1)

    def test_floaty_before_v10(self) -> None:
        """Floats truncate; infinities and NaN refuse."""
        self.assertEqual(parse_power_level(50.57, V9), 50)
        self.assertEqual(parse_power_level(-50.57, V9), -50)
        self.assertEqual(parse_power_level(5.114698e4, V9), 51146)
        for bad in (math.inf, -math.inf, math.nan):
            self.assertRaises(ValueError, parse_power_level, bad, V9)

    def test_integers_only_from_v10(self) -> None:
        """v10+ accept only integers; booleans are never levels."""
        self.assertEqual(parse_power_level(7, V10), 7)
        for bad in ("7", 7.0, True, None, [7]):
            self.assertRaises(ValueError, parse_power_level, bad, V10)
        self.assertRaises(ValueError, parse_power_level, None, V9)
        self.assertRaises(ValueError, parse_power_level, [1], V9)


class UserLevelTests(SynchronousTestCase):
    """get_user_power_level and friends."""

    def test_no_power_levels_event(self) -> None:
        """Without power levels the creator has 100, others 0 (v12 creators
        infinite)."""
        for rv in (V9, V11):
            room = RoomFixture(rv)
            create = room.create()
            self.assertEqual(get_user_power_level(ALICE, None, create, rv), 100)
            self.assertEqual(get_user_power_level(BOB, None, create, rv), 0)
        room = RoomFixture(V12)
        create = room.create({"additional_creators": [BOB]})
        self.assertEqual(get_user_power_level(ALICE, None, create, V12), CREATOR_POWER_LEVEL)
        self.assertEqual(get_user_power_level(BOB, None, create, V12), CREATOR_POWER_LEVEL)
        self.assertEqual(get_user_power_level(CAROL, None, create, V12), 0)
        self.assertEqual(get_user_power_level(ALICE, None, None, V12), 0)

    def test_creator_from_content_before_v11(self) -> None:
        """Before v11 the no-power-levels creator is content.creator."""
        room = RoomFixture(V10)
        create = room.create({"creator": BOB})
        self.assertEqual(get_user_power_level(BOB, None, create, V10), 100)
        self.assertEqual(get_user_power_level(ALICE, None, create, V10), 0)
        self.assertEqual(get_room_creators(create, V10), {BOB})
        self.assertEqual(get_room_creators(create, V11), {ALICE})

    def test_users_and_default(self) -> None:
        """users entries win, then users_default; malformed values read as
        the default."""
        room = RoomFixture(V9)
        create = room.create()
        pl = room.power_levels({"users": {ALICE: 100, BOB: "75", "@x:y": "junk"}, "users_default": 3})
        self.assertEqual(get_user_power_level(ALICE, pl, create, V9), 100)
        self.assertEqual(get_user_power_level(BOB, pl, create, V9), 75)
        self.assertEqual(get_user_power_level(CAROL, pl, create, V9), 3)
        self.assertEqual(get_user_power_level("@x:y", pl, create, V9), 3)
        self.assertEqual(get_power_level_for_auth_state(BOB, room.auth_state(), V9), 75)

    def test_v12_creators_beat_power_levels(self) -> None:
        """v12 creators are infinite whatever users says."""
        room = RoomFixture(V12)
        room.create({"additional_creators": [BOB]})
        pl = room.power_levels({"users": {CAROL: 100}})
        state = room.auth_state()
        self.assertEqual(get_power_level_for_auth_state(ALICE, state, V12), CREATOR_POWER_LEVEL)
        self.assertEqual(get_power_level_for_auth_state(BOB, state, V12), CREATOR_POWER_LEVEL)
        self.assertEqual(get_power_level_for_auth_state(CAROL, state, V12), 100)
        self.assertEqual(CREATOR_POWER_LEVEL, 2**53)
        self.assertIsNotNone(pl)

    def test_named_send_and_notification_levels(self) -> None:
        """Defaults: invite 0, kick/ban/redact 50, state 50, events 0,
        notifications 50; events entries override."""
        self.assertEqual(get_named_level(None, "invite", V10), 0)
        for name in ("kick", "ban", "redact", "state_default"):
            self.assertEqual(get_named_level(None, name, V10), 50)
        self.assertEqual(get_send_level("m.room.message", None, None, V10), 0)
        self.assertEqual(get_send_level("m.room.name", "", None, V10), 50)
        self.assertEqual(get_notification_level(None, "room", V10), 50)
        room = RoomFixture(V10)
        room.create()
        pl = room.power_levels({
            "events": {"m.room.name": 10, "m.room.message": 20}, "state_default": 70,
            "events_default": 5, "notifications": {"room": 30}, "invite": 40,
        })
        self.assertEqual(get_send_level("m.room.name", "", pl, V10), 10)
        self.assertEqual(get_send_level("m.room.message", None, pl, V10), 20)
        self.assertEqual(get_send_level("m.room.topic", "", pl, V10), 70)
        self.assertEqual(get_send_level("m.reaction", None, pl, V10), 5)
        self.assertEqual(get_notification_level(pl, "room", V10), 30)
        self.assertEqual(get_notification_level(pl, "other", V10), 50)
        self.assertEqual(get_named_level(pl, "invite", V10), 40)


class RoomVersionTests(SynchronousTestCase):
    """The registry against the spec's per-version feature list."""

    def test_all_versions_stable(self) -> None:
        """Versions 1-12 are known and stable; the default is 12."""
        self.assertEqual(sorted(KNOWN_ROOM_VERSIONS, key=int), [str(n) for n in range(1, 13)])
        self.assertTrue(all(rv.stable for rv in KNOWN_ROOM_VERSIONS.values()))
        self.assertIs(DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS["12"])
        for identifier, rv in KNOWN_ROOM_VERSIONS.items():
            self.assertEqual(rv.identifier, identifier)

    def test_flags_match_spec(self) -> None:
        """Each flag first appears in the version the spec introduced it."""
        def first(flag: str) -> int:
            return min(int(v) for v, rv in KNOWN_ROOM_VERSIONS.items() if getattr(rv, flag))

        self.assertEqual(first("enforce_key_validity"), 5)
        self.assertEqual(first("strict_canonical_json"), 6)
        self.assertEqual(first("limit_notifications_power_levels"), 6)
        self.assertEqual(first("knock_join_rule"), 7)
        self.assertEqual(first("restricted_join_rule"), 8)
        self.assertEqual(first("knock_restricted_join_rule"), 10)
        self.assertEqual(first("enforce_int_power_levels"), 10)
        self.assertEqual(first("implicit_room_creator"), 11)
        self.assertEqual(first("creators_have_infinite_power"), 12)
        self.assertEqual(first("additional_creators"), 12)
        self.assertEqual(first("room_id_is_create_event_hash"), 12)
        self.assertEqual(first("strict_event_byte_limits"), 11)
        for v, rv in KNOWN_ROOM_VERSIONS.items():
            n = int(v)
            self.assertEqual(rv.special_case_aliases_auth, n <= 5, v)
            self.assertEqual(rv.redaction_auth_rule, n <= 2, v)
            self.assertEqual(rv.event_id_domain_signature_required, n <= 2, v)
            self.assertEqual(rv.create_event_in_auth_events, n <= 11, v)
            expected_format = EventFormat.V1 if n <= 2 else EventFormat.V2 if n == 3 else (
                EventFormat.V3 if n <= 11 else EventFormat.V4)
            self.assertEqual(rv.event_format, expected_format, v)
            expected_sr = (StateResolutionVersion.V1 if n == 1 else
                           StateResolutionVersion.V2 if n <= 11 else StateResolutionVersion.V2_1)
            self.assertEqual(rv.state_res, expected_sr, v)

    def test_lookup(self) -> None:
        """get_room_version raises a ValueError subclass for unknown IDs."""
        self.assertIs(get_room_version("10"), V10)
        self.assertRaises(UnsupportedRoomVersionError, get_room_version, "13")
        self.assertRaises(ValueError, get_room_version, None)

    def test_version_grammar(self) -> None:
        """Room version strings: 1-32 chars of a-z 0-9 . -"""
        for ok in ("1", "org.example.v1-2", "a" * 32):
            self.assertTrue(is_valid_room_version_string(ok))
        for bad in ("", "A", "a" * 33, "v_1", 1):
            self.assertFalse(is_valid_room_version_string(bad))
