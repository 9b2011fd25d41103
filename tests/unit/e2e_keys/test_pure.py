"""Pure parts of E2E key management: body validation, signatures, the device list delta, tokens."""

from __future__ import annotations

import nacl.signing
from twisted.trial import unittest
from unpaddedbase64 import encode_base64

from homeserver.core.signing import sign_json
from homeserver.errors import MatrixError
from homeserver.handlers.e2e_keys import (
    parse_claim,
    parse_cross_signing_key,
    parse_query,
    parse_upload,
    verify_by,
)
from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken
from homeserver.handlers.sync.device_lists import device_list_delta

ME = "@me:hs"


def refused(testcase: unittest.TestCase, errcode: str, fn, *args) -> None:
    with testcase.assertRaises(MatrixError) as caught:
        fn(*args)
    testcase.assertEqual((caught.exception.code, caught.exception.errcode), (400, errcode))


class ParseUploadTests(unittest.TestCase):
    """/keys/upload bodies."""

    def device_keys(self, **over):
        keys = {"user_id": ME, "device_id": "DEV", "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": {"curve25519:DEV": "c", "ed25519:DEV": "e"}, "signatures": {ME: {"ed25519:DEV": "s"}}}
        keys.update(over)
        return keys

    def test_accepts_all_three_kinds(self):
        """Device keys, one-time keys (string and signed) and fallback keys (also under the MSC2732 name)."""
        body = {"device_keys": self.device_keys(),
                "one_time_keys": {"curve25519:A": "a", "signed_curve25519:B": {"key": "b", "signatures": {}}},
                "org.matrix.msc2732.fallback_keys": {"signed_curve25519:F": {"key": "f", "fallback": True}}}
        device_keys, one_time, fallback = parse_upload(body, ME, "DEV")
        self.assertEqual(device_keys, body["device_keys"])
        self.assertEqual(one_time, [("curve25519", "A", "a"), ("signed_curve25519", "B", {"key": "b", "signatures": {}})])
        self.assertEqual(fallback, [("signed_curve25519", "F", {"key": "f", "fallback": True})])
        self.assertEqual(parse_upload({}, ME, "DEV"), (None, [], []))

    def test_refusals(self):
        """Other user or device, missing fields, bad key IDs and values, no device, not an object."""
        refused(self, "M_INVALID_PARAM", parse_upload, {"device_keys": self.device_keys(user_id="@you:hs")}, ME, "DEV")
        refused(self, "M_INVALID_PARAM", parse_upload, {"device_keys": self.device_keys(device_id="X")}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"device_keys": self.device_keys(keys={})}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"device_keys": self.device_keys(keys={"nocolon": "x"})}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"device_keys": self.device_keys(signatures=[])}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"device_keys": self.device_keys(algorithms="x")}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"one_time_keys": {":A": "a"}}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"one_time_keys": {"alg:": "a"}}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"one_time_keys": {"alg:A": {"nokey": 1}}}, ME, "DEV")
        refused(self, "M_BAD_JSON", parse_upload, {"one_time_keys": {"alg:A": {"key": "k", "signatures": 3}}}, ME, "DEV")
        refused(self, "M_INVALID_PARAM", parse_upload, {"fallback_keys": {"a:1": "x", "a:2": "y"}}, ME, "DEV")
        refused(self, "M_INVALID_PARAM", parse_upload, {"one_time_keys": {f"a:{i}": "k" for i in range(1001)}}, ME, "DEV")
        refused(self, "M_INVALID_PARAM", parse_upload, {}, ME, None)
        refused(self, "M_BAD_JSON", parse_upload, [], ME, "DEV")


class ParseQueryClaimTests(unittest.TestCase):
    """/keys/query and /keys/claim bodies."""

    def test_query(self):
        self.assertEqual(parse_query({"device_keys": {ME: [], "@x:y": ["A"]}, "timeout": 10}), {ME: [], "@x:y": ["A"]})
        refused(self, "M_BAD_JSON", parse_query, {"device_keys": {ME: "A"}})
        refused(self, "M_BAD_JSON", parse_query, {"device_keys": {ME: []}, "timeout": "soon"})
        refused(self, "M_INVALID_PARAM", parse_query, {"device_keys": {"me": []}})
        refused(self, "M_BAD_JSON", parse_query, {})

    def test_claim(self):
        self.assertEqual(parse_claim({"one_time_keys": {ME: {"A": "signed_curve25519"}}}), [(ME, "A", "signed_curve25519")])
        refused(self, "M_BAD_JSON", parse_claim, {"one_time_keys": {ME: {"A": 1}}})
        refused(self, "M_BAD_JSON", parse_claim, {"one_time_keys": {ME: ["A"]}})
        refused(self, "M_INVALID_PARAM", parse_claim, {"one_time_keys": {"nobody": {}}})


