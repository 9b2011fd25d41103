"""Registration: UIA flows, usernames, passwords, guests, tokens, shared secret."""

from __future__ import annotations

from homeserver.handlers.register import shared_secret_mac
from tests.utils.client import ApiTestCase
from tests.utils.spec import validate_request, validate_response

REGISTER = "/_matrix/client/v3/register"
AVAILABLE = "/_matrix/client/v3/register/available"


class RegisterTests(ApiTestCase):
    async def test_flows_then_dummy_completes(self) -> None:
        """A first request gets 401 with flows and a session; the dummy stage completes it."""
        body = {"username": "alice", "password": "correct horse battery"}
        validate_request("registration.yaml", "/register", "post", body)
        resp = await self.request("POST", REGISTER, body)
        self.assertEqual(resp.code, 401)
        validate_response("registration.yaml", "/register", "post", 401, resp.json)
        self.assertEqual(resp.json["flows"], [{"stages": ["m.login.dummy"]}])
        session = resp.json["session"]
        self.assertEqual(await self.count("users"), 0)

        body["auth"] = {"type": "m.login.dummy", "session": session}
        resp = await self.request("POST", REGISTER, body)
        self.assertEqual(resp.code, 200, resp.body)
        validate_response("registration.yaml", "/register", "post", 200, resp.json)
        self.assertEqual(resp.json["user_id"], "@alice:test.local")
        self.assertTrue(resp.json["access_token"])
        self.assertTrue(resp.json["device_id"])
        self.assertNotIn("refresh_token", resp.json)
        # The session is consumed with the registration.
        self.assertEqual(await self.count("ui_auth_sessions"), 0)

        who = await self.request("GET", "/_matrix/client/v3/account/whoami", token=resp.json["access_token"])
        self.assertEqual(who.code, 200)
        self.assertEqual(who.json["user_id"], "@alice:test.local")
        self.assertEqual(who.json["device_id"], resp.json["device_id"])

    async def test_username_is_lowercased_and_displayname_defaults(self) -> None:
        """Usernames are lowercased (as Synapse) and the display name defaults to the localpart."""
        out = await self.register_user("Bob")
        self.assertEqual(out["user_id"], "@bob:test.local")
        prof = await self.request("GET", "/_matrix/client/v3/profile/@bob:test.local")
        self.assertEqual(prof.json, {"displayname": "bob"})

    async def test_user_in_use(self) -> None:
        """Registering a taken name (any case) is 400 M_USER_IN_USE and writes nothing."""
        await self.register_user("carol")
        before = await self.count("users")
        resp = await self.request("POST", REGISTER, {"username": "CAROL", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
        self.assertError(resp, 400, "M_USER_IN_USE")
        validate_response("registration.yaml", "/register", "post", 400, resp.json)
        self.assertEqual(await self.count("users"), before)

    async def test_invalid_usernames(self) -> None:
        """Bad characters, a leading underscore, all digits and overlong ids are M_INVALID_USERNAME."""
        for name in ("al ice", "_bridge", "12345", "é", "a" * 260, ""):
            resp = await self.request("POST", REGISTER, {"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
            self.assertError(resp, 400, "M_INVALID_USERNAME")
        self.assertEqual(await self.count("users"), 0)

    async def test_weak_password(self) -> None:
        """A password shorter than the policy is 400 M_WEAK_PASSWORD before any UIA."""
        resp = await self.request("POST", REGISTER, {"username": "dave", "password": "short"})
        self.assertError(resp, 400, "M_WEAK_PASSWORD")
        self.assertEqual(await self.count("ui_auth_sessions"), 0)

    async def test_missing_password_after_auth(self) -> None:
        """Completing UIA without a password is 400 M_MISSING_PARAM."""
        resp = await self.request("POST", REGISTER, {"username": "erin", "auth": {"type": "m.login.dummy"}})
        self.assertError(resp, 400, "M_MISSING_PARAM")
        self.assertEqual(await self.count("users"), 0)

    async def test_malformed_bodies(self) -> None:
        """Not JSON, a non-object, and wrongly typed fields are refused with the spec's codes."""
        resp = await self.request("POST", REGISTER, b"{nope")
        self.assertError(resp, 400, "M_NOT_JSON")
        resp = await self.request("POST", REGISTER, [1, 2])
        self.assertError(resp, 400, "M_BAD_JSON")
        for bad in ({"username": 5}, {"password": ["x"]}, {"inhibit_login": "yes"}, {"device_id": 3},
                    {"refresh_token": "true"}, {"auth": "dummy"}, {"auth": {"type": 1}}):
            resp = await self.request("POST", REGISTER, {"username": "frank", "password": "correct horse battery", **bad})
            self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("POST", REGISTER, b"{" + b'"a":"' + b"x" * (1024 * 1024) + b'"}')
        self.assertError(resp, 413, "M_TOO_LARGE")
        self.assertEqual(await self.count("users"), 0)

    async def test_unknown_session_and_stage(self) -> None:
        """An unknown session id is refused; an unoffered stage gets the UIA 401 with an error."""
        resp = await self.request("POST", REGISTER, {"username": "gina", "password": "correct horse battery", "auth": {"type": "m.login.dummy", "session": "nope"}})
        self.assertEqual(resp.code, 400)
        resp = await self.request("POST", REGISTER, {"username": "gina", "password": "correct horse battery", "auth": {"type": "m.login.fancy"}})
        self.assertEqual(resp.code, 401)
        self.assertEqual(resp.json["errcode"], "M_UNRECOGNIZED")
        validate_response("registration.yaml", "/register", "post", 401, resp.json)
        self.assertEqual(await self.count("users"), 0)

    async def test_inhibit_login(self) -> None:
        """inhibit_login returns only the user id and creates no device or token."""
        out = await self.register_user("hank", inhibit_login=True)
        self.assertEqual(set(out) - {"home_server"}, {"user_id"})
        self.assertEqual(await self.count("devices"), 0)
        self.assertEqual(await self.count("access_tokens"), 0)

    async def test_refresh_token_on_register(self) -> None:
        """refresh_token: true returns a refresh token and expires_in_ms."""
        out = await self.register_user("ivy", refresh_token=True, device_id="PHONE", initial_device_display_name="Phone")
        validate_response("registration.yaml", "/register", "post", 200, out)
        self.assertIn("refresh_token", out)
        self.assertEqual(out["expires_in_ms"], self.config.sessions.refreshable_access_token_lifetime_ms)
        self.assertEqual(out["device_id"], "PHONE")

    async def test_kind_invalid(self) -> None:
        """An unknown kind is 400 M_INVALID_PARAM."""
        resp = await self.request("POST", REGISTER + "?kind=robot", {})
        self.assertError(resp, 400, "M_INVALID_PARAM")

    async def test_guest_disabled(self) -> None:
        """Guest registration is refused with 403 M_FORBIDDEN when not allowed."""
        resp = await self.request("POST", REGISTER + "?kind=guest", {})
        self.assertError(resp, 403, "M_FORBIDDEN")
        self.assertEqual(await self.count("users"), 0)

    async def test_available(self) -> None:
        """/register/available: true for a free name, M_USER_IN_USE / M_INVALID_USERNAME otherwise."""
        resp = await self.request("GET", AVAILABLE + "?username=jill")
        self.assertEqual((resp.code, resp.json), (200, {"available": True}))
        validate_response("registration.yaml", "/register/available", "get", 200, resp.json)
        await self.register_user("jill")
        resp = await self.request("GET", AVAILABLE + "?username=jill")
        self.assertError(resp, 400, "M_USER_IN_USE")
        validate_response("registration.yaml", "/register/available", "get", 400, resp.json)
        resp = await self.request("GET", AVAILABLE + "?username=Ji%20ll")
        self.assertError(resp, 400, "M_INVALID_USERNAME")
        resp = await self.request("GET", AVAILABLE)
        self.assertError(resp, 400, "M_MISSING_PARAM")

    async def test_unknown_path_and_method(self) -> None:
        """Unknown paths are 404 and wrong methods 405, both M_UNRECOGNIZED; CORS headers are set."""
        resp = await self.request("GET", "/_matrix/client/v3/nope")
        self.assertError(resp, 404, "M_UNRECOGNIZED")
        resp = await self.request("PUT", REGISTER, {})
        self.assertError(resp, 405, "M_UNRECOGNIZED")
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), "*")


class RegistrationDisabledTests(ApiTestCase):
    registration = {"enable_registration": False}

    async def test_disabled(self) -> None:
        """With registration disabled, /register and /register/available are 403 M_FORBIDDEN."""
        resp = await self.request("POST", REGISTER, {"username": "a1", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("GET", AVAILABLE + "?username=a1")
        self.assertError(resp, 403, "M_FORBIDDEN")
        self.assertEqual(await self.count("users"), 0)


class GuestTests(ApiTestCase):
    registration = {"enable_registration": True, "allow_guest_access": True}

    async def test_guest_registration(self) -> None:
        """Guests get a numeric user id and a token that guest-allowed endpoints accept."""
        resp = await self.request("POST", REGISTER + "?kind=guest", {"initial_device_display_name": "web"})
        self.assertEqual(resp.code, 200, resp.body)
        validate_response("registration.yaml", "/register", "post", 200, resp.json)
        localpart = resp.json["user_id"][1:].split(":")[0]
        self.assertTrue(localpart.isdigit())
        token = resp.json["access_token"]
        who = await self.request("GET", "/_matrix/client/v3/account/whoami", token=token)
        self.assertEqual(who.json["is_guest"], True)
        # Guests may not delete devices, change passwords or keep account data.
        resp = await self.request("POST", "/_matrix/client/v3/delete_devices", {"devices": []}, token=token)
        self.assertError(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")
        resp = await self.request("POST", "/_matrix/client/v3/account/password", {"new_password": "long enough password"}, token=token)
        self.assertError(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")
        user_id = who.json["user_id"]
        resp = await self.request("PUT", f"/_matrix/client/v3/user/{user_id}/account_data/x.y", {}, token=token)
        self.assertError(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")
        # They may set their display name but no other profile field.
        resp = await self.request("PUT", f"/_matrix/client/v3/profile/{user_id}/displayname", {"displayname": "Guest"}, token=token)
        self.assertEqual(resp.code, 200)
        resp = await self.request("PUT", f"/_matrix/client/v3/profile/{user_id}/avatar_url", {"avatar_url": "mxc://a/b"}, token=token)
        self.assertError(resp, 403, "M_FORBIDDEN")
        # Filters are allowed (guest /sync uses them).
        resp = await self.request("POST", f"/_matrix/client/v3/user/{user_id}/filter", {}, token=token)
        self.assertEqual(resp.code, 200)


class RegistrationTokenTests(ApiTestCase):
    registration = {"enable_registration": True, "registration_requires_token": True}

    async def _admin_token(self) -> str:
        out = await self.register_user_via_token_admin()
        return out

    async def register_user_via_token_admin(self) -> str:
        # Bootstrap an admin directly through the registration store.
        from homeserver.core.accounts import NewSession
        from homeserver.handlers.auth import hash_token

        token = "admintoken_" + "x" * 20
        await self.api.registration_store.register_user(
            "@root:test.local", None, 0, is_admin=True, device_id="ROOT",
            tokens=NewSession(hash_token(token), None),
        )
        return token

    async def test_token_flow_and_uses(self) -> None:
        """A registration token with one use admits exactly one registration."""
        admin = await self._admin_token()
        resp = await self.request("POST", "/_synapse/admin/v1/registration_tokens/new", {"token": "abc", "uses_allowed": 1}, token=admin)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"token": "abc", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": None})

        resp = await self.request("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc")
        self.assertEqual(resp.json, {"valid": True})
        validate_response("registration_tokens.yaml", "/register/m.login.registration_token/validity", "get", 200, resp.json)

        body = {"username": "kim", "password": "correct horse battery"}
        resp = await self.request("POST", REGISTER, body)
        self.assertEqual(resp.json["flows"], [{"stages": ["m.login.registration_token"]}])
        session = resp.json["session"]
        # A dummy stage is not offered.
        resp = await self.request("POST", REGISTER, {**body, "auth": {"type": "m.login.dummy", "session": session}})
        self.assertEqual(resp.code, 401)
        # A wrong token fails the stage.
        resp = await self.request("POST", REGISTER, {**body, "auth": {"type": "m.login.registration_token", "token": "zzz", "session": session}})
        self.assertEqual((resp.code, resp.json.get("errcode")), (401, "M_UNAUTHORIZED"))
        resp = await self.request("POST", REGISTER, {**body, "auth": {"type": "m.login.registration_token", "token": "abc", "session": session}})
        self.assertEqual(resp.code, 200, resp.body)

        tok = await self.request("GET", "/_synapse/admin/v1/registration_tokens/abc", token=admin)
        self.assertEqual((tok.json["pending"], tok.json["completed"]), (0, 1))
        resp = await self.request("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc")
        self.assertEqual(resp.json, {"valid": False})

        # Used up: the next registration cannot complete the stage.
        resp = await self.request("POST", REGISTER, {"username": "lee", "password": "correct horse battery", "auth": {"type": "m.login.registration_token", "token": "abc"}})
        self.assertEqual((resp.code, resp.json.get("errcode")), (401, "M_UNAUTHORIZED"))
        self.assertEqual(await self.count("users"), 2)

    async def test_expired_session_releases_token(self) -> None:
        """An abandoned session's reserved token use is released when sessions expire."""
        admin = await self._admin_token()
        await self.request("POST", "/_synapse/admin/v1/registration_tokens/new", {"token": "one", "uses_allowed": 1}, token=admin)
        body = {"username": "mia", "password": "correct horse battery"}
        first = await self.request("POST", REGISTER, body)
        session = first.json["session"]
        resp = await self.request("POST", REGISTER, {"username": "mia", "auth": {"type": "m.login.registration_token", "token": "one", "session": session}})
        self.assertError(resp, 400, "M_MISSING_PARAM")  # stage done, but no password given
        tok = await self.request("GET", "/_synapse/admin/v1/registration_tokens/one", token=admin)
        self.assertEqual(tok.json["pending"], 1)
        resp = await self.request("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=one")
        self.assertEqual(resp.json, {"valid": False})

        self.clock.advance(self.config.registration.ui_auth_session_lifetime_ms / 1000 + 1)
        resp = await self.request("POST", REGISTER, {**body, "auth": {"type": "m.login.registration_token", "token": "one", "session": session}})
        self.assertEqual(resp.code, 400)  # the session expired
        # Starting a new session purges expired ones, releasing the token.
        resp = await self.request("POST", REGISTER, {"username": "ned", "password": "correct horse battery",
                                                     "auth": {"type": "m.login.registration_token", "token": "one"}})
        self.assertEqual(resp.code, 200, resp.body)
        tok = await self.request("GET", "/_synapse/admin/v1/registration_tokens/one", token=admin)
        self.assertEqual((tok.json["pending"], tok.json["completed"]), (0, 1))

    async def test_admin_api(self) -> None:
        """Listing, updating and deleting tokens; non-admins are refused."""
        admin = await self._admin_token()
        user = (await self.request("POST", "/_synapse/admin/v1/registration_tokens/new", {"length": 8}, token=admin)).json
        self.assertEqual(len(user["token"]), 8)
        resp = await self.request("PUT", f"/_synapse/admin/v1/registration_tokens/{user['token']}", {"uses_allowed": 0}, token=admin)
        self.assertEqual(resp.json["uses_allowed"], 0)
        resp = await self.request("GET", "/_synapse/admin/v1/registration_tokens?valid=false", token=admin)
        self.assertEqual([t["token"] for t in resp.json["registration_tokens"]], [user["token"]])
        resp = await self.request("GET", "/_synapse/admin/v1/registration_tokens?valid=true", token=admin)
        self.assertEqual(resp.json["registration_tokens"], [])
        resp = await self.request("POST", "/_synapse/admin/v1/registration_tokens/new", {"token": user["token"]}, token=admin)
        self.assertError(resp, 400, "M_INVALID_PARAM")
        for bad in ({"uses_allowed": -1}, {"uses_allowed": 2**40}, {"expiry_time": 2**70}, {"expiry_time": 5},
                    {"token": "bad token"}, {"length": 0}, {"uses_allowed": "1"}):
            resp = await self.request("POST", "/_synapse/admin/v1/registration_tokens/new", bad, token=admin)
            self.assertError(resp, 400, "M_INVALID_PARAM")
        resp = await self.request("DELETE", f"/_synapse/admin/v1/registration_tokens/{user['token']}", token=admin)
        self.assertEqual(resp.code, 200)
        resp = await self.request("DELETE", f"/_synapse/admin/v1/registration_tokens/{user['token']}", token=admin)
        self.assertError(resp, 404, "M_NOT_FOUND")
        resp = await self.request("GET", "/_synapse/admin/v1/registration_tokens")
        self.assertError(resp, 401, "M_MISSING_TOKEN")


class SharedSecretTests(ApiTestCase):
    registration = {"enable_registration": False, "registration_shared_secret": "s3cret-s3cret-s3cret"}

    async def _nonce(self) -> str:
        resp = await self.request("GET", "/_synapse/admin/v1/register")
        self.assertEqual(resp.code, 200)
        return resp.json["nonce"]

    async def test_register_admin(self) -> None:
        """A correct HMAC creates an admin (even with registration closed); the nonce is single-use."""
        nonce = await self._nonce()
        mac = shared_secret_mac("s3cret-s3cret-s3cret", nonce, "root", "correct horse battery", True)
        body = {"nonce": nonce, "username": "root", "password": "correct horse battery", "admin": True, "mac": mac}
        resp = await self.request("POST", "/_synapse/admin/v1/register", body)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["user_id"], "@root:test.local")
        resp2 = await self.request("GET", "/_synapse/admin/v1/registration_tokens", token=resp.json["access_token"])
        self.assertEqual(resp2.code, 200)
        again = await self.request("POST", "/_synapse/admin/v1/register", body)
        self.assertEqual(again.code, 400)

    async def test_bad_mac(self) -> None:
        """A wrong HMAC is 403 M_FORBIDDEN and creates nothing."""
        nonce = await self._nonce()
        mac = shared_secret_mac("wrong-secret-wrong", nonce, "root", "correct horse battery", True)
        resp = await self.request("POST", "/_synapse/admin/v1/register", {"nonce": nonce, "username": "root", "password": "correct horse battery", "admin": True, "mac": mac})
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("POST", "/_synapse/admin/v1/register", {"nonce": 1})
        self.assertError(resp, 400, "M_BAD_JSON")
        self.assertEqual(await self.count("users"), 0)

    async def test_not_configured(self) -> None:
        """Without a secret, the nonce endpoint refuses."""
        self.api.registration._reg = type(self.api.registration._reg)()
        resp = await self.request("GET", "/_synapse/admin/v1/register")
        self.assertEqual(resp.code, 400)


class RegistrationRaceTests(ApiTestCase):
    async def test_concurrent_same_name(self) -> None:
        """Concurrent registrations of one name (in different cases): exactly one wins."""
        from twisted.internet import defer

        from tests.utils.http import make_request
        from tests.utils.client import wait_for_response

        bodies = [{"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}}
                  for name in ("race", "RACE", "Race", "race")]
        pending = [make_request(self.site, "POST", REGISTER, b) for b in bodies]
        responses = await defer.gatherResults([defer.ensureDeferred(wait_for_response(r)) for r in pending])
        codes = sorted(r.code for r in responses)
        self.assertEqual(codes, [200, 400, 400, 400])
        for r in responses:
            if r.code == 400:
                self.assertEqual(r.json["errcode"], "M_USER_IN_USE")
        self.assertEqual(await self.count("users"), 1)
        self.assertEqual(await self.count("devices"), 1)
