"""Key server, key fetching and caching, notary, and signed requests both ways,
between real stacks on loopback TLS ports with one PostgreSQL database."""

import json

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.web.client import Agent

from homeserver.config.federation import TrustedKeyServer
from homeserver.core.signing import encode_verify_key_base64, generate_signing_key, get_verify_key, key_id_of, verify_signed_json
from homeserver.federation.errors import HttpResponseError, NotRetryingDestination, RequestSendFailed
from homeserver.federation.keys import parse_key_response
from homeserver.federation.request_auth import sign_request
from homeserver.http.federation_client import TlsPolicy
from tests.utils.federation import FakeDns, FederationTestCase

class KeyServerTests(FederationTestCase):
    async def test_fetch_and_cache_keys(self):
        """A fetches B's key server over verified TLS, validates it and caches it in PostgreSQL."""
        a, b = self.server("a.test"), self.server("b.test")
        obj = await a.client.get_json(b.server_name, "/_matrix/key/v2/server")
        parsed = parse_key_response(obj, b.server_name, b.server_name, a.keyring.now_ms())
        self.assertEqual([k.key_id for k in parsed.keys], [key_id_of(b.signing_key)])
        key = await a.keyring.get_server_key(b.server_name, key_id_of(b.signing_key), a.keyring.now_ms())
        self.assertEqual(key.key_base64, encode_verify_key_base64(get_verify_key(b.signing_key)))
        self.assertEqual(self.rows("SELECT server_name, from_server FROM server_signature_keys"), [(b.server_name, b.server_name)])
        # Cached: B going away does not matter for a key that is still valid.
        await b.stop_listening()
        again = await a.keyring.get_server_key(b.server_name, key_id_of(b.signing_key), a.keyring.now_ms())
        self.assertEqual(again, key)

    async def test_version(self):
        """GET /_matrix/federation/v1/version answers the implementation name."""
        a, b = self.server("a.test"), self.server("b.test")
        body = await a.client.get_json(b.server_name, "/_matrix/federation/v1/version")
        self.assertEqual(body["server"]["name"], "Estuary")

    async def test_tls_refused_without_trust(self):
        """With certificate checks and the system CAs, the self-signed test server is refused."""
        a, b = self.server("a.test"), self.server("b.test")
        a.client._tls = TlsPolicy(verify=True)
        with self.assertRaises(RequestSendFailed) as cm:
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/version")
        self.assertIn("certificate verify failed", cm.exception.reason)

    async def test_ip_literal_and_name_mismatch(self):
        """An IP literal server name is checked against the certificate's IP; a name it lacks is refused."""
        a = self.server("a.test", dns=FakeDns(["a.test", "b.test", "e.test"]))
        b = self.server("b.test")
        body = await a.client.get_json(f"127.0.0.1:{b.port_number}", "/_matrix/federation/v1/version")
        self.assertEqual(body["server"]["name"], "Estuary")
        with self.assertRaises(RequestSendFailed) as cm:
            await a.client.get_json(f"e.test:{b.port_number}", "/_matrix/federation/v1/version")
        self.assertIn("VerificationError", cm.exception.reason)

    async def test_internal_addresses_blocked_by_default(self):
        """The default address filter refuses to connect to loopback, whatever the server name."""
        a, b = self.server("a.test", allow_loopback=False), self.server("b.test")
        for name in (b.server_name, f"127.0.0.1:{b.port_number}"):
            with self.assertRaises(RequestSendFailed) as cm:
                await a.client.get_json(name, "/_matrix/federation/v1/version", ignore_backoff=True)
            self.assertIn("blocked", cm.exception.reason)

    async def test_verify_certificates_false(self):
        """The testing-only switch accepts any certificate."""
        a = self.server("a.test", verify_certificates=False)
        b = self.server("b.test")
        body = await a.client.get_json(b.server_name, "/_matrix/federation/v1/version")
        self.assertEqual(body["server"]["name"], "Estuary")

    async def test_client_backoff_persisted(self):
        """A destination that cannot be reached is backed off, in PostgreSQL, for every client."""
        a, b = self.server("a.test"), self.server("b.test")
        await b.stop_listening()
        with self.assertRaises(RequestSendFailed):
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/version")
        with self.assertRaises(NotRetryingDestination):
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/version")
        self.assertEqual(self.rows("SELECT failure_count FROM federation_destinations WHERE destination = %s", (b.server_name,)), [(1,)])
        c = self.server("c.test")
        c.client._backoff = a.backoff  # same table, another client
        with self.assertRaises(NotRetryingDestination):
            await c.client.get_json(b.server_name, "/_matrix/federation/v1/version")

    async def test_timeout(self):
        """A server that never answers makes the request fail after the timeout, and backs it off."""
        a, b = self.server("a.test"), self.server("b.test")
        never = defer.Deferred()
        self.addCleanup(lambda: never.callback(None))

        async def hang(request):
            await never
            return 200, {}

        b.resource.register("GET", "/_matrix/federation/v1/hang", hang)
        with self.assertRaises(RequestSendFailed) as cm:
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/hang", timeout=0.3)
        self.assertIn("timed out", cm.exception.reason)
        with self.assertRaises(NotRetryingDestination):
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/version")

    async def test_http_errors_mapped(self):
        """A non-2xx answer is an HttpResponseError carrying the errcode."""
        a, b = self.server("a.test"), self.server("b.test")
        with self.assertRaises(HttpResponseError) as cm:
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/nothing_here")
        self.assertEqual((cm.exception.code, cm.exception.errcode), (404, "M_UNRECOGNIZED"))


