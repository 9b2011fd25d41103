"""Every authenticated endpoint: missing/unknown tokens and malformed bodies.

One table drives the refusals the spec requires of all of them, so a new
endpoint added to the table gets the whole battery.
"""

from __future__ import annotations

from tests.utils.client import ApiTestCase
from tests.utils.spec import validate_error

C = "/_matrix/client/v3"
U = "@alice:test.local"
R = "!room:test.local"

#: (method, path, takes a JSON body)
AUTHENTICATED = [
    ("GET", f"{C}/account/whoami", False),
    ("GET", f"{C}/account/3pid", False),
    ("POST", f"{C}/account/password", True),
    ("POST", f"{C}/account/deactivate", True),
    ("POST", f"{C}/logout", False),
    ("POST", f"{C}/logout/all", False),
    ("POST", "/_matrix/client/v1/login/get_token", True),
    ("GET", f"{C}/capabilities", False),
    ("GET", f"{C}/devices", False),
    ("GET", f"{C}/devices/D", False),
    ("PUT", f"{C}/devices/D", True),
    ("DELETE", f"{C}/devices/D", True),
    ("POST", f"{C}/delete_devices", True),
    ("PUT", f"{C}/profile/{U}/displayname", True),
    ("DELETE", f"{C}/profile/{U}/displayname", False),
    ("PUT", f"{C}/user/{U}/account_data/x.y", True),
    ("GET", f"{C}/user/{U}/account_data/x.y", False),
    ("PUT", f"{C}/user/{U}/rooms/{R}/account_data/x.y", True),
    ("GET", f"{C}/user/{U}/rooms/{R}/account_data/x.y", False),
    ("GET", f"{C}/user/{U}/rooms/{R}/tags", False),
    ("PUT", f"{C}/user/{U}/rooms/{R}/tags/t", True),
    ("DELETE", f"{C}/user/{U}/rooms/{R}/tags/t", False),
    ("POST", f"{C}/user/{U}/filter", True),
    ("GET", f"{C}/user/{U}/filter/0", False),
]

#: Unauthenticated endpoints that take a JSON object body.
UNAUTHENTICATED_BODIES = [
    ("POST", f"{C}/login"),
    ("POST", f"{C}/register"),
    ("POST", f"{C}/refresh"),
    ("POST", "/_synapse/admin/v1/register"),
]


class EndpointMatrixTests(ApiTestCase):
    registration = {"enable_registration": True, "registration_shared_secret": "0123456789abcdef0123"}

    async def test_missing_and_unknown_tokens(self) -> None:
        """Each authenticated endpoint answers 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN."""
        for method, path, takes_body in AUTHENTICATED:
            body = {} if takes_body else None
            resp = await self.request(method, path, body)
            self.assertError(resp, 401, "M_MISSING_TOKEN")
            validate_error(resp.json)
            resp = await self.request(method, path, body, token="est_unknown")
            self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
            resp = await self.request(method, path, body, headers={"Authorization": "Basic abc"})
            self.assertError(resp, 401, "M_MISSING_TOKEN")

    async def test_malformed_bodies(self) -> None:
        """Each body-taking endpoint refuses non-JSON, non-objects and oversized bodies."""
        token = (await self.register_user("alice"))["access_token"]
        endpoints = [(m, p, token) for m, p, takes in AUTHENTICATED if takes]
        endpoints += [(m, p, None) for m, p in UNAUTHENTICATED_BODIES]
        before = {t: await self.count(t) for t in ("users", "devices", "account_data", "user_filters", "profile_fields")}
        for method, path, tok in endpoints:
            resp = await self.request(method, path, b"{not json", token=tok)
            self.assertError(resp, 400, "M_NOT_JSON")
            resp = await self.request(method, path, b'["an", "array"]', token=tok)
            self.assertError(resp, 400, "M_BAD_JSON")
            resp = await self.request(method, path, b'{"x": "' + b"y" * (1024 * 1024 + 10) + b'"}', token=tok)
            self.assertError(resp, 413, "M_TOO_LARGE")
            validate_error(resp.json)
            resp = await self.request(method, path, b"\xff\xfe", token=tok)
            self.assertError(resp, 400, "M_NOT_JSON")
        after = {t: await self.count(t) for t in before}
        self.assertEqual(before, after)

    async def test_options_and_cors(self) -> None:
        """CORS preflight is answered for known paths and every response carries CORS headers."""
        resp = await self.request("OPTIONS", f"{C}/login")
        self.assertEqual(resp.code, 204)
        self.assertIn("POST", resp.header("Access-Control-Allow-Methods"))
        resp = await self.request("GET", f"{C}/account/whoami")
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), "*")
