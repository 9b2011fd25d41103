"""Login, whoami, logout, refresh tokens, login tokens, token expiry."""

from __future__ import annotations

from tests.utils.client import ApiTestCase
from tests.utils.spec import validate_request, validate_response

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"
REFRESH = "/_matrix/client/v3/refresh"


class LoginTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        await self.register_user("alice")

    async def test_get_flows(self) -> None:
        """GET /login lists password and token login (with get_login_token)."""
        resp = await self.request("GET", LOGIN)
        self.assertEqual(resp.code, 200)
        validate_response("login.yaml", "/login", "get", 200, resp.json)
        types = {f["type"]: f for f in resp.json["flows"]}
        self.assertIn("m.login.password", types)
        self.assertTrue(types["m.login.token"]["get_login_token"])

    async def test_password_login_forms(self) -> None:
        """Localpart, full id, other case and the legacy 'user' field all log in."""
        for ident in ("alice", "@alice:test.local", "ALICE", "@Alice:test.local"):
            body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": ident}, "password": "correct horse battery"}
            validate_request("login.yaml", "/login", "post", body)
            resp = await self.request("POST", LOGIN, body)
            self.assertEqual(resp.code, 200, (ident, resp.body))
            validate_response("login.yaml", "/login", "post", 200, resp.json)
            self.assertEqual(resp.json["user_id"], "@alice:test.local")
        resp = await self.request("POST", LOGIN, {"type": "m.login.password", "user": "alice", "password": "correct horse battery"})
        self.assertEqual(resp.code, 200)
        # Each login made a device.
        self.assertEqual(await self.count("devices"), 6)

    async def test_wrong_password_and_unknown_user(self) -> None:
        """Wrong password, unknown user and another server's user are 403 M_FORBIDDEN, nothing written."""
        before = await self.count("access_tokens")
        for user, pw in (("alice", "wrong password!"), ("nobody", "correct horse battery"), ("@alice:elsewhere", "correct horse battery")):
            resp = await self.request("POST", LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": pw})
            self.assertError(resp, 403, "M_FORBIDDEN")
            validate_response("login.yaml", "/login", "post", 403, resp.json)
        self.assertEqual(await self.count("access_tokens"), before)

    async def test_malformed(self) -> None:
        """Unknown type is 400 M_UNKNOWN; wrong types M_BAD_JSON; not JSON M_NOT_JSON."""
        resp = await self.request("POST", LOGIN, {"type": "m.login.magic"})
        self.assertError(resp, 400, "M_UNKNOWN")
        validate_response("login.yaml", "/login", "post", 400, resp.json)
        for bad in ({"type": 1}, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": 5},
                    {"type": "m.login.password", "identifier": "alice", "password": "x"},
                    {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse battery", "device_id": 12},
                    {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse battery", "refresh_token": 1},
                    {"type": "m.login.token", "token": 7}):
            resp = await self.request("POST", LOGIN, bad)
            self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("POST", LOGIN, b"not json")
        self.assertError(resp, 400, "M_NOT_JSON")

    async def test_device_id_reuse_replaces_tokens(self) -> None:
        """Logging in again with the same device_id invalidates that device's old token."""
        first = await self.login(device_id="DEV1", initial_device_display_name="Laptop")
        second = await self.login(device_id="DEV1")
        self.assertEqual(second["device_id"], "DEV1")
        resp = await self.request("GET", WHOAMI, token=first["access_token"])
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
        resp = await self.request("GET", WHOAMI, token=second["access_token"])
        self.assertEqual(resp.json["device_id"], "DEV1")
        dev = await self.request("GET", "/_matrix/client/v3/devices/DEV1", token=second["access_token"])
        self.assertEqual(dev.json["display_name"], "Laptop")

    async def test_whoami_token_errors(self) -> None:
        """No token is M_MISSING_TOKEN; a bad one M_UNKNOWN_TOKEN with soft_logout false."""
        resp = await self.request("GET", WHOAMI)
        self.assertError(resp, 401, "M_MISSING_TOKEN")
        resp = await self.request("GET", WHOAMI, token="est_bogus")
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
        self.assertIs(resp.json["soft_logout"], False)
        resp = await self.request("GET", WHOAMI + "?access_token=est_bogus")
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
        out = await self.login()
        resp = await self.request("GET", WHOAMI + "?access_token=" + out["access_token"])
        self.assertEqual(resp.code, 200)
        validate_response("whoami.yaml", "/account/whoami", "get", 200, resp.json)

    async def test_logout(self) -> None:
        """/logout ends the session and removes its device; other sessions survive."""
        a = await self.login()
        b = await self.login()
        resp = await self.request("POST", "/_matrix/client/v3/logout", {}, token=a["access_token"])
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertError(await self.request("GET", WHOAMI, token=a["access_token"]), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual((await self.request("GET", WHOAMI, token=b["access_token"])).code, 200)
        devices = await self.request("GET", "/_matrix/client/v3/devices", token=b["access_token"])
        self.assertNotIn(a["device_id"], [d["device_id"] for d in devices.json["devices"]])

    async def test_logout_all(self) -> None:
        """/logout/all ends every session of the account."""
        a = await self.login()
        b = await self.login()
        seen: list = []
        self.api.sessions.device_observers.append(lambda user, devices: seen.append((user, sorted(devices))))
        resp = await self.request("POST", "/_matrix/client/v3/logout/all", {}, token=a["access_token"])
        self.assertEqual(resp.code, 200)
        for t in (a, b):
            self.assertError(await self.request("GET", WHOAMI, token=t["access_token"]), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual(await self.count("devices"), 0)
        self.assertEqual(seen[0][0], "@alice:test.local")
        self.assertIn(a["device_id"], seen[0][1])
        self.assertIn(b["device_id"], seen[0][1])
        self.assertError(await self.request("POST", "/_matrix/client/v3/logout/all", {}), 401, "M_MISSING_TOKEN")

    async def test_tokens_stored_hashed(self) -> None:
        """Neither access nor refresh tokens appear in clear in the database."""
        out = await self.login(refresh_token=True)

        def rows(txn):
            txn.execute("SELECT token_hash FROM access_tokens UNION ALL SELECT token_hash FROM refresh_tokens")
            return [bytes(r[0]) for r in txn.fetchall()]

        stored = await self.db.run_interaction("hashes", rows)
        for tok in (out["access_token"], out["refresh_token"]):
            self.assertNotIn(tok.encode(), stored)
            from homeserver.handlers.auth import hash_token
            self.assertIn(hash_token(tok), stored)


class RefreshTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        await self.register_user("alice")

    async def test_rotation(self) -> None:
        """/refresh issues a new pair; the old access token stops working."""
        out = await self.login(refresh_token=True)
        validate_response("login.yaml", "/login", "post", 200, out)
        self.assertEqual(out["expires_in_ms"], self.config.sessions.refreshable_access_token_lifetime_ms)
        validate_request("refresh.yaml", "/refresh", "post", {"refresh_token": out["refresh_token"]})
        resp = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertEqual(resp.code, 200, resp.body)
        validate_response("refresh.yaml", "/refresh", "post", 200, resp.json)
        self.assertNotEqual(resp.json["refresh_token"], out["refresh_token"])
        self.assertError(await self.request("GET", WHOAMI, token=out["access_token"]), 401, "M_UNKNOWN_TOKEN")
        who = await self.request("GET", WHOAMI, token=resp.json["access_token"])
        self.assertEqual(who.json["device_id"], out["device_id"])

    async def test_retry_before_use_then_reuse_detected(self) -> None:
        """The old refresh token works again until the new pair is used; after that, reuse revokes the device."""
        out = await self.login(refresh_token=True)
        first = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        # Response "lost": the client retries with the same token.
        retry = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertEqual(retry.code, 200)
        # The superseded pair from the first attempt is gone.
        self.assertError(await self.request("GET", WHOAMI, token=first.json["access_token"]), 401, "M_UNKNOWN_TOKEN")
        # Using the new access token ends the grace period.
        self.assertEqual((await self.request("GET", WHOAMI, token=retry.json["access_token"])).code, 200)
        reuse = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertError(reuse, 401, "M_UNKNOWN_TOKEN")
        validate_response("refresh.yaml", "/refresh", "post", 401, reuse.json)
        # Reuse means the token leaked: the whole device session is revoked.
        self.assertError(await self.request("GET", WHOAMI, token=retry.json["access_token"]), 401, "M_UNKNOWN_TOKEN")
        again = await self.request("POST", REFRESH, {"refresh_token": retry.json["refresh_token"]})
        self.assertError(again, 401, "M_UNKNOWN_TOKEN")

    async def test_using_new_refresh_token_revokes_old(self) -> None:
        """Refreshing with the new refresh token also revokes its predecessor."""
        out = await self.login(refresh_token=True)
        first = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        second = await self.request("POST", REFRESH, {"refresh_token": first.json["refresh_token"]})
        self.assertEqual(second.code, 200)
        reuse = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertError(reuse, 401, "M_UNKNOWN_TOKEN")

    async def test_expired_access_token_soft_logout(self) -> None:
        """An expired access token is M_UNKNOWN_TOKEN with soft_logout true; refresh still works."""
        out = await self.login(refresh_token=True)
        self.clock.advance(self.config.sessions.refreshable_access_token_lifetime_ms / 1000 + 1)
        resp = await self.request("GET", WHOAMI, token=out["access_token"])
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
        self.assertIs(resp.json["soft_logout"], True)
        resp = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertEqual(resp.code, 200)
        self.assertEqual((await self.request("GET", WHOAMI, token=resp.json["access_token"])).code, 200)

    async def test_logout_with_expired_token(self) -> None:
        """An expired access token can still log its own session out."""
        out = await self.login(refresh_token=True)
        self.clock.advance(self.config.sessions.refreshable_access_token_lifetime_ms / 1000 + 1)
        resp = await self.request("POST", "/_matrix/client/v3/logout", {}, token=out["access_token"])
        self.assertEqual(resp.code, 200)
        resp = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")

    async def test_bad_refresh_bodies(self) -> None:
        """Unknown refresh token is 401 M_UNKNOWN_TOKEN; wrong types M_BAD_JSON; nothing written."""
        before = await self.count("access_tokens")
        resp = await self.request("POST", REFRESH, {"refresh_token": "estr_nope"})
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
        resp = await self.request("POST", REFRESH, {"refresh_token": 3})
        self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("POST", REFRESH, {})
        self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("POST", REFRESH, b"[")
        self.assertError(resp, 400, "M_NOT_JSON")
        self.assertEqual(await self.count("access_tokens"), before)


class RefreshTokenExpiryTests(ApiTestCase):
    sessions_overrides = {"refresh_token_lifetime_ms": 60_000, "nonrefreshable_access_token_lifetime_ms": 3_600_000}

    async def test_expired_refresh_token(self) -> None:
        """A refresh token past its lifetime is refused; non-refreshable tokens carry expires_in_ms."""
        await self.register_user("alice")
        plain = await self.login()
        self.assertEqual(plain["expires_in_ms"], 3_600_000)
        out = await self.login(refresh_token=True)
        self.clock.advance(61)
        resp = await self.request("POST", REFRESH, {"refresh_token": out["refresh_token"]})
        self.assertError(resp, 401, "M_UNKNOWN_TOKEN")
        self.assertIs(resp.json["soft_logout"], True)


class LoginTokenTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        await self.register_user("alice")
        self.session = await self.login()

    async def _get_token(self) -> dict:
        path = "/_matrix/client/v1/login/get_token"
        resp = await self.request("POST", path, {}, token=self.session["access_token"])
        self.assertEqual(resp.code, 401)
        validate_response("login_token.yaml", "/login/get_token", "post", 401, resp.json)
        self.assertEqual(resp.json["flows"], [{"stages": ["m.login.password"]}])
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "correct horse battery", "session": resp.json["session"]}
        resp = await self.request("POST", path, {"auth": auth}, token=self.session["access_token"])
        self.assertEqual(resp.code, 200, resp.body)
        validate_response("login_token.yaml", "/login/get_token", "post", 200, resp.json)
        return resp.json

    async def test_token_login_single_use(self) -> None:
        """A login token logs in once; a second use is 403 M_FORBIDDEN."""
        tok = await self._get_token()
        resp = await self.request("POST", LOGIN, {"type": "m.login.token", "token": tok["login_token"]})
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["user_id"], "@alice:test.local")
        resp = await self.request("POST", LOGIN, {"type": "m.login.token", "token": tok["login_token"]})
        self.assertError(resp, 403, "M_FORBIDDEN")

    async def test_token_expires(self) -> None:
        """A login token past its lifetime is refused."""
        tok = await self._get_token()
        self.clock.advance(tok["expires_in_ms"] / 1000 + 1)
        resp = await self.request("POST", LOGIN, {"type": "m.login.token", "token": tok["login_token"]})
        self.assertError(resp, 403, "M_FORBIDDEN")

    async def test_wrong_password_stage(self) -> None:
        """A wrong password in UIA is 401 with M_FORBIDDEN and issues no token."""
        path = "/_matrix/client/v1/login/get_token"
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "nope nope nope"}
        resp = await self.request("POST", path, {"auth": auth}, token=self.session["access_token"])
        self.assertEqual((resp.code, resp.json["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual(await self.count("login_tokens"), 0)
        resp = await self.request("POST", path, {})
        self.assertError(resp, 401, "M_MISSING_TOKEN")
