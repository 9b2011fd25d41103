"""The Synapse-compatible user admin API (``/_synapse/admin/v1|v2/users...``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import defer, reactor

from tests.utils.client import ApiTestCase
from tests.utils.wait import wait_until

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"
WHOAMI = "/_matrix/client/v3/account/whoami"
PASSWORD = "correct horse battery"


def u(name: str) -> str:
    """A local user ID, quoted for a path."""
    return quote(f"@{name}:test.local")


class AdminTestCase(ApiTestCase):
    """An admin (``@admin``) and an ordinary user (``@alice``)."""

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.admin = (await self.register_user("admin", device_id="ADMINDEV"))["access_token"]
        await self.api.account_store.set_admin("@admin:test.local", True)
        self.alice = (await self.register_user("alice", device_id="PHONE"))["access_token"]

    async def get(self, path: str, token: Any = "admin") -> Any:
        return await self.request("GET", path, token=self.admin if token == "admin" else token)

    async def assertRefusesNonAdmins(self, method: str, path: str, body: Any = None) -> None:
        """401 without or with a bad token, 403 for a user who is not an admin."""
        self.assertError(await self.request(method, path, body), 401, "M_MISSING_TOKEN")
        self.assertError(await self.request(method, path, body, token="est_nope"), 401, "M_UNKNOWN_TOKEN")
        self.assertError(await self.request(method, path, body, token=self.alice), 403, "M_FORBIDDEN")


class ServerVersionTests(AdminTestCase):
    async def test_server_version(self) -> None:
        """The version is the installed package's, and needs no token (as in Synapse)."""
        import importlib.metadata

        resp = await self.request("GET", V1 + "/server_version")
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.json, {"server_version": importlib.metadata.version("estuary-homeserver")})


