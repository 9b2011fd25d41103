"""Tests for identifier grammar (appendices "Identifier Grammar")."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.ids import (
    RoomAlias,
    UserID,
    get_domain_from_id,
    get_localpart_from_id,
    is_valid_event_id,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_server_name,
    validate_device_id,
    validate_localpart_for_registration,
    validate_room_id,
)
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

HASH43 = "Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"


class ServerNameTests(SynchronousTestCase):
    """appendices "Server Name"."""

    def test_spec_examples(self) -> None:
        """The spec's example server names parse."""
        self.assertEqual(parse_server_name("matrix.org"), ("matrix.org", None))
        self.assertEqual(parse_server_name("matrix.org:8888"), ("matrix.org", 8888))
        self.assertEqual(parse_server_name("1.2.3.4"), ("1.2.3.4", None))
        self.assertEqual(parse_server_name("1.2.3.4:1234"), ("1.2.3.4", 1234))
        self.assertEqual(parse_server_name("[1234:5678::abcd]"), ("[1234:5678::abcd]", None))
        self.assertEqual(parse_server_name("[1234:5678::abcd]:5678"), ("[1234:5678::abcd]", 5678))

    def test_more_valid(self) -> None:
        """Other valid forms: localhost, mixed case, IPv4-in-IPv6."""
        for name in ("localhost", "MATRIX.org", "a-b.c", "[::1]", "[::ffff:1.2.3.4]:80", "x:1"):
            self.assertTrue(is_valid_server_name(name), name)

    def test_invalid(self) -> None:
        """Bad hosts, ports and IP literals are refused."""
        bad = [
            "", "matrix.org:", "matrix.org:abc", "matrix.org:123456", "under_score.org",
            "spa ce.org", "1.2.3.256", "[1234:5678::abcd", "[not-ipv6]", "[fe80::1%eth0]",
            "[1::2::3]", "matrix.org:80:90", "é.org", "a" * 256, "[::1]x", "a..b", ".a", "a.",
        ]
        for name in bad:
            self.assertFalse(is_valid_server_name(name), name)
        with self.assertRaises(ValueError) as cm:
            parse_server_name("matrix.org:port")
        self.assertIn("port", str(cm.exception))


class UserIdTests(SynchronousTestCase):
    """appendices "User Identifiers" and "Historical User IDs"."""

    def test_parse(self) -> None:
        """A user ID splits on the first colon; the domain may have a port."""
        uid = UserID.parse("@alice:example.org:8448")
        self.assertEqual((uid.localpart, uid.domain), ("alice", "example.org:8448"))
        self.assertEqual(uid.to_string(), "@alice:example.org:8448")
        self.assertEqual(str(UserID.parse("@a:[::1]")), "@a:[::1]")

    def test_registration_grammar(self) -> None:
        """Local registration accepts only a-z 0-9 . _ = - / +."""
        UserID.parse("@a.b_c=d-e/f+g09:example.org", historical=False)
        for bad in ("@Alice:example.org", "@:example.org", "@al ice:example.org", "@ali#ce:example.org"):
            self.assertRaises(ValueError, UserID.parse, bad, historical=False)
        validate_localpart_for_registration("bob")
        self.assertRaises(ValueError, validate_localpart_for_registration, "Bob")
        self.assertRaises(ValueError, validate_localpart_for_registration, "")

    def test_historical_accepted_from_remote(self) -> None:
        """Historical user IDs (upper case, unicode, empty) are accepted by
        default; they are flagged non-compliant."""
        for value in ("@:example.org", "@日本:example.org", "@a\x01b:example.org", "@a b:example.org"):
            uid = UserID.parse(value)
            self.assertFalse(uid.is_compliant, value)
        # Upper case is within U+0021-U+007E: refused for registration only.
        self.assertTrue(UserID.parse("@Alice:example.org").is_compliant)
        self.assertTrue(UserID.parse("@alice:example.org").is_compliant)

    def test_invalid(self) -> None:
        """Missing sigil or domain, NUL, bad domain, over 255 bytes."""
        for bad in ("alice:example.org", "@alice", "@a\x00b:example.org", "@alice:bad_domain",
                    "@" + "a" * 250 + ":example.org", "#alice:example.org"):
            self.assertFalse(is_valid_user_id(bad), bad)
        self.assertFalse(is_valid_user_id(42))
        with self.assertRaises(ValueError) as cm:
            UserID.parse("@alice")
        self.assertIn("domain", str(cm.exception))

    def test_length_in_bytes(self) -> None:
        """The 255 limit counts UTF-8 bytes."""
        ok = "@" + "a" * (255 - len("@:e.org")) + ":e.org"
        self.assertTrue(is_valid_user_id(ok))
        self.assertFalse(is_valid_user_id("@é" + ok[2:]))

    def test_domain_helpers(self) -> None:
        """get_domain_from_id / get_localpart_from_id."""
        self.assertEqual(get_domain_from_id("@a:b.c:80"), "b.c:80")
        self.assertEqual(get_localpart_from_id("@a:b.c:80"), "a")
        self.assertRaises(ValueError, get_domain_from_id, "$abc")
        self.assertRaises(ValueError, get_localpart_from_id, "$abc")


