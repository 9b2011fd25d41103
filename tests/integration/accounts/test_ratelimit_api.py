"""Rate limits as clients see them: 429 M_LIMIT_EXCEEDED with retry_after_ms."""

from __future__ import annotations

from tests.utils.client import ApiTestCase
from tests.utils.spec import validate_response


class LoginRateLimitTests(ApiTestCase):
    rate_limits_enabled = True

    async def test_login_limited_per_address_and_account(self) -> None:
        """The fourth login from one address is refused until time passes; other addresses are unaffected."""
        await self.register_user("alice")
        await self.register_user("carol")
        body = {"type": "m.login.password", "user": "alice", "password": "correct horse battery"}
        codes = [(await self.request("POST", "/_matrix/client/v3/login", body, client_ip="9.9.9.9")).code for _ in range(3)]
        self.assertEqual(codes, [200, 200, 200])
        resp = await self.request("POST", "/_matrix/client/v3/login", body, client_ip="9.9.9.9")
        self.assertError(resp, 429, "M_LIMIT_EXCEEDED")
        validate_response("login.yaml", "/login", "post", 429, resp.json)
        self.assertGreater(resp.json["retry_after_ms"], 0)
        # Another address logging into another account is unaffected (the
        # same account is also limited, per account).
        self.assertEqual((await self.request("POST", "/_matrix/client/v3/login", {**body, "user": "carol"}, client_ip="8.8.8.8")).code, 200)
        self.assertError(await self.request("POST", "/_matrix/client/v3/login", body, client_ip="8.8.8.8"), 429, "M_LIMIT_EXCEEDED")
        self.clock.advance(resp.json["retry_after_ms"] / 1000)
        self.assertEqual((await self.request("POST", "/_matrix/client/v3/login", body, client_ip="9.9.9.9")).code, 200)

    async def test_failed_logins_limited_per_account(self) -> None:
        """Repeated wrong passwords lock the account's login briefly, even with the right password."""
        await self.register_user("bob")
        wrong = {"type": "m.login.password", "user": "bob", "password": "wrong password"}
        for i in range(3):
            resp = await self.request("POST", "/_matrix/client/v3/login", wrong, client_ip=f"1.0.0.{i}")
            self.assertError(resp, 403, "M_FORBIDDEN")
        right = {"type": "m.login.password", "user": "bob", "password": "correct horse battery"}
        resp = await self.request("POST", "/_matrix/client/v3/login", right, client_ip="1.0.0.9")
        self.assertError(resp, 429, "M_LIMIT_EXCEEDED")

    async def test_registration_limited(self) -> None:
        """Registrations from one address are limited; nothing is written when refused.

        Only created accounts count: the UIA probes before them do not.
        """
        for i in range(3):
            probe = await self.request("POST", "/_matrix/client/v3/register",
                                       {"username": f"u{i}x", "password": "correct horse battery"}, client_ip="7.7.7.7")
            self.assertEqual(probe.code, 401)
            await self.request("POST", "/_matrix/client/v3/register",
                               {"username": f"u{i}x", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}},
                               client_ip="7.7.7.7")
        before = await self.count("users")
        resp = await self.request("POST", "/_matrix/client/v3/register",
                                  {"username": "late", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}},
                                  client_ip="7.7.7.7")
        self.assertError(resp, 429, "M_LIMIT_EXCEEDED")
        validate_response("registration.yaml", "/register", "post", 429, resp.json)
        self.assertEqual(await self.count("users"), before)

    async def test_availability_checks_limited_separately(self) -> None:
        """Availability checks have their own bucket and do not use up registrations."""
        codes = [(await self.request("GET", f"/_matrix/client/v3/register/available?username=n{i}x", client_ip="6.6.6.6")).code
                 for i in range(11)]
        self.assertEqual(codes, [200] * 10 + [429])
        resp = await self.request("POST", "/_matrix/client/v3/register",
                                  {"username": "fine", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}},
                                  client_ip="6.6.6.6")
        self.assertEqual(resp.code, 200)