class CrossSigningKeyTests(unittest.TestCase):
    """Cross-signing key objects and signature checks."""

    def setUp(self):
        self.key = nacl.signing.SigningKey.generate()
        self.public = encode_base64(bytes(self.key.verify_key))
        self.obj = {"user_id": ME, "usage": ["master"], "keys": {f"ed25519:{self.public}": self.public}}

    def test_valid_and_refused(self):
        self.assertEqual(parse_cross_signing_key(self.obj, ME, "master"), self.obj)
        refused(self, "M_INVALID_PARAM", parse_cross_signing_key, {**self.obj, "user_id": "@x:hs"}, ME, "master")
        refused(self, "M_INVALID_PARAM", parse_cross_signing_key, self.obj, ME, "self_signing")
        refused(self, "M_INVALID_PARAM", parse_cross_signing_key, {**self.obj, "keys": {"ed25519:other": self.public}}, ME, "master")
        refused(self, "M_INVALID_PARAM", parse_cross_signing_key, {**self.obj, "keys": {"ed25519:AAAA": "AAAA"}}, ME, "master")
        refused(self, "M_BAD_JSON", parse_cross_signing_key, "x", ME, "master")

    def test_verify_by(self):
        """A signature verifies with its key only, and not once the object changed."""
        self.key.alg, self.key.version = "ed25519", self.public  # type: ignore[attr-defined]
        signed = sign_json({"some": "object"}, ME, self.key)
        self.assertTrue(verify_by(signed, ME, self.public))
        self.assertFalse(verify_by({**signed, "some": "other"}, ME, self.public))
        self.assertFalse(verify_by(signed, "@other:hs", self.public))
        other = encode_base64(bytes(nacl.signing.SigningKey.generate().verify_key))
        self.assertFalse(verify_by(signed, ME, other))


class DeviceListDeltaTests(unittest.TestCase):
    """``changed`` / ``left`` from the facts of a token range."""

    def test_list_changes_only_of_room_mates_and_self(self):
        changed, left = device_list_delta(ME, {"@a:hs", "@stranger:hs", ME}, [], [], [], {"@a:hs"})
        self.assertEqual((changed, left), (sorted(["@a:hs", ME]), []))

    def test_new_room_mates_are_changed(self):
        """Someone joining a shared room, or every member of a room the user joined."""
        changed, left = device_list_delta(ME, set(), [("!r", "@b:hs", "join"), ("!s", ME, "join")],
                                          {"@c:hs", ME}, [], {"@b:hs", "@c:hs"})
        self.assertEqual((changed, left), (["@b:hs", "@c:hs"], []))

    def test_left_only_when_no_room_is_shared_any_more(self):
        changed, left = device_list_delta(ME, set(), [("!r", "@b:hs", "leave"), ("!r", "@c:hs", "ban")],
                                          [], ["@d:hs"], {"@c:hs"})
        self.assertEqual((changed, left), ([], ["@b:hs", "@d:hs"]))

    def test_leave_then_rejoin_is_changed_not_left(self):
        changed, left = device_list_delta(ME, set(), [("!r", "@b:hs", "leave"), ("!r", "@b:hs", "join")],
                                          [], [], {"@b:hs"})
        self.assertEqual((changed, left), (["@b:hs"], []))


class DeviceListTokenTests(unittest.TestCase):
    """The ``l`` section of sync tokens."""

    counts = {"events": 2, "receipts": 1, "typing": 1, "presence": 1, "to_device": 2, "device_lists": 3}

    def test_round_trip_and_older_tokens(self):
        token = StreamToken((1, 2), (3,), (0,), 4, (5,), (6, 7), (8, 9, 36))
        text = token.encode()
        self.assertTrue(text.endswith("_l8.9.10"), text)
        self.assertEqual(StreamToken.decode(text, self.counts), token)
        # A token from before the stream existed reads as position 0 on each shard.
        older = StreamToken.decode("s1_e1.2_r3_t0_a4_p5_d6.7", self.counts)
        self.assertEqual(older.device_lists, (0, 0, 0))
        with self.assertRaises(InvalidTokenError):
            StreamToken.decode("s1_e1.2_r3_t0_a4_p5_d6.7_l1", self.counts)
        self.assertEqual(token.max_with(StreamToken((0, 0), (0,), (0,), 0, (0,), (0, 0), (9, 0, 0))).device_lists,
                         (9, 9, 36))