class SignedRequestTests(FederationTestCase):
    async def test_both_ways(self):
        """A's signed requests are accepted by B and B's by A; keys are fetched on demand."""
        a, b = self.server("a.test"), self.server("b.test")
        self.add_echo(a)
        self.add_echo(b)
        r = await a.client.put_json(b.server_name, "/_matrix/federation/v1/echo", {"x": [1, "é"]}, args={"q": ["1", "2"]})
        self.assertEqual(r, {"origin": a.server_name, "content": {"x": [1, "é"]}})
        r = await b.client.get_json(a.server_name, "/_matrix/federation/v1/echo")
        self.assertEqual(r, {"origin": b.server_name, "content": None})

    async def test_escaped_targets(self):
        """Percent-escapes in the path and query survive as signed (the target is sent byte for byte)."""
        a, b = self.server("a.test"), self.server("b.test")
        seen = []

        async def echo(request, origin, thing):
            seen.append((thing, request.args))
            return 200, {}

        b.resource.register("GET", "/_matrix/federation/v1/thing/{thing}", b.authenticator.wrap(echo))
        await a.client.get_json(b.server_name, "/_matrix/federation/v1/thing/%21room%3Aa%2Fb%20c",
                                args={"q": "a b/c+é&x", "v": ["1", "2"]})
        self.assertEqual(seen, [("!room:a/b c", {b"q": ["a b/c+é&x".encode()], b"v": [b"1", b"2"]})])

    async def raw(self, target, method="GET", auth=None, body=None):
        """Send a hand-made request to ``target`` and return (code, json)."""
        headers = {} if auth is None else {"Authorization": auth}
        policy = TlsPolicy(verify=False).web_policy()
        http = HTTPClient(Agent(reactor, contextFactory=policy))
        data = None if body is None else json.dumps(body).encode()
        response = await http.request(method, f"https://127.0.0.1:{target.port_number}/_matrix/federation/v1/echo",
                                      headers=headers, data=data)
        return response.code, json.loads(await response.content())

    async def test_refusals(self):
        """Unsigned, wrongly signed, wrong destination, unknown key, tampered body: 401 M_UNAUTHORIZED."""
        a, b = self.server("a.test"), self.server("b.test")
        self.add_echo(b)
        uri = "/_matrix/federation/v1/echo"
        good = sign_request(a.server_name, a.signing_key, b.server_name, "GET", uri)
        code, body = await self.raw(b, auth=good)
        self.assertEqual((code, body["origin"]), (200, a.server_name))

        impostor = generate_signing_key(a.signing_key.version)
        cases = {
            "unsigned": None,
            "bearer": "Bearer abc",
            "bad signature": sign_request(a.server_name, impostor, b.server_name, "GET", uri),
            "wrong destination": sign_request(a.server_name, a.signing_key, "c.test", "GET", uri),
            "unknown key": sign_request(a.server_name, generate_signing_key("nope"), b.server_name, "GET", uri),
            "other method": sign_request(a.server_name, a.signing_key, b.server_name, "PUT", uri),
            "malformed": 'X-Matrix origin="unterminated',
        }
        for name, auth in cases.items():
            code, body = await self.raw(b, auth=auth)
            self.assertEqual((code, body.get("errcode")), (401, "M_UNAUTHORIZED"), name)
        signed_body = sign_request(a.server_name, a.signing_key, b.server_name, "PUT", uri, {"a": 1})
        code, body = await self.raw(b, method="PUT", auth=signed_body, body={"a": 2})
        self.assertEqual(code, 401)
        code, body = await self.raw(b, method="PUT", auth=signed_body, body={"a": 1})
        self.assertEqual(code, 200)

    async def test_expired_key_refused(self):
        """A key whose validity already ended cannot authenticate requests."""
        a = self.server("a.test", key_validity_ms=-60_000)
        b = self.server("b.test")
        self.add_echo(b)
        with self.assertRaises(HttpResponseError) as cm:
            await a.client.get_json(b.server_name, "/_matrix/federation/v1/echo")
        self.assertEqual(cm.exception.code, 401)
        self.assertIn("expired", cm.exception.body["error"])

    async def test_old_key_refused(self):
        """A key published only under old_verify_keys cannot authenticate requests."""
        from homeserver.core.signing import OldVerifyKey

        a, b = self.server("a.test"), self.server("b.test")
        self.add_echo(b)
        retired = generate_signing_key("retired")
        a.local_keys.old_keys = (OldVerifyKey(key_id_of(retired), encode_verify_key_base64(get_verify_key(retired)), 1),)
        auth = sign_request(a.server_name, retired, b.server_name, "GET", "/_matrix/federation/v1/echo")
        code, body = await self.raw(b, auth=auth)
        self.assertEqual(code, 401)
        self.assertIn("old", body["error"])


