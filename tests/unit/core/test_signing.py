"""Tests for signing keys, JSON signatures, hashes and event / room IDs,
including the spec's "Cryptographic Test Vectors" byte for byte."""

from __future__ import annotations

import copy
import hashlib

from twisted.trial.unittest import SynchronousTestCase
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import SignatureVerifyError
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.core.signing import (
    OldVerifyKey,
    add_hashes_and_signatures,
    build_server_keys,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id,
    effective_valid_until_ts,
    format_signing_key_file,
    generate_signing_key,
    get_verify_key,
    is_key_usable_for_event,
    key_id_of,
    parse_old_verify_keys,
    parse_signing_key_file,
    sign_json,
    signature_key_ids,
    signing_key_from_seed,
    verify_event_signature,
    verify_key_from_base64,
    verify_signed_json,
)
from homeserver.core.signing import encode_verify_key_base64

# appendices "Cryptographic Test Vectors".
SEED = decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
SERVER = "domain"

MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_EVENT_SIGNED = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT_SIGNED = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


def _key():
    return signing_key_from_seed("1", SEED)


class SpecVectorTests(SynchronousTestCase):
    """appendices "Cryptographic Test Vectors"."""

    def test_sign_empty_object(self) -> None:
        """Signing {} gives the spec's signature."""
        self.assertEqual(
            sign_json({}, SERVER, _key()),
            {"signatures": {"domain": {"ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}},
        )

    def test_sign_object_with_data(self) -> None:
        """Signing {"one": 1, "two": "Two"} gives the spec's signature."""
        self.assertEqual(
            encode_canonical_json(sign_json({"one": 1, "two": "Two"}, SERVER, _key())),
            encode_canonical_json({
                "one": 1,
                "signatures": {"domain": {"ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},
                "two": "Two",
            }),
        )

    def test_sign_minimal_event(self) -> None:
        """The minimal event's hash and signature match byte for byte."""
        signed = add_hashes_and_signatures(KNOWN_ROOM_VERSIONS["1"], MINIMAL_EVENT, SERVER, _key())
        self.assertEqual(encode_canonical_json(signed), encode_canonical_json(MINIMAL_EVENT_SIGNED))

    def test_sign_redactable_event(self) -> None:
        """The redactable event is signed over its redacted form."""
        signed = add_hashes_and_signatures(KNOWN_ROOM_VERSIONS["1"], REDACTABLE_EVENT, SERVER, _key())
        self.assertEqual(encode_canonical_json(signed), encode_canonical_json(REDACTABLE_EVENT_SIGNED))

    def test_verify_spec_events(self) -> None:
        """The spec's signed events verify (over their redacted forms), and
        their content hashes check."""
        verify_key = get_verify_key(_key())
        # Room v11 redaction drops `origin`, so these v1-era vectors only
        # verify under the older redaction rules.
        for rv in ("1", "6", "9"):
            for signed in (MINIMAL_EVENT_SIGNED, REDACTABLE_EVENT_SIGNED):
                verify_signed_json(prune_event_dict(KNOWN_ROOM_VERSIONS[rv], signed), SERVER, verify_key)
                self.assertTrue(check_content_hash(signed))

    def test_input_not_modified(self) -> None:
        """Signing returns a copy and leaves the input alone."""
        original = copy.deepcopy(MINIMAL_EVENT)
        add_hashes_and_signatures(KNOWN_ROOM_VERSIONS["1"], MINIMAL_EVENT, SERVER, _key())
        self.assertEqual(MINIMAL_EVENT, original)


class JsonSignatureTests(SynchronousTestCase):
    """sign_json / verify_signed_json (appendices "Signing Details",
    "Checking for a Signature")."""

    def test_round_trip_ignores_unsigned(self) -> None:
        """unsigned and signatures are not covered by the signature."""
        key = generate_signing_key()
        signed = sign_json({"a": 1, "unsigned": {"x": 1}}, "s.example", key)
        signed["unsigned"] = {"changed": True}
        verify_signed_json(signed, "s.example", get_verify_key(key))

    def test_tampering_detected(self) -> None:
        """Changing a signed field breaks the signature."""
        key = generate_signing_key()
        signed = sign_json({"a": 1}, "s.example", key)
        signed["a"] = 2
        self.assertRaises(SignatureVerifyError, verify_signed_json, signed, "s.example", get_verify_key(key))

    def test_missing_or_garbled_signature(self) -> None:
        """Missing signer, wrong key, bad base64 all fail."""
        key = generate_signing_key("k1")
        other = generate_signing_key("k1")
        signed = sign_json({"a": 1}, "s.example", key)
        self.assertRaises(SignatureVerifyError, verify_signed_json, signed, "t.example", get_verify_key(key))
        self.assertRaises(SignatureVerifyError, verify_signed_json, signed, "s.example", get_verify_key(other))
        garbled = copy.deepcopy(signed)
        garbled["signatures"]["s.example"]["ed25519:k1"] = "!!!"
        self.assertRaises(SignatureVerifyError, verify_signed_json, garbled, "s.example", get_verify_key(key))
        short = copy.deepcopy(signed)
        short["signatures"]["s.example"]["ed25519:k1"] = "AAAA"
        self.assertRaises(SignatureVerifyError, verify_signed_json, short, "s.example", get_verify_key(key))

    def test_multiple_signers_kept(self) -> None:
        """Existing signatures are preserved when adding another."""
        k1, k2 = generate_signing_key("a"), generate_signing_key("b")
        signed = sign_json(sign_json({"a": 1}, "one.example", k1), "two.example", k2)
        verify_signed_json(signed, "one.example", get_verify_key(k1))
        verify_signed_json(signed, "two.example", get_verify_key(k2))
        self.assertEqual(signature_key_ids(signed, "one.example"), ["ed25519:a"])
        self.assertEqual(signature_key_ids(signed, "nobody"), [])


class KeyTests(SynchronousTestCase):
    """Signing key generation and the Synapse key file format."""

    def test_generate_key_version(self) -> None:
        """Generated key versions look like Synapse's a_XXXX."""
        key = generate_signing_key()
        self.assertRegex(key.version, r"^a_[A-Za-z0-9]{4}$")
        self.assertEqual(key_id_of(key), "ed25519:" + key.version)
        self.assertRaises(ValueError, generate_signing_key, "bad version")

    def test_file_round_trip(self) -> None:
        """Keys written in the file format read back identically."""
        keys = [generate_signing_key("a_one"), generate_signing_key("a_two")]
        text = format_signing_key_file(keys)
        self.assertEqual(len(text.splitlines()), 2)
        parsed = parse_signing_key_file(text)
        self.assertEqual([bytes(k) for k in parsed], [bytes(k) for k in keys])
        self.assertEqual([k.version for k in parsed], ["a_one", "a_two"])

    def test_file_format_matches_synapse(self) -> None:
        """The line is `ed25519 <version> <unpadded base64 seed>`."""
        self.assertEqual(format_signing_key_file([_key()]), "ed25519 1 %s\n" % encode_base64(SEED))
        parsed = parse_signing_key_file("\ned25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n\n")
        self.assertEqual(bytes(parsed[0]), bytes(_key()))

    def test_bad_files(self) -> None:
        """Malformed files raise ValueError naming the problem."""
        for text in ("", "ed25519 1", "rsa 1 AAAA", "ed25519 1 !!!!", "ed25519 1 AAAA", "ed25519 b@d " + "A" * 43):
            self.assertRaises(ValueError, parse_signing_key_file, text)

    def test_verify_key_decoding(self) -> None:
        """Published verify keys decode; bad ones raise ValueError."""
        key = _key()
        published = encode_verify_key_base64(get_verify_key(key))
        decoded = verify_key_from_base64("ed25519:1", published)
        self.assertEqual(bytes(decoded), bytes(key.verify_key))
        self.assertRaises(ValueError, verify_key_from_base64, "ed25519:1", "AAAA")
        self.assertRaises(ValueError, verify_key_from_base64, "rsa:1", published)
        self.assertRaises(ValueError, verify_key_from_base64, "ed25519:1", "***")

    def test_old_verify_keys_config(self) -> None:
        """Old keys parse from Synapse's old_signing_keys shape; bad entries
        raise ValueError."""
        good = encode_base64(b"\x07" * 32)
        keys = parse_old_verify_keys({"ed25519:old": {"key": good, "expired_ts": 5}})
        self.assertEqual(keys, [OldVerifyKey("ed25519:old", good, 5)])
        bad_configs = [
            {"rsa:old": {"key": good, "expired_ts": 5}},
            {"ed25519:b@d": {"key": good, "expired_ts": 5}},
            {"ed25519:old": "x"},
            {"ed25519:old": {"expired_ts": 5}},
            {"ed25519:old": {"key": good, "expired_ts": "5"}},
            {"ed25519:old": {"key": "AAAA", "expired_ts": 5}},
        ]
        for config in bad_configs:
            self.assertRaises(ValueError, parse_old_verify_keys, config)

    def test_server_keys_response(self) -> None:
        """build_server_keys lists current and old keys and is signed by
        every current key."""
        key = _key()
        old = OldVerifyKey("ed25519:old", encode_base64(b"\x05" * 32), expired_ts=1234)
        body = build_server_keys("domain", [key], [old], valid_until_ts=99)
        self.assertEqual(body["server_name"], "domain")
        self.assertEqual(body["valid_until_ts"], 99)
        self.assertEqual(body["verify_keys"], {"ed25519:1": {"key": encode_verify_key_base64(get_verify_key(key))}})
        self.assertEqual(body["old_verify_keys"], {"ed25519:old": {"key": old.key_base64, "expired_ts": 1234}})
        verify_signed_json(body, "domain", get_verify_key(key))
        self.assertEqual(bytes(old.verify_key()), b"\x05" * 32)


class HashAndIdTests(SynchronousTestCase):
    """Content hashes, reference hashes, event IDs and v12 room IDs."""

    def test_content_hash_excludes_unsigned_signatures_hashes(self) -> None:
        """The content hash ignores unsigned / signatures / hashes but covers
        everything else, including content."""
        base = {"type": "m.room.message", "content": {"body": "x"}}
        with_extras = dict(base, unsigned={"a": 1}, signatures={"x": {}}, hashes={"sha256": "y"})
        self.assertEqual(compute_content_hash(base), compute_content_hash(with_extras))
        self.assertEqual(compute_content_hash(base), hashlib.sha256(encode_canonical_json(base)).digest())
        self.assertNotEqual(compute_content_hash(base), compute_content_hash(dict(base, content={"body": "y"})))

    def test_content_hash_check(self) -> None:
        """check_content_hash detects modified and missing hashes."""
        signed = add_hashes_and_signatures(KNOWN_ROOM_VERSIONS["10"], MINIMAL_EVENT, SERVER, _key())
        self.assertTrue(check_content_hash(signed))
        self.assertFalse(check_content_hash(dict(signed, content={"x": 1})))
        self.assertFalse(check_content_hash(dict(signed, hashes={})))
        self.assertFalse(check_content_hash(dict(signed, hashes={"sha256": "!!"})))
        self.assertFalse(check_content_hash(dict(signed, hashes="nope")))

    def test_reference_hash_ignores_redacted_content(self) -> None:
        """The reference hash covers the redacted event: message content
        and signatures do not change it; hashes do."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        event = {k: v for k, v in MINIMAL_EVENT.items()}
        event["hashes"] = {"sha256": "abc"}
        ref = compute_reference_hash(rv, event)
        self.assertEqual(ref, compute_reference_hash(rv, dict(event, content={"body": "z"}, signatures={"a": {}})))
        self.assertNotEqual(ref, compute_reference_hash(rv, dict(event, hashes={"sha256": "abd"})))
        pruned = prune_event_dict(rv, event)
        pruned.pop("signatures")
        pruned.pop("unsigned", None)
        self.assertEqual(ref, hashlib.sha256(encode_canonical_json(pruned)).digest())

    def test_event_id_formats(self) -> None:
        """v1/v2 read event_id; v3 standard base64; v4+ URL-safe base64."""
        event = dict(MINIMAL_EVENT, hashes={"sha256": "abc"}, content={"x": "?>?>"})
        event["type"] = "m.room.create"
        event["state_key"] = ""
        for rv_id in ("1", "2"):
            self.assertEqual(compute_event_id(KNOWN_ROOM_VERSIONS[rv_id], dict(event, event_id="$e:d")), "$e:d")
            self.assertRaises(ValueError, compute_event_id, KNOWN_ROOM_VERSIONS[rv_id], event)
        for rv_id in ("3", "4", "10", "11", "12"):
            rv = KNOWN_ROOM_VERSIONS[rv_id]
            digest = compute_reference_hash(rv, event)
            expected = "$" + encode_base64(digest, urlsafe=rv_id != "3")
            self.assertEqual(compute_event_id(rv, event), expected)
            # An event_id key in the dict is ignored for hashed formats.
            self.assertEqual(compute_event_id(rv, dict(event, event_id="$junk")), expected)

    def test_standard_vs_urlsafe(self) -> None:
        """Find an event whose hash has +/ characters and check v3 vs v4."""
        rv3, rv4 = KNOWN_ROOM_VERSIONS["3"], KNOWN_ROOM_VERSIONS["4"]
        for i in range(200):
            event = dict(MINIMAL_EVENT, depth=i)
            id3 = compute_event_id(rv3, event)
            if "+" in id3 or "/" in id3:
                id4 = compute_event_id(rv4, event)
                self.assertEqual(id4, id3.replace("+", "-").replace("/", "_"))
                self.assertNotIn("+", id4)
                self.assertNotIn("/", id4)
                return
        self.fail("no hash with +/ found")

    def test_v12_room_id(self) -> None:
        """v12 room IDs are the create event's ID with '!' (appendices "Room
        IDs"); other versions refuse."""
        rv = KNOWN_ROOM_VERSIONS["12"]
        create = {
            "type": "m.room.create", "state_key": "", "sender": "@a:domain",
            "content": {"room_version": "12"}, "origin_server_ts": 1, "depth": 1,
            "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"},
        }
        event_id = compute_event_id(rv, create)
        self.assertEqual(compute_room_id(rv, create), "!" + event_id[1:])
        self.assertEqual(len(event_id), 44)
        self.assertRaises(ValueError, compute_room_id, KNOWN_ROOM_VERSIONS["11"], create)


class KeyValidityTests(SynchronousTestCase):
    """fragment v5-signing-requirements and event signature verification."""

    def test_event_signature_on_redacted_copy(self) -> None:
        """An event signature verifies on the full and the redacted copy, and
        fails for another server or a changed essential field."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        key = _key()
        signed = add_hashes_and_signatures(rv, REDACTABLE_EVENT, SERVER, key)
        verify_event_signature(rv, signed, SERVER, get_verify_key(key))
        verify_event_signature(rv, prune_event_dict(rv, signed), SERVER, get_verify_key(key))
        self.assertRaises(SignatureVerifyError, verify_event_signature, rv, signed, "other", get_verify_key(key))
        self.assertRaises(
            SignatureVerifyError, verify_event_signature, rv, dict(signed, sender="@x:domain"),
            SERVER, get_verify_key(key),
        )

    def test_valid_until_enforced_from_v5(self) -> None:
        """v5+ refuse keys whose validity ended before the event."""
        for identifier, usable in (("4", True), ("5", False), ("12", False)):
            rv = KNOWN_ROOM_VERSIONS[identifier]
            self.assertEqual(is_key_usable_for_event(rv, 1000, valid_until_ts=999), usable)
            self.assertTrue(is_key_usable_for_event(rv, 1000, valid_until_ts=1000))

    def test_old_keys_expiry(self) -> None:
        """Old keys that expired before the event are ignored everywhere."""
        for rv in KNOWN_ROOM_VERSIONS.values():
            self.assertFalse(is_key_usable_for_event(rv, 1000, expired_ts=999))
            self.assertTrue(is_key_usable_for_event(rv, 1000, expired_ts=1000))

    def test_seven_day_cap(self) -> None:
        """valid_until_ts is capped at 7 days after fetching."""
        week = 7 * 24 * 3600 * 1000
        self.assertEqual(effective_valid_until_ts(10**15, 5), 5 + week)
        self.assertEqual(effective_valid_until_ts(100, 5), 100)