class ListUsersTests(AdminTestCase):
    registration = {"enable_registration": True, "allow_guest_access": True}

    async def test_list_fields_and_default_filters(self) -> None:
        """Synapse's fields; guests included, deactivated excluded by default; ordered by name."""
        await self.register_user("bob")
        resp = await self.request("POST", "/_matrix/client/v3/register?kind=guest", {})
        self.assertEqual(resp.code, 200, resp.body)
        guest = resp.json["user_id"]
        await self.api.account_store.deactivate_user("@bob:test.local", False)
        resp = await self.get(V2 + "/users")
        self.assertEqual(resp.code, 200, resp.body)
        names = [x["name"] for x in resp.json["users"]]
        self.assertEqual(names, sorted(["@admin:test.local", "@alice:test.local", guest]))
        self.assertEqual(resp.json["total"], 3)
        self.assertNotIn("next_token", resp.json)
        alice = [x for x in resp.json["users"] if x["name"] == "@alice:test.local"][0]
        self.assertEqual(set(alice), {
            "name", "is_guest", "admin", "user_type", "deactivated", "erased", "shadow_banned", "displayname",
            "avatar_url", "creation_ts", "last_seen_ts", "locked",
        })
        self.assertEqual((alice["admin"], alice["is_guest"], alice["displayname"]), (False, False, "alice"))
        self.assertGreater(alice["creation_ts"], 10 ** 12)  # milliseconds
        admin = [x for x in resp.json["users"] if x["name"] == "@admin:test.local"][0]
        self.assertTrue(admin["admin"])

        resp = await self.get(V2 + "/users?" + urlencode({"guests": "false", "deactivated": "true"}))
        self.assertEqual([x["name"] for x in resp.json["users"]],
                         ["@admin:test.local", "@alice:test.local", "@bob:test.local"])
        self.assertTrue(resp.json["users"][2]["deactivated"])
        # v3: ``deactivated`` filters both ways, absent means everyone.
        v3 = "/_synapse/admin/v3/users?guests=false"
        resp = await self.get(v3 + "&deactivated=true")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@bob:test.local"])
        resp = await self.get(v3 + "&deactivated=false")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@admin:test.local", "@alice:test.local"])
        resp = await self.get(v3)
        self.assertEqual(resp.json["total"], 3)
        resp = await self.get(V2 + "/users?admins=true")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@admin:test.local"])
        resp = await self.get(V2 + "/users?admins=false&guests=false")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@alice:test.local"])

    async def test_pagination_and_order(self) -> None:
        """``from``/``limit``/``next_token`` walk every user once; ``dir=b`` reverses."""
        for name in ("carol", "dave", "erin"):
            await self.register_user(name)
        seen: list[str] = []
        start = "0"
        while True:
            resp = await self.get(V2 + "/users?" + urlencode({"from": start, "limit": "2"}))
            self.assertEqual(resp.code, 200, resp.body)
            self.assertEqual(resp.json["total"], 5)
            seen += [x["name"] for x in resp.json["users"]]
            if "next_token" not in resp.json:
                break
            start = resp.json["next_token"]
        self.assertEqual(seen, sorted(f"@{n}:test.local" for n in ("admin", "alice", "carol", "dave", "erin")))
        resp = await self.get(V2 + "/users?dir=b&limit=1")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@erin:test.local"])
        self.assertEqual(resp.json["next_token"], "1")
        resp = await self.get(V2 + "/users?order_by=admin&dir=b&limit=1")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@admin:test.local"])
        resp = await self.get(V2 + "/users?order_by=creation_ts&dir=b&limit=1")
        self.assertEqual(resp.code, 200)

    async def test_name_and_user_id_filters(self) -> None:
        """``name`` matches localparts and display names; ``user_id`` matches ids; wildcards are literal."""
        await self.register_user("bob")
        await self.api.profiles.set_field_as_admin("@bob:test.local", "displayname", "Robert Alison")
        resp = await self.get(V2 + "/users?name=ALI")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@alice:test.local", "@bob:test.local"])
        resp = await self.get(V2 + "/users?user_id=" + quote("@bo"))
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@bob:test.local"])
        resp = await self.get(V2 + "/users?name=" + quote("%"))
        self.assertEqual(resp.json["users"], [])
        resp = await self.get(V2 + "/users?order_by=displayname")
        self.assertEqual([x["name"] for x in resp.json["users"]][-1], "@alice:test.local")

    async def test_every_order(self) -> None:
        """Every ``order_by`` Synapse documents works both ways and returns every user once."""
        from homeserver.handlers.admin import USER_ORDERS

        for order in sorted(USER_ORDERS):
            for direction in ("f", "b"):
                resp = await self.get(V2 + "/users?" + urlencode({"order_by": order, "dir": direction}))
                self.assertEqual(resp.code, 200, (order, resp.body))
                self.assertEqual(sorted(x["name"] for x in resp.json["users"]),
                                 ["@admin:test.local", "@alice:test.local"])

    async def test_not_user_type(self) -> None:
        """``not_user_type`` (repeatable) leaves out bots, support users or users without a type."""
        for name, kind in (("bot", "bot"), ("helpdesk", "support")):
            resp = await self.request("PUT", V2 + "/users/" + u(name), {"user_type": kind}, token=self.admin)
            self.assertEqual(resp.code, 201, resp.body)
        resp = await self.get(V2 + "/users?not_user_type=bot")
        self.assertEqual([x["name"] for x in resp.json["users"]],
                         ["@admin:test.local", "@alice:test.local", "@helpdesk:test.local"])
        resp = await self.get(V2 + "/users?not_user_type=bot&not_user_type=")
        self.assertEqual([x["name"] for x in resp.json["users"]], ["@helpdesk:test.local"])
        self.assertError(await self.get(V2 + "/users?not_user_type=robot"), 400, "M_INVALID_PARAM")

    async def test_bad_query(self) -> None:
        """Bad filters and orders are 400 M_INVALID_PARAM; non-admins are refused."""
        for query in ({"limit": "-1"}, {"limit": "x"}, {"limit": "0"}, {"from": "a"}, {"guests": "maybe"},
                      {"deactivated": "1"}, {"order_by": "password_hash"}, {"dir": "up"}, {"admins": "yes"}):
            resp = await self.get(V2 + "/users?" + urlencode(query))
            self.assertError(resp, 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("GET", V2 + "/users")
        await self.assertRefusesNonAdmins("GET", "/_synapse/admin/v3/users")


class QueryUserTests(AdminTestCase):
    async def test_query_user(self) -> None:
        """Details of a user; unknown users are 404; remote users are 400."""
        resp = await self.get(V2 + "/users/" + u("alice"))
        self.assertEqual(resp.code, 200, resp.body)
        body = resp.json
        self.assertEqual(body["name"], "@alice:test.local")
        self.assertEqual(body["displayname"], "alice")
        self.assertEqual((body["admin"], body["deactivated"], body["erased"], body["threepids"]), (False, False, False, []))
        self.assertLess(body["creation_ts"], 10 ** 11)  # seconds, as Synapse reports it here
        self.assertError(await self.get(V2 + "/users/" + u("nobody")), 404, "M_NOT_FOUND")
        self.assertError(await self.get(V2 + "/users/" + quote("@alice:elsewhere.org")), 400, "M_INVALID_PARAM")
        self.assertError(await self.get(V2 + "/users/alice"), 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("GET", V2 + "/users/" + u("alice"))


class PutUserTests(AdminTestCase):
    async def test_create_user(self) -> None:
        """A new user gets 201 and can log in with the given password; profile and admin are set."""
        body = {"password": "a new strong password", "displayname": "Zed", "avatar_url": "mxc://test.local/abc",
                "admin": True, "threepids": [], "external_ids": [], "locked": False}
        resp = await self.request("PUT", V2 + "/users/" + u("zed"), body, token=self.admin)
        self.assertEqual(resp.code, 201, resp.body)
        self.assertEqual((resp.json["name"], resp.json["displayname"], resp.json["avatar_url"], resp.json["admin"]),
                         ("@zed:test.local", "Zed", "mxc://test.local/abc", True))
        login = await self.login("zed", "a new strong password")
        self.assertEqual(login["user_id"], "@zed:test.local")
        # Created admins are admins.
        self.assertEqual((await self.get(V2 + "/users", token=login["access_token"])).code, 200)

    async def test_create_without_password_cannot_log_in(self) -> None:
        """Created without a password, the display name defaults to the localpart."""
        resp = await self.request("PUT", V2 + "/users/" + u("bot"), {"user_type": "bot"}, token=self.admin)
        self.assertEqual(resp.code, 201, resp.body)
        self.assertEqual((resp.json["displayname"], resp.json["user_type"]), ("bot", "bot"))
        resp = await self.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bot"}, "password": "x"})
        self.assertEqual(resp.code, 403)

    async def test_modify_user(self) -> None:
        """Password (logging out devices), display name, avatar removal, admin, user type."""
        await self.api.profiles.set_field_as_admin("@alice:test.local", "avatar_url", "mxc://test.local/old")
        body = {"password": "another strong password", "displayname": "Alice A.", "avatar_url": "",
                "admin": True, "user_type": "support"}
        resp = await self.request("PUT", V2 + "/users/" + u("alice"), body, token=self.admin)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["displayname"], resp.json["avatar_url"], resp.json["admin"], resp.json["user_type"]),
                         ("Alice A.", None, True, "support"))
        self.assertError(await self.request("GET", WHOAMI, token=self.alice), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual(await self.count("devices WHERE user_id = '@alice:test.local'"), 0)
        await self.login("alice", "another strong password")

    async def test_record_sent_back_with_nulls(self) -> None:
        """A tool saving the whole record it read (nulls included) changes only what it changed."""
        record = (await self.get(V2 + "/users/" + u("alice"))).json
        record.update({"displayname": "Alice B.", "password": None})
        resp = await self.request("PUT", V2 + "/users/" + u("alice"), record, token=self.admin)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["displayname"], resp.json["avatar_url"], resp.json["admin"]), ("Alice B.", None, False))
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice)).code, 200)

    async def test_password_without_logout(self) -> None:
        """``logout_devices: false`` keeps the sessions."""
        body = {"password": "another strong password", "logout_devices": False}
        resp = await self.request("PUT", V2 + "/users/" + u("alice"), body, token=self.admin)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice)).code, 200)

    async def test_deactivate_and_reactivate(self) -> None:
        """``deactivated: true`` logs the user out; reactivating needs a password."""
        resp = await self.request("PUT", V2 + "/users/" + u("alice"), {"deactivated": True}, token=self.admin)
        self.assertEqual((resp.code, resp.json["deactivated"]), (200, True))
        self.assertError(await self.request("GET", WHOAMI, token=self.alice), 401, "M_UNKNOWN_TOKEN")
        resp = await self.request("PUT", V2 + "/users/" + u("alice"), {"deactivated": False}, token=self.admin)
        self.assertError(resp, 400, "M_MISSING_PARAM")
        resp = await self.request("PUT", V2 + "/users/" + u("alice"),
                                  {"deactivated": False, "password": "back again password"}, token=self.admin)
        self.assertEqual((resp.code, resp.json["deactivated"]), (200, False))
        await self.login("alice", "back again password")

    async def test_refusals(self) -> None:
        """Bad bodies, remote users, unsupported fields, demoting oneself; nothing is written on refusal."""
        path = V2 + "/users/" + u("alice")
        for body, code, errcode in (
            ({"admin": "yes"}, 400, "M_BAD_JSON"),
            ({"password": 5}, 400, "M_BAD_JSON"),
            ({"displayname": 7}, 400, "M_BAD_JSON"),
            ({"avatar_url": "http://x"}, 400, "M_BAD_JSON"),
            ({"user_type": "robot"}, 400, "M_BAD_JSON"),
            ({"logout_devices": "no"}, 400, "M_BAD_JSON"),
            ({"locked": True}, 400, "M_INVALID_PARAM"),
            ({"threepids": [{"medium": "email", "address": "a@b.c"}]}, 400, "M_INVALID_PARAM"),
            ({"displayname": "x" * 300, "admin": True}, 400, "M_BAD_JSON"),
            ({"password": "short", "admin": True}, 400, "M_WEAK_PASSWORD"),
        ):
            resp = await self.request("PUT", path, body, token=self.admin)
            self.assertError(resp, code, errcode)
        resp = await self.request("PUT", path, b"{nope", token=self.admin)
        self.assertError(resp, 400, "M_NOT_JSON")
        resp = await self.request("PUT", path, [1], token=self.admin)
        self.assertError(resp, 400, "M_BAD_JSON")
        details = (await self.get(path)).json
        self.assertEqual((details["admin"], details["displayname"]), (False, "alice"))
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice)).code, 200)

        resp = await self.request("PUT", V2 + "/users/" + quote("@x:elsewhere.org"), {}, token=self.admin)
        self.assertError(resp, 400, "M_INVALID_PARAM")
        resp = await self.request("PUT", V2 + "/users/" + u("_bad"), {}, token=self.admin)
        self.assertError(resp, 400, "M_INVALID_USERNAME")
        self.assertEqual(await self.count("users"), 2)
        resp = await self.request("PUT", V2 + "/users/" + u("admin"), {"admin": False}, token=self.admin)
        self.assertError(resp, 400, "M_BAD_JSON")
        await self.assertRefusesNonAdmins("PUT", path, {"admin": True})
        self.assertFalse((await self.get(path)).json["admin"])