class NotaryTests(FederationTestCase):
    async def test_fetch_through_notary(self):
        """When B cannot be reached directly, A gets B's keys from notary C, checking both signatures."""
        c = self.server("c.test", database=await self.own_database())
        b = self.server("b.test")
        pinned = TrustedKeyServer(c.server_name, {key_id_of(c.signing_key): encode_verify_key_base64(get_verify_key(c.signing_key))})
        a = self.server("a.test", dns=FakeDns(["a.test", "c.test"]), trusted_key_servers=[pinned])
        key = await a.keyring.get_server_key(b.server_name, key_id_of(b.signing_key), a.keyring.now_ms())
        self.assertEqual(key.key_base64, encode_verify_key_base64(get_verify_key(b.signing_key)))
        self.assertEqual(self.rows("SELECT server_name, from_server FROM server_signature_keys"), [(b.server_name, c.server_name)])

    async def test_notary_with_wrong_pin_ignored(self):
        """A notary answer not signed by the pinned key is not believed."""
        from homeserver.federation.keys import KeyLookupError

        c = self.server("c.test", database=await self.own_database())
        b = self.server("b.test")
        wrong = TrustedKeyServer(c.server_name, {key_id_of(c.signing_key): encode_verify_key_base64(get_verify_key(generate_signing_key()))})
        a = self.server("a.test", dns=FakeDns(["a.test", "c.test"]), trusted_key_servers=[wrong])
        with self.assertRaises(KeyLookupError):
            await a.keyring.get_server_key(b.server_name, key_id_of(b.signing_key), a.keyring.now_ms())

    async def test_query_endpoints(self):
        """POST and GET /_matrix/key/v2/query answer with keys signed by origin and notary, cached after the origin leaves."""
        a, b, c = self.server("a.test"), self.server("b.test"), self.server("c.test")
        kid = key_id_of(b.signing_key)
        body = await a.client.post_json(c.server_name, "/_matrix/key/v2/query",
                                        {"server_keys": {b.server_name: {kid: {"minimum_valid_until_ts": 0}}, c.server_name: {}}})
        by_server = {k["server_name"]: k for k in body["server_keys"]}
        self.assertEqual(set(by_server), {b.server_name, c.server_name})
        verify_signed_json(by_server[b.server_name], b.server_name, get_verify_key(b.signing_key))
        verify_signed_json(by_server[b.server_name], c.server_name, get_verify_key(c.signing_key))
        verify_signed_json(by_server[c.server_name], c.server_name, get_verify_key(c.signing_key))

        await b.stop_listening()
        body = await a.client.get_json(c.server_name, "/_matrix/key/v2/query/" + b.server_name,
                                       args={"minimum_valid_until_ts": str(2 ** 52)})
        self.assertEqual([k["server_name"] for k in body["server_keys"]], [b.server_name])

        body = await a.client.post_json(c.server_name, "/_matrix/key/v2/query", {"server_keys": {"d.test:1": {}}})
        self.assertEqual(body, {"server_keys": []})
        body = await a.client.post_json(c.server_name, "/_matrix/key/v2/query", {"server_keys": {}})
        self.assertEqual(body, {"server_keys": []})
        with self.assertRaises(HttpResponseError) as cm:
            await a.client.post_json(c.server_name, "/_matrix/key/v2/query", {"server_keys": []})
        self.assertEqual(cm.exception.code, 400)
