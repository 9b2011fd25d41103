"""X-Matrix Authorization header: signing, parsing (RFC 9110 forms), verification."""

from twisted.trial import unittest

from homeserver.core.errors import SignatureVerifyError
from homeserver.core.signing import get_verify_key, signing_key_from_seed
from homeserver.federation.request_auth import (
    parse_authorization_header,
    sign_request,
    signed_destination_matches,
    verify_request,
)

KEY = signing_key_from_seed("k1", b"\x01" * 32)
OTHER = signing_key_from_seed("k1", b"\x02" * 32)


class SignAndVerifyTests(unittest.TestCase):
    def sign(self, **kw):
        args = dict(origin="origin.test", signing_key=KEY, destination="dest.test", method="PUT",
                    uri="/_matrix/federation/v1/send/1?a=b", content={"pdus": []})
        args.update(kw)
        return parse_authorization_header(sign_request(**args))

    def test_round_trip(self):
        """A header we sign verifies against the same request."""
        auth = self.sign()
        self.assertEqual((auth.origin, auth.destination, auth.key_id), ("origin.test", "dest.test", "ed25519:k1"))
        verify_request(auth, "PUT", "/_matrix/federation/v1/send/1?a=b", "dest.test", {"pdus": []}, get_verify_key(KEY))

    def test_header_shape(self):
        """Senders write one space, lower-case names, no spaces around commas."""
        value = sign_request("o.test", KEY, "d.test", "GET", "/_matrix/x")
        self.assertTrue(value.startswith('X-Matrix origin="o.test",destination="d.test",key="ed25519:k1",sig="'))

    def test_tampering_refused(self):
        """Changing method, uri, body, destination or key makes verification fail."""
        auth = self.sign()
        vk = get_verify_key(KEY)
        cases = [
            ("POST", "/_matrix/federation/v1/send/1?a=b", "dest.test", {"pdus": []}, vk),
            ("PUT", "/_matrix/federation/v1/send/2?a=b", "dest.test", {"pdus": []}, vk),
            ("PUT", "/_matrix/federation/v1/send/1?a=b", "dest.test", {"pdus": [1]}, vk),
            ("PUT", "/_matrix/federation/v1/send/1?a=b", "dest.test", None, vk),
            ("PUT", "/_matrix/federation/v1/send/1?a=b", "other.test", {"pdus": []}, vk),
            ("PUT", "/_matrix/federation/v1/send/1?a=b", "dest.test", {"pdus": []}, get_verify_key(OTHER)),
        ]
        for method, uri, dest, content, key in cases:
            with self.assertRaises(SignatureVerifyError):
                verify_request(auth, method, uri, dest, content, key)

    def test_get_without_content(self):
        """A request without a body is signed without a content key."""
        auth = self.sign(method="GET", uri="/_matrix/key/v2/server", content=None)
        verify_request(auth, "GET", "/_matrix/key/v2/server", "dest.test", None, get_verify_key(KEY))
        with self.assertRaises(SignatureVerifyError):
            verify_request(auth, "GET", "/_matrix/key/v2/server", "dest.test", {}, get_verify_key(KEY))


class ParseTests(unittest.TestCase):
    def test_rfc9110_forms(self):
        """Case-insensitive scheme and names, any order, tokens, spaces and tabs around commas."""
        auth = parse_authorization_header('x-matrix  Sig=abc , ORIGIN=origin.test,\tkey="ed25519:k1"')
        self.assertEqual((auth.origin, auth.key_id, auth.signature, auth.destination),
                         ("origin.test", "ed25519:k1", "abc", None))

    def test_unquoted_colons_and_escapes(self):
        """Unquoted values may contain colons; quoted values unescape backslashes."""
        auth = parse_authorization_header('X-Matrix origin=host:8448,key=ed25519:k1,sig="a\\"b\\\\c",destination=d.test')
        self.assertEqual(auth.origin, "host:8448")
        self.assertEqual(auth.key_id, "ed25519:k1")
        self.assertEqual(auth.signature, 'a"b\\c')
        self.assertEqual(auth.destination, "d.test")

    def test_unknown_parameters_ignored(self):
        """Parameters the spec does not define are ignored."""
        auth = parse_authorization_header('X-Matrix origin=o,key=ed25519:k,sig=s,future="x y"')
        self.assertEqual(auth.origin, "o")

    def test_malformed_refused(self):
        """Wrong scheme, missing parameters, duplicates and broken syntax are ValueErrors."""
        for value in [
            'Bearer abc',
            'X-Matrix',
            'X-Matrix origin=o,key=ed25519:k',
            'X-Matrix origin=o,origin=p,key=ed25519:k,sig=s',
            'X-Matrix origin="o,key=ed25519:k,sig=s',
            'X-Matrix origin=o key=ed25519:k,sig=s',
            'X-Matrix origin=,key=ed25519:k,sig=s',
            'X-Matrix =o',
        ]:
            with self.assertRaises(ValueError, msg=value):
                parse_authorization_header(value)

    def test_destination_match(self):
        """A header without destination (old servers) is accepted; a different one is not."""
        old = parse_authorization_header("X-Matrix origin=o,key=ed25519:k,sig=s")
        self.assertTrue(signed_destination_matches(old, "me.test"))
        other = parse_authorization_header("X-Matrix origin=o,key=ed25519:k,sig=s,destination=you.test")
        self.assertFalse(signed_destination_matches(other, "me.test"))