class DeactivateAndPasswordTests(AdminTestCase):
    async def test_deactivate(self) -> None:
        """Deactivation removes tokens and devices; ``erase`` removes the profile."""
        resp = await self.request("POST", V1 + "/deactivate/" + u("alice"), {"erase": True}, token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {"id_server_unbind_result": "success"}))
        self.assertError(await self.request("GET", WHOAMI, token=self.alice), 401, "M_UNKNOWN_TOKEN")
        details = (await self.get(V2 + "/users/" + u("alice"))).json
        self.assertEqual((details["deactivated"], details["erased"], details["displayname"]), (True, True, None))
        self.assertEqual((await self.get(V2 + "/users/" + u("alice") + "/devices")).json["devices"], [])

    async def test_deactivate_empty_body_and_refusals(self) -> None:
        """An empty body is allowed; bad ``erase``, unknown and remote users are refused."""
        await self.register_user("bob")
        resp = await self.request("POST", V1 + "/deactivate/" + u("bob"), b"", token=self.admin)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertError(await self.request("POST", V1 + "/deactivate/" + u("alice"), {"erase": 1}, token=self.admin),
                         400, "M_BAD_JSON")
        self.assertError(await self.request("POST", V1 + "/deactivate/" + u("nobody"), {}, token=self.admin),
                         404, "M_NOT_FOUND")
        self.assertError(await self.request("POST", V1 + "/deactivate/" + quote("@a:elsewhere.org"), {},
                                            token=self.admin), 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("POST", V1 + "/deactivate/" + u("alice"), {})
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice)).code, 200)

    async def test_reset_password(self) -> None:
        """The new password works, the old one does not; devices are logged out unless asked not to."""
        path = V1 + "/reset_password/" + u("alice")
        resp = await self.request("POST", path, {"new_password": "brand new password", "logout_devices": False},
                                  token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice)).code, 200)
        resp = await self.request("POST", path, {"new_password": "second new password"}, token=self.admin)
        self.assertEqual(resp.code, 200)
        self.assertError(await self.request("GET", WHOAMI, token=self.alice), 401, "M_UNKNOWN_TOKEN")
        await self.login("alice", "second new password")
        resp = await self.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD})
        self.assertEqual(resp.code, 403)

    async def test_reset_password_refusals(self) -> None:
        path = V1 + "/reset_password/" + u("alice")
        self.assertError(await self.request("POST", path, {}, token=self.admin), 400, "M_MISSING_PARAM")
        self.assertError(await self.request("POST", path, {"new_password": 1}, token=self.admin), 400, "M_BAD_JSON")
        self.assertError(await self.request("POST", path, {"new_password": "a long password", "logout_devices": 0},
                                            token=self.admin), 400, "M_BAD_JSON")
        self.assertError(await self.request("POST", path, {"new_password": "x"}, token=self.admin), 400, "M_WEAK_PASSWORD")
        self.assertError(await self.request("POST", V1 + "/reset_password/" + u("nobody"),
                                            {"new_password": "a long password"}, token=self.admin), 404, "M_NOT_FOUND")
        await self.assertRefusesNonAdmins("POST", path, {"new_password": "a long password"})
        await self.login("alice", PASSWORD)