class RoomAndEventIdTests(SynchronousTestCase):
    """appendices "Room IDs", "Room Aliases", "Event IDs"."""

    def test_room_ids_by_version(self) -> None:
        """v1-v11 room IDs have a domain; v12 room IDs are a hash."""
        v11, v12 = KNOWN_ROOM_VERSIONS["11"], KNOWN_ROOM_VERSIONS["12"]
        self.assertTrue(is_valid_room_id("!abc:example.org", v11))
        self.assertTrue(is_valid_room_id("!abc:example.org"))
        self.assertFalse(is_valid_room_id("!abc:example.org", v12))
        self.assertTrue(is_valid_room_id("!" + HASH43, v12))
        self.assertTrue(is_valid_room_id("!" + HASH43))
        self.assertFalse(is_valid_room_id("!" + HASH43, v11))
        self.assertFalse(is_valid_room_id("!" + HASH43[:-1], v12))
        self.assertFalse(is_valid_room_id("!" + HASH43[:-1] + "+", v12))
        for bad in ("abc:example.org", "!abc", "!a\x00:example.org", "!abc:bad_host", "!" + "a" * 300 + ":e.org"):
            self.assertFalse(is_valid_room_id(bad, v11), bad)
        self.assertRaises(ValueError, validate_room_id, "$x:y")

    def test_event_ids_by_version(self) -> None:
        """v1/v2 `$local:domain`; v3 standard base64; v4+ URL-safe."""
        v1, v3, v4 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "3", "4"))
        self.assertTrue(is_valid_event_id("$abc:example.org", v1))
        self.assertFalse(is_valid_event_id("$abc", v1))
        std = "$" + HASH43.replace("-", "+").replace("_", "/")
        self.assertTrue(is_valid_event_id(std, v3))
        self.assertFalse(is_valid_event_id(std, v4))
        self.assertTrue(is_valid_event_id("$" + HASH43, v4))
        self.assertFalse(is_valid_event_id("$" + HASH43, v3))
        self.assertFalse(is_valid_event_id("$abc:example.org", v4))
        self.assertTrue(is_valid_event_id("$anything"))
        self.assertFalse(is_valid_event_id("$"))
        self.assertFalse(is_valid_event_id("abc"))
        self.assertFalse(is_valid_event_id("$" + "a" * 255))

    def test_room_alias(self) -> None:
        """Aliases: non-empty localpart without NUL, valid domain."""
        alias = RoomAlias.parse("#room:example.org")
        self.assertEqual((alias.localpart, alias.domain), ("room", "example.org"))
        self.assertEqual(str(alias), "#room:example.org")
        RoomAlias.parse("#日本 room:example.org")
        for bad in ("#:example.org", "#room", "room:example.org", "#a\x00:example.org", "#a:bad host"):
            self.assertRaises(ValueError, RoomAlias.parse, bad)

    def test_device_id(self) -> None:
        """Device IDs are opaque but non-empty, short and printable."""
        validate_device_id("ABCDEFGH")
        validate_device_id("日本")
        for bad in ("", "a" * 256, "a\nb", "a\x00", 5):
            self.assertRaises(ValueError, validate_device_id, bad)


class IdPropertyTests(SynchronousTestCase):
    """Property tests for identifier parsing."""

    @settings(max_examples=200, deadline=None)
    @given(
        st.from_regex(r"[a-z0-9._=\-/+]{1,40}", fullmatch=True),
        # The first label starts with a letter: an all-digit dotted quad is an
        # IPv4 literal, whose parts must be 0-255 (test_invalid covers those).
        st.from_regex(r"[a-z][a-z0-9]{0,19}(\.[a-z0-9]{1,10}){0,3}(:[0-9]{1,5})?", fullmatch=True),
    )
    def test_user_id_round_trip(self, localpart: str, domain: str) -> None:
        """Grammar-conforming user IDs parse strictly and print back."""
        value = "@%s:%s" % (localpart, domain)
        uid = UserID.parse(value, historical=False)
        self.assertEqual((uid.localpart, uid.domain), (localpart, domain))
        self.assertEqual(uid.to_string(), value)
        self.assertTrue(uid.is_compliant)

    @settings(max_examples=200, deadline=None)
    @given(st.text(min_size=0, max_size=30).filter(lambda s: ":" not in s and "\x00" not in s))
    def test_historical_localparts(self, localpart: str) -> None:
        """Any localpart without ':' and NUL is accepted as historical, and
        refused for registration unless it matches the strict grammar."""
        value = "@%s:example.org" % localpart
        UserID.parse(value)
        strict_ok = bool(localpart) and all(c in "abcdefghijklmnopqrstuvwxyz0123456789._=-/+" for c in localpart)
        self.assertEqual(is_valid_user_id(value, historical=False), strict_ok)
