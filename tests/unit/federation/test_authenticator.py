"""FederationAuthenticator on plain values with an in-memory keyring."""

from twisted.internet import defer
from twisted.trial import unittest

from homeserver.core.signing import encode_verify_key_base64, get_verify_key, key_id_of, signing_key_from_seed
from homeserver.errors import MatrixError
from homeserver.federation.keys import KeyLookupError, ServerKey
from homeserver.federation.request_auth import sign_request
from homeserver.rest.federation.auth import FederationAuthenticator

KEY = signing_key_from_seed("k1", b"\x05" * 32)
NOW = 1_000_000


class FakeKeyring:
    def __init__(self, valid_until=NOW + 1, expired_ts=None):
        self.key = ServerKey("origin.test", key_id_of(KEY), encode_verify_key_base64(get_verify_key(KEY)), valid_until, expired_ts)

    def now_ms(self):
        return NOW

    async def get_server_key(self, server, key_id, minimum):
        if server != "origin.test" or key_id != self.key.key_id:
            raise KeyLookupError("unknown")
        return self.key


class AuthenticatorTests(unittest.TestCase):
    def check(self, headers, keyring=None, content=None, method="GET"):
        seen = []
        auth = FederationAuthenticator("me.test", keyring or FakeKeyring(), on_origin_seen=seen.append)
        d = defer.ensureDeferred(auth.authenticate_parts(method, "/_matrix/x", headers, content))
        return d, seen

    def refused(self, headers, **kw):
        d, _ = self.check(headers, **kw)
        err = self.failureResultOf(d, MatrixError).value
        self.assertEqual((err.code, err.errcode), (401, "M_UNAUTHORIZED"))
        return err.msg

    def test_accepts(self):
        """A valid signature by a current key yields the origin."""
        d, _ = self.check([sign_request("origin.test", KEY, "me.test", "GET", "/_matrix/x")])
        self.assertEqual(self.successResultOf(d), "origin.test")

    def test_other_schemes_ignored(self):
        """Non X-Matrix Authorization headers are skipped, and alone they are 'missing'."""
        d, _ = self.check(["Bearer x", sign_request("origin.test", KEY, "me.test", "GET", "/_matrix/x")])
        self.assertEqual(self.successResultOf(d), "origin.test")
        self.assertIn("Missing", self.refused(["Bearer x"]))
        self.assertIn("Missing", self.refused([]))

    def test_expired_and_old_keys(self):
        """Keys valid until before now, or only in old_verify_keys, are refused."""
        header = [sign_request("origin.test", KEY, "me.test", "GET", "/_matrix/x")]
        self.assertIn("expired", self.refused(header, keyring=FakeKeyring(valid_until=NOW - 1)))
        self.assertIn("old", self.refused(header, keyring=FakeKeyring(expired_ts=NOW + 10)))

    def test_mixed_origins_and_destination(self):
        """Headers naming two origins, or another destination, are refused."""
        a = sign_request("origin.test", KEY, "me.test", "GET", "/_matrix/x")
        b = sign_request("other.test", KEY, "me.test", "GET", "/_matrix/x")
        self.assertIn("different origins", self.refused([a, b]))
        self.assertIn("not me.test", self.refused([sign_request("origin.test", KEY, "you.test", "GET", "/_matrix/x")]))

    def test_wrap_passes_origin(self):
        """wrap() authenticates the request (method, target, JSON body) and passes origin= on."""
        seen = []
        auth = FederationAuthenticator("me.test", FakeKeyring(), on_origin_seen=seen.append)

        async def handler(request, origin, x):
            return 200, {"origin": origin, "x": x}

        wrapped = auth.wrap(handler)
        header = sign_request("origin.test", KEY, "me.test", "PUT", "/_matrix/x?a=1", {"b": 2})
        ok = defer.ensureDeferred(wrapped(FakeRequest(b"PUT", b"/_matrix/x?a=1", header, b'{"b": 2}'), x=3))
        self.assertEqual(self.successResultOf(ok), (200, {"origin": "origin.test", "x": 3}))
        self.assertEqual(seen, ["origin.test"])
        bad = defer.ensureDeferred(wrapped(FakeRequest(b"PUT", b"/_matrix/x?a=1", header, b'{"b": 3}'), x=3))
        self.assertEqual(self.failureResultOf(bad, MatrixError).value.code, 401)
        self.assertEqual(wrapped.__name__, "handler")


class FakeRequest:
    """Just what the authenticator reads from a twisted.web request."""

    def __init__(self, method, uri, authorization, body):
        import io

        from twisted.web.http_headers import Headers

        self.method = method
        self.uri = uri
        self.requestHeaders = Headers({b"Authorization": [authorization.encode()]})
        self.content = io.BytesIO(body)