class AdminFlagTests(AdminTestCase):
    async def test_get_and_set_admin(self) -> None:
        """Grant and revoke; the change applies to the user's existing token at once."""
        path = V1 + "/users/" + u("alice") + "/admin"
        self.assertEqual((await self.get(path)).json, {"admin": False})
        self.assertError(await self.get(V2 + "/users", token=self.alice), 403, "M_FORBIDDEN")
        resp = await self.request("PUT", path, {"admin": True}, token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertEqual((await self.get(path)).json, {"admin": True})
        self.assertEqual((await self.get(V2 + "/users", token=self.alice)).code, 200)
        resp = await self.request("PUT", path, {"admin": False}, token=self.admin)
        self.assertEqual(resp.code, 200)
        self.assertError(await self.get(V2 + "/users", token=self.alice), 403, "M_FORBIDDEN")

    async def test_refusals(self) -> None:
        path = V1 + "/users/" + u("alice") + "/admin"
        self.assertError(await self.request("PUT", path, {}, token=self.admin), 400, "M_MISSING_PARAM")
        self.assertError(await self.request("PUT", path, {"admin": "true"}, token=self.admin), 400, "M_BAD_JSON")
        self.assertError(await self.request("PUT", V1 + "/users/" + u("admin") + "/admin", {"admin": False},
                                            token=self.admin), 400, "M_BAD_JSON")
        self.assertError(await self.get(V1 + "/users/" + quote("@a:elsewhere.org") + "/admin"), 400, "M_INVALID_PARAM")
        self.assertError(await self.get(V1 + "/users/" + u("nobody") + "/admin"), 404, "M_NOT_FOUND")
        await self.assertRefusesNonAdmins("GET", path)
        await self.assertRefusesNonAdmins("PUT", path, {"admin": True})
        self.assertEqual((await self.get(path)).json, {"admin": False})


class DeviceTests(AdminTestCase):
    async def test_list_get_rename_delete(self) -> None:
        """Devices of another user: list, get, rename, delete one, delete several."""
        laptop = await self.login("alice", device_id="LAPTOP")
        await self.login("alice", device_id="TABLET")
        base = V2 + "/users/" + u("alice") + "/devices"
        resp = await self.get(base)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["total"], 3)
        self.assertEqual([d["device_id"] for d in resp.json["devices"]], ["LAPTOP", "PHONE", "TABLET"])
        self.assertEqual(set(resp.json["devices"][0]), {
            "device_id", "display_name", "last_seen_ip", "last_seen_ts", "last_seen_user_agent", "user_id"})
        resp = await self.request("PUT", base + "/PHONE", {"display_name": "Old phone"}, token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {}))
        resp = await self.get(base + "/PHONE")
        self.assertEqual((resp.json["display_name"], resp.json["user_id"]), ("Old phone", "@alice:test.local"))
        resp = await self.request("DELETE", base + "/LAPTOP", token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertError(await self.request("GET", WHOAMI, token=laptop["access_token"]), 401, "M_UNKNOWN_TOKEN")
        self.assertError(await self.get(base + "/LAPTOP"), 404, "M_NOT_FOUND")
        resp = await self.request("POST", V2 + "/users/" + u("alice") + "/delete_devices",
                                  {"devices": ["PHONE", "TABLET", "GONE"]}, token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertError(await self.request("GET", WHOAMI, token=self.alice), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual((await self.get(base)).json, {"devices": [], "total": 0})

    async def test_refusals(self) -> None:
        base = V2 + "/users/" + u("alice") + "/devices"
        self.assertError(await self.request("PUT", base + "/PHONE", {"display_name": 3}, token=self.admin),
                         400, "M_BAD_JSON")
        self.assertError(await self.request("PUT", base + "/NOPE", {"display_name": "x"}, token=self.admin),
                         404, "M_NOT_FOUND")
        self.assertError(await self.get(V2 + "/users/" + u("nobody") + "/devices"), 404, "M_NOT_FOUND")
        self.assertError(await self.get(V2 + "/users/" + quote("@a:elsewhere.org") + "/devices"), 400,
                         "M_INVALID_PARAM")
        for body, errcode in (({}, "M_MISSING_PARAM"), ({"devices": "PHONE"}, "M_BAD_JSON"),
                              ({"devices": [1]}, "M_BAD_JSON")):
            resp = await self.request("POST", V2 + "/users/" + u("alice") + "/delete_devices", body, token=self.admin)
            self.assertError(resp, 400, errcode)
        await self.assertRefusesNonAdmins("GET", base)
        await self.assertRefusesNonAdmins("GET", base + "/PHONE")
        await self.assertRefusesNonAdmins("PUT", base + "/PHONE", {"display_name": "x"})
        await self.assertRefusesNonAdmins("DELETE", base + "/PHONE")
        await self.assertRefusesNonAdmins("POST", V2 + "/users/" + u("alice") + "/delete_devices", {"devices": ["PHONE"]})
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice)).code, 200)

    async def test_whois(self) -> None:
        """Each device with its last connection once the user has made a request."""
        self.assertEqual((await self.request("GET", WHOAMI, token=self.alice, headers={"User-Agent": "TestUA"})).code, 200)
        path = V1 + "/whois/" + u("alice")

        async def seen() -> Any:
            body = (await self.get(path)).json
            conns = body["devices"]["PHONE"]["sessions"][0]["connections"]
            return body if conns else None

        body = await wait_until(reactor, lambda: defer.ensureDeferred(seen()), what="last-seen recorded")
        self.assertEqual(body["user_id"], "@alice:test.local")
        conn = body["devices"]["PHONE"]["sessions"][0]["connections"][0]
        self.assertEqual((conn["ip"], conn["user_agent"]), ("127.0.0.1", "TestUA"))
        self.assertGreater(conn["last_seen"], 0)
        self.assertError(await self.get(V1 + "/whois/" + u("nobody")), 404, "M_NOT_FOUND")
        self.assertError(await self.get(V1 + "/whois/" + quote("@a:elsewhere.org")), 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("GET", path)


class JoinedRoomsTests(AdminTestCase):
    async def test_joined_rooms_reads_memberships(self) -> None:
        """No rooms yet: an empty list; bad ids are refused."""
        resp = await self.get(V1 + "/users/" + u("alice") + "/joined_rooms")
        self.assertEqual((resp.code, resp.json), (200, {"joined_rooms": [], "total": 0}))
        self.assertError(await self.get(V1 + "/users/alice/joined_rooms"), 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("GET", V1 + "/users/" + u("alice") + "/joined_rooms")


class ClientWhoisTests(AdminTestCase):
    async def test_client_whois(self) -> None:
        """``/_matrix/client/v3/admin/whois``: the user themself or an admin; others are refused."""
        path = "/_matrix/client/v3/admin/whois/" + u("alice")
        resp = await self.request("GET", path, token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["user_id"], list(resp.json["devices"])), ("@alice:test.local", ["PHONE"]))
        # Alice's request above was seen: the admin's view has her connection (checked against the spec).
        seen = await wait_until(reactor, lambda: defer.ensureDeferred(self._connections(path)), what="last-seen")
        self.assertEqual(seen[0]["ip"], "127.0.0.1")
        bob = (await self.register_user("bob"))["access_token"]
        self.assertError(await self.request("GET", path, token=bob), 403, "M_FORBIDDEN")
        self.assertError(await self.request("GET", path), 401, "M_MISSING_TOKEN")
        resp = await self.request("GET", "/_matrix/client/v3/admin/whois/" + u("nobody"), token=self.admin)
        self.assertError(resp, 404, "M_NOT_FOUND")

    async def _connections(self, path: str) -> Any:
        resp = await self.request("GET", path, token=self.admin)
        return resp.json["devices"]["PHONE"]["sessions"][0]["connections"] or None
