"""Devices, password change and deactivation (all behind UIA where the spec says)."""

from __future__ import annotations

import time

from twisted.internet import reactor, task

from tests.utils.client import ApiTestCase
from tests.utils.spec import validate_error, validate_request, validate_response

DEVICES = "/_matrix/client/v3/devices"
WHOAMI = "/_matrix/client/v3/account/whoami"
PASSWORD = "correct horse battery"


def password_auth(session: str | None = None, password: str = PASSWORD, user: str = "alice") -> dict:
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    if session:
        auth["session"] = session
    return auth


class DeviceTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        reg = await self.register_user("alice", device_id="FIRST", initial_device_display_name="Phone")
        self.token = reg["access_token"]

    async def test_list_get_update(self) -> None:
        """List, get and rename devices; last-seen is recorded on use."""
        second = await self.login(device_id="SECOND")
        resp = await self.request("GET", DEVICES, token=self.token)
        self.assertEqual(resp.code, 200)
        validate_response("device_management.yaml", "/devices", "get", 200, resp.json)
        self.assertEqual([d["device_id"] for d in resp.json["devices"]], ["FIRST", "SECOND"])
        first = [d for d in resp.json["devices"] if d["device_id"] == "FIRST"][0]
        self.assertEqual(first["display_name"], "Phone")
        # Last-seen is written in the background after an authenticated request.
        deadline = time.monotonic() + 10
        while "last_seen_ip" not in first:
            self.assertLess(time.monotonic(), deadline, "last_seen never recorded")
            await task.deferLater(reactor, 0.01, lambda: None)
            resp = await self.request("GET", DEVICES + "/FIRST", token=self.token)
            first = resp.json
        self.assertEqual(first["last_seen_ip"], "127.0.0.1")
        self.assertGreater(first["last_seen_ts"], 0)

        body = {"display_name": "Work laptop"}
        validate_request("device_management.yaml", "/devices/{deviceId}", "put", body)
        resp = await self.request("PUT", DEVICES + "/SECOND", body, token=second["access_token"])
        self.assertEqual((resp.code, resp.json), (200, {}))
        resp = await self.request("GET", DEVICES + "/SECOND", token=self.token)
        validate_response("device_management.yaml", "/devices/{deviceId}", "get", 200, resp.json)
        self.assertEqual(resp.json["display_name"], "Work laptop")

    async def test_unknown_device_and_bad_bodies(self) -> None:
        """Unknown devices are 404 M_NOT_FOUND; a non-string display name is M_BAD_JSON."""
        resp = await self.request("GET", DEVICES + "/NOPE", token=self.token)
        self.assertError(resp, 404, "M_NOT_FOUND")
        resp = await self.request("PUT", DEVICES + "/NOPE", {"display_name": "x"}, token=self.token)
        self.assertError(resp, 404, "M_NOT_FOUND")
        resp = await self.request("PUT", DEVICES + "/FIRST", {"display_name": 5}, token=self.token)
        self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("PUT", DEVICES + "/FIRST", b"{", token=self.token)
        self.assertError(resp, 400, "M_NOT_JSON")
        resp = await self.request("DELETE", DEVICES + "/NOPE", {}, token=self.token)
        self.assertError(resp, 404, "M_NOT_FOUND")
        resp = await self.request("GET", DEVICES)
        self.assertError(resp, 401, "M_MISSING_TOKEN")

    async def test_delete_device_uia(self) -> None:
        """Deleting a device needs the password; afterwards its token is dead."""
        other = await self.login(device_id="OTHER")
        resp = await self.request("DELETE", DEVICES + "/OTHER", {}, token=self.token)
        self.assertEqual(resp.code, 401)
        validate_response("device_management.yaml", "/devices/{deviceId}", "delete", 401, resp.json)
        session = resp.json["session"]
        resp = await self.request("DELETE", DEVICES + "/OTHER", {"auth": password_auth(session, "wrong pass word")}, token=self.token)
        self.assertEqual((resp.code, resp.json["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual((await self.request("GET", WHOAMI, token=other["access_token"])).code, 200)
        resp = await self.request("DELETE", DEVICES + "/OTHER", {"auth": password_auth(session)}, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertError(await self.request("GET", WHOAMI, token=other["access_token"]), 401, "M_UNKNOWN_TOKEN")
        self.assertError(await self.request("GET", DEVICES + "/OTHER", token=self.token), 404, "M_NOT_FOUND")

    async def test_password_of_another_account_fails(self) -> None:
        """UIA proves the requester's own password, not anyone's."""
        await self.register_user("bob", password="bobs password!")
        resp = await self.request("DELETE", DEVICES + "/FIRST", {"auth": password_auth(None, "bobs password!", "bob")}, token=self.token)
        self.assertEqual((resp.code, resp.json["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual((await self.request("GET", WHOAMI, token=self.token)).code, 200)

    async def test_delete_devices(self) -> None:
        """POST /delete_devices removes several devices after UIA; bad bodies are M_BAD_JSON."""
        a = await self.login(device_id="A")
        await self.login(device_id="B")
        body = {"devices": ["A", "B", "UNKNOWN"], "auth": password_auth()}
        validate_request("device_management.yaml", "/delete_devices", "post", body)
        resp = await self.request("POST", "/_matrix/client/v3/delete_devices", body, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await self.request("GET", DEVICES, token=self.token)
        self.assertEqual([d["device_id"] for d in resp.json["devices"]], ["FIRST"])
        self.assertError(await self.request("GET", WHOAMI, token=a["access_token"]), 401, "M_UNKNOWN_TOKEN")
        for bad in ({"devices": "A"}, {"devices": [1]}, {}):
            resp = await self.request("POST", "/_matrix/client/v3/delete_devices", bad, token=self.token)
            self.assertError(resp, 400, "M_BAD_JSON")

    async def test_uia_session_bound_to_devices(self) -> None:
        """A session started to delete one device cannot delete another."""
        await self.login(device_id="OTHER")
        resp = await self.request("DELETE", DEVICES + "/OTHER", {}, token=self.token)
        session = resp.json["session"]
        resp = await self.request("POST", "/_matrix/client/v3/delete_devices",
                                  {"devices": ["FIRST"], "auth": password_auth(session)}, token=self.token)
        self.assertError(resp, 403, "M_FORBIDDEN")
        self.assertEqual(await self.count("devices"), 2)

    async def test_uia_session_cannot_cross_operations(self) -> None:
        """A session started for deleting devices cannot authorise a password change."""
        resp = await self.request("DELETE", DEVICES + "/FIRST", {}, token=self.token)
        session = resp.json["session"]
        resp = await self.request("POST", "/_matrix/client/v3/account/password",
                                  {"new_password": "another long one", "auth": password_auth(session)}, token=self.token)
        self.assertError(resp, 403, "M_FORBIDDEN")


class ThreepidTests(ApiTestCase):
    async def test_no_threepids(self) -> None:
        """GET /account/3pid lists none: third-party identifiers are not supported."""
        token = (await self.register_user("alice"))["access_token"]
        resp = await self.request("GET", "/_matrix/client/v3/account/3pid", token=token)
        self.assertEqual((resp.code, resp.json), (200, {"threepids": []}))
        validate_response("administrative_contact.yaml", "/account/3pid", "get", 200, resp.json)


class PasswordChangeTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        reg = await self.register_user("alice", device_id="KEEP")
        self.token = reg["access_token"]

    async def test_change_logs_out_other_devices(self) -> None:
        """Changing the password logs out other devices by default and the new password works."""
        other = await self.login(device_id="OTHER")
        body = {"new_password": "a brand new password", "auth": password_auth()}
        validate_request("password_management.yaml", "/account/password", "post", body)
        resp = await self.request("POST", "/_matrix/client/v3/account/password", body, token=self.token)
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertEqual((await self.request("GET", WHOAMI, token=self.token)).code, 200)
        self.assertError(await self.request("GET", WHOAMI, token=other["access_token"]), 401, "M_UNKNOWN_TOKEN")
        await self.login(password="a brand new password")
        resp = await self.request("POST", "/_matrix/client/v3/login", {"type": "m.login.password", "user": "alice", "password": PASSWORD})
        self.assertError(resp, 403, "M_FORBIDDEN")

    async def test_keep_devices(self) -> None:
        """logout_devices: false keeps other sessions."""
        other = await self.login(device_id="OTHER")
        body = {"new_password": "a brand new password", "logout_devices": False, "auth": password_auth()}
        resp = await self.request("POST", "/_matrix/client/v3/account/password", body, token=self.token)
        self.assertEqual(resp.code, 200)
        self.assertEqual((await self.request("GET", WHOAMI, token=other["access_token"])).code, 200)

    async def test_refusals(self) -> None:
        """Weak password M_WEAK_PASSWORD, missing UIA 401, wrong types M_BAD_JSON; password unchanged."""
        resp = await self.request("POST", "/_matrix/client/v3/account/password", {"new_password": "short", "auth": password_auth()}, token=self.token)
        self.assertError(resp, 400, "M_WEAK_PASSWORD")
        validate_error(resp.json)
        resp = await self.request("POST", "/_matrix/client/v3/account/password", {"new_password": "long enough password"}, token=self.token)
        self.assertEqual(resp.code, 401)
        validate_response("password_management.yaml", "/account/password", "post", 401, resp.json)
        for bad in ({"new_password": 1}, {"new_password": "long enough password", "logout_devices": "no"}):
            resp = await self.request("POST", "/_matrix/client/v3/account/password", bad, token=self.token)
            self.assertError(resp, 400, "M_BAD_JSON")
        await self.login()  # the original password still works


class PasswordPolicyTests(ApiTestCase):
    password_policy_overrides = {"minimum_length": 10, "require_digit": True, "require_symbol": True,
                                 "require_uppercase": True, "require_lowercase": True}

    async def test_policy_rules(self) -> None:
        """Each configured rule refuses with M_WEAK_PASSWORD; a compliant password passes."""
        for pw in ("Sh0rt!", "NoDigitsHere!", "NoSymbols123", "nouppercase1!", "NOLOWERCASE1!"):
            resp = await self.request("POST", "/_matrix/client/v3/register", {"username": "zed", "password": pw, "auth": {"type": "m.login.dummy"}})
            self.assertError(resp, 400, "M_WEAK_PASSWORD")
        await self.register_user("zed", password="Good-Passw0rd")


class DeactivationTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        reg = await self.register_user("alice")
        self.token = reg["access_token"]

    async def test_deactivate_with_erase(self) -> None:
        """Deactivation logs out every device, blocks login and erases the profile."""
        other = await self.login()
        body = {"auth": password_auth(), "erase": True}
        validate_request("account_deactivation.yaml", "/account/deactivate", "post", body)
        resp = await self.request("POST", "/_matrix/client/v3/account/deactivate", body, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        validate_response("account_deactivation.yaml", "/account/deactivate", "post", 200, resp.json)
        self.assertEqual(resp.json, {"id_server_unbind_result": "no-support"})
        for t in (self.token, other["access_token"]):
            self.assertError(await self.request("GET", WHOAMI, token=t), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual(await self.count("devices"), 0)
        self.assertEqual(await self.count("profile_fields"), 0)
        resp = await self.request("POST", "/_matrix/client/v3/login", {"type": "m.login.password", "user": "alice", "password": PASSWORD})
        self.assertError(resp, 403, "M_USER_DEACTIVATED")
        # The name stays taken.
        resp = await self.request("GET", "/_matrix/client/v3/register/available?username=alice")
        self.assertError(resp, 400, "M_USER_IN_USE")

    async def test_refusals(self) -> None:
        """Without UIA nothing happens; wrong types are M_BAD_JSON."""
        resp = await self.request("POST", "/_matrix/client/v3/account/deactivate", {}, token=self.token)
        self.assertEqual(resp.code, 401)
        validate_response("account_deactivation.yaml", "/account/deactivate", "post", 401, resp.json)
        resp = await self.request("POST", "/_matrix/client/v3/account/deactivate", {"erase": "yes", "auth": password_auth()}, token=self.token)
        self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("POST", "/_matrix/client/v3/account/deactivate", {"auth": password_auth(password="wrong wrong")}, token=self.token)
        self.assertEqual((resp.code, resp.json["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual((await self.request("GET", WHOAMI, token=self.token)).code, 200)
