"""Tests for the JSON HTTP edge."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.errors import MatrixError, forbidden
from homeserver.http.server import (
    JsonResource,
    RawResponse,
    make_site,
    parse_json_object,
    query_int,
)
from tests.utils.http import make_request


class JsonResourceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = JsonResource(self.clock)
        self.seen: list = []

        async def echo(request, roomId, txnId):
            body = parse_json_object(request)
            self.seen.append((roomId, txnId, body))
            return 200, {"room": roomId, "txn": txnId, "body": body}

        async def refuse(request):
            raise forbidden("no")

        async def boom(request):
            raise RuntimeError("bug")

        async def limited(request):
            return 200, {"limit": query_int(request, "limit", default=10, minimum=1, maximum=50)}

        async def raw(request):
            return RawResponse(200, b"hello", b"text/plain")

        self.resource.register("PUT", "/rooms/{roomId}/send/{txnId}", echo)
        self.resource.register("GET", "/refuse", refuse)
        self.resource.register("GET", "/boom", boom)
        self.resource.register("GET", "/limited", limited)
        self.resource.register("GET", "/raw", raw)
        self.site = make_site(self.resource, self.clock)

    def test_path_arguments_are_decoded(self) -> None:
        """Placeholders match one segment and are URL-decoded."""
        resp = make_request(self.site, "PUT", "/rooms/%21abc%3Ahs/send/t1", {"a": 1})
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.json, {"room": "!abc:hs", "txn": "t1", "body": {"a": 1}})

    def test_unknown_path_is_404_unrecognized(self) -> None:
        """An unknown path answers 404 M_UNRECOGNIZED."""
        resp = make_request(self.site, "GET", "/nope")
        self.assertEqual(resp.code, 404)
        self.assertEqual(resp.json["errcode"], "M_UNRECOGNIZED")

    def test_wrong_method_is_405_unrecognized(self) -> None:
        """A known path with an unknown method answers 405 M_UNRECOGNIZED."""
        resp = make_request(self.site, "DELETE", "/refuse")
        self.assertEqual(resp.code, 405)
        self.assertEqual(resp.json["errcode"], "M_UNRECOGNIZED")

    def test_options_preflight_has_cors(self) -> None:
        """CORS preflight on a known path answers with the CORS headers."""
        resp = make_request(self.site, "OPTIONS", "/refuse")
        self.assertEqual(resp.code, 204)
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), "*")

    def test_matrix_error_is_rendered(self) -> None:
        """A MatrixError becomes its status and errcode body."""
        resp = make_request(self.site, "GET", "/refuse")
        self.assertEqual(resp.code, 403)
        self.assertEqual(resp.json, {"errcode": "M_FORBIDDEN", "error": "no"})
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), "*")

    def test_unexpected_exception_is_500_unknown(self) -> None:
        """A bug answers 500 M_UNKNOWN, and is logged."""
        resp = make_request(self.site, "GET", "/boom")
        self.assertEqual(resp.code, 500)
        self.assertEqual(resp.json["errcode"], "M_UNKNOWN")
        self.flushLoggedErrors(RuntimeError)

    def test_not_json(self) -> None:
        """A body that does not parse is M_NOT_JSON and the handler never runs."""
        for body in (b"{", b"\xff\xfe", b"NaN", b"{\"a\": Infinity}"):
            resp = make_request(self.site, "PUT", "/rooms/r/send/t", body)
            self.assertEqual(resp.code, 400, body)
            self.assertEqual(resp.json["errcode"], "M_NOT_JSON", body)
        self.assertEqual(self.seen, [])

    def test_bad_json_shape(self) -> None:
        """JSON that is not an object is M_BAD_JSON."""
        resp = make_request(self.site, "PUT", "/rooms/r/send/t", [1, 2])
        self.assertEqual(resp.code, 400)
        self.assertEqual(resp.json["errcode"], "M_BAD_JSON")

    def test_too_large(self) -> None:
        """A body over the route limit is 413 M_TOO_LARGE."""
        resp = make_request(self.site, "PUT", "/rooms/r/send/t", b'{"a":"' + b"x" * (1024 * 1024) + b'"}')
        self.assertEqual(resp.code, 413)
        self.assertEqual(resp.json["errcode"], "M_TOO_LARGE")

    def test_query_int(self) -> None:
        """Integer parameters are parsed, clamped at the maximum, refused below the minimum."""
        self.assertEqual(make_request(self.site, "GET", "/limited").json, {"limit": 10})
        self.assertEqual(make_request(self.site, "GET", "/limited?limit=500").json, {"limit": 50})
        resp = make_request(self.site, "GET", "/limited?limit=x")
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_INVALID_PARAM"))
        resp = make_request(self.site, "GET", "/limited?limit=0")
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_INVALID_PARAM"))

    def test_raw_response(self) -> None:
        """Raw responses keep their content type."""
        resp = make_request(self.site, "GET", "/raw")
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.body, b"hello")
        self.assertEqual(resp.header("Content-Type"), "text/plain")


class ClientIpTests(unittest.TestCase):
    """client_ip: X-Forwarded-For is believed only from trusted proxies, right to left."""

    def _ip(self, peer: str, forwarded: "str | None", trusted: "tuple | None" = None) -> str:
        from twisted.internet.address import IPv4Address, IPv6Address
        from twisted.web.test.requesthelper import DummyRequest

        from homeserver.http.server import client_ip, parse_trusted_proxies

        request = DummyRequest([b""])
        request.client = (IPv6Address if ":" in peer else IPv4Address)("TCP", peer, 1234)
        if forwarded is not None:
            request.requestHeaders.setRawHeaders(b"X-Forwarded-For", [forwarded.encode()])
        if trusted is not None:
            class Site:
                trusted_proxies = parse_trusted_proxies(trusted)
            request.site = Site()
        return client_ip(request)

    def test_untrusted_peer_cannot_claim_an_address(self) -> None:
        self.assertEqual(self._ip("203.0.113.5", "198.51.100.1"), "203.0.113.5")

    def test_trusted_proxy_right_most_untrusted_entry(self) -> None:
        """A client-supplied entry left of the proxy's own is ignored."""
        self.assertEqual(self._ip("127.0.0.1", "6.6.6.6, 203.0.113.9"), "203.0.113.9")
        self.assertEqual(self._ip("::1", "203.0.113.9"), "203.0.113.9")

    def test_chain_of_trusted_proxies(self) -> None:
        """Hops through several trusted proxies are skipped."""
        self.assertEqual(self._ip("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.7", trusted=("10.0.0.0/8",)),
                         "203.0.113.9")

    def test_no_header_or_garbage(self) -> None:
        self.assertEqual(self._ip("127.0.0.1", None), "127.0.0.1")
        self.assertEqual(self._ip("127.0.0.1", "not-an-ip"), "127.0.0.1")
        self.assertEqual(self._ip("127.0.0.1", "203.0.113.9, junk"), "127.0.0.1")

    def test_configured_proxies_replace_loopback(self) -> None:
        """With trusted_proxies set, loopback is no longer trusted unless listed."""
        self.assertEqual(self._ip("127.0.0.1", "203.0.113.9", trusted=("10.0.0.0/8",)), "127.0.0.1")
