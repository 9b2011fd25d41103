"""Profiles, account data, tags, filters and discovery endpoints."""

from __future__ import annotations

from tests.utils.client import ApiTestCase
from tests.utils.spec import validate_error, validate_request, validate_response

C = "/_matrix/client/v3"
ALICE = "@alice:test.local"
ROOM = "!room:test.local"


class ProfileTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.token = (await self.register_user("alice"))["access_token"]
        self.bob = (await self.register_user("bob"))["access_token"]
        self.seen: list = []
        self.api.profiles.observers.append(lambda *a: self.seen.append(a))

    async def test_set_get_delete_fields(self) -> None:
        """displayname, avatar_url, m.tz and custom fields round-trip; observers see changes."""
        for key, value in (("displayname", "Alice W"), ("avatar_url", "mxc://test.local/abc"), ("m.tz", "Europe/Paris"),
                           ("org.example.pronouns", {"en": "she/her"})):
            body = {key: value}
            validate_request("profile.yaml", "/profile/{userId}/{keyName}", "put", body)
            resp = await self.request("PUT", f"{C}/profile/{ALICE}/{key}", body, token=self.token)
            self.assertEqual((resp.code, resp.json), (200, {}), resp.body)
            resp = await self.request("GET", f"{C}/profile/{ALICE}/{key}")
            self.assertEqual(resp.json, {key: value})
            validate_response("profile.yaml", "/profile/{userId}/{keyName}", "get", 200, resp.json)
        resp = await self.request("GET", f"{C}/profile/{ALICE}")
        validate_response("profile.yaml", "/profile/{userId}", "get", 200, resp.json)
        self.assertEqual(resp.json["displayname"], "Alice W")
        self.assertEqual(resp.json["org.example.pronouns"], {"en": "she/her"})
        resp = await self.request("DELETE", f"{C}/profile/{ALICE}/m.tz", token=self.token)
        self.assertEqual(resp.code, 200)
        self.assertError(await self.request("GET", f"{C}/profile/{ALICE}/m.tz"), 404, "M_NOT_FOUND")
        # Deleting again is fine.
        self.assertEqual((await self.request("DELETE", f"{C}/profile/{ALICE}/m.tz", token=self.token)).code, 200)
        self.assertEqual([s[1] for s in self.seen], ["displayname", "avatar_url", "m.tz", "org.example.pronouns", "m.tz"])
        self.assertIsNone(self.seen[-1][2])

    async def test_refusals(self) -> None:
        """Others' profiles, bad keys, bad values and missing keys are refused; nothing written."""
        before = await self.count("profile_fields")
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/displayname", {"displayname": "evil"}, token=self.bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        validate_response("profile.yaml", "/profile/{userId}/{keyName}", "put", 403, resp.json)
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/displayname", {"displayname": "x"})
        self.assertError(resp, 401, "M_MISSING_TOKEN")
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/Bad.Key", {"Bad.Key": 1}, token=self.token)
        self.assertError(resp, 400, "M_INVALID_PARAM")
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/com.ex." + "a" * 260, {"x": 1}, token=self.token)
        self.assertError(resp, 400, "M_KEY_TOO_LARGE")
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/displayname", {"avatar_url": "mxc://a/b"}, token=self.token)
        self.assertError(resp, 400, "M_MISSING_PARAM")
        for key, value in (("displayname", 5), ("displayname", "x" * 300), ("avatar_url", "http://x/y"), ("m.tz", 1)):
            resp = await self.request("PUT", f"{C}/profile/{ALICE}/{key}", {key: value}, token=self.token)
            self.assertError(resp, 400, "M_BAD_JSON")
            validate_response("profile.yaml", "/profile/{userId}/{keyName}", "put", 400, resp.json)
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/displayname", b"{", token=self.token)
        self.assertError(resp, 400, "M_NOT_JSON")
        self.assertEqual(await self.count("profile_fields"), before)
        self.assertError(await self.request("GET", f"{C}/profile/@nobody:test.local"), 404, "M_NOT_FOUND")
        self.assertError(await self.request("GET", f"{C}/profile/@alice:elsewhere"), 404, "M_NOT_FOUND")

    async def test_profile_size_limit(self) -> None:
        """The whole profile stays under 64 KiB: M_PROFILE_TOO_LARGE past it."""
        big = "x" * 40000
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/com.example.one", {"com.example.one": big}, token=self.token)
        self.assertEqual(resp.code, 200)
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/com.example.two", {"com.example.two": big}, token=self.token)
        self.assertError(resp, 400, "M_PROFILE_TOO_LARGE")
        validate_response("profile.yaml", "/profile/{userId}/{keyName}", "put", 400, resp.json)
        # Replacing the existing field with a same-sized value is fine.
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/com.example.one", {"com.example.one": big[:-1]}, token=self.token)
        self.assertEqual(resp.code, 200)


class ProfileLockedTests(ApiTestCase):
    profiles_overrides = {"allow_set_displayname": False, "allow_custom_fields": False, "require_auth_for_profile_requests": True}

    async def test_disabled_changes(self) -> None:
        """Config can forbid display name changes and custom fields, and require auth to read."""
        token = (await self.register_user("alice"))["access_token"]
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/displayname", {"displayname": "x"}, token=token)
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("PUT", f"{C}/profile/{ALICE}/com.example.x", {"com.example.x": 1}, token=token)
        self.assertError(resp, 403, "M_FORBIDDEN")
        self.assertError(await self.request("GET", f"{C}/profile/{ALICE}"), 401, "M_MISSING_TOKEN")
        caps = await self.request("GET", f"{C}/capabilities", token=token)
        self.assertEqual(caps.json["capabilities"]["m.set_displayname"], {"enabled": False})
        self.assertEqual(caps.json["capabilities"]["m.profile_fields"], {"enabled": True, "allowed": ["avatar_url", "m.tz"]})


class AccountDataTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.token = (await self.register_user("alice"))["access_token"]
        self.bob = (await self.register_user("bob"))["access_token"]

    async def test_global_and_room(self) -> None:
        """Global and room account data round-trip with increasing stream positions."""
        changes: list = []
        self.api.account_data_store.observers.append(changes.append)
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/org.example.x", {"a": 1}, token=self.token)
        self.assertEqual((resp.code, resp.json), (200, {}))
        resp = await self.request("GET", f"{C}/user/{ALICE}/account_data/org.example.x", token=self.token)
        self.assertEqual(resp.json, {"a": 1})
        validate_response("account-data.yaml", "/user/{userId}/account_data/{type}", "get", 200, resp.json)
        resp = await self.request("PUT", f"{C}/user/{ALICE}/rooms/{ROOM}/account_data/org.example.x", {"b": 2}, token=self.token)
        self.assertEqual(resp.code, 200)
        resp = await self.request("GET", f"{C}/user/{ALICE}/rooms/{ROOM}/account_data/org.example.x", token=self.token)
        self.assertEqual(resp.json, {"b": 2})
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/org.example.x", {"a": 3}, token=self.token)
        self.assertEqual([(c.room_id, c.data_type) for c in changes], [(None, "org.example.x"), (ROOM, "org.example.x"), (None, "org.example.x")])
        positions = [c.stream_id for c in changes]
        self.assertEqual(positions, sorted(positions))
        rows = await self.api.account_data_store.get_changes_since("@alice:test.local", positions[0])
        self.assertEqual([(r[0], r[2]) for r in rows], [(ROOM, {"b": 2}), (None, {"a": 3})])

    async def test_refusals(self) -> None:
        """Others' data 403, unknown 404, server-managed types 405, bad bodies 400; nothing written."""
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/x.y", {"a": 1}, token=self.bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        validate_response("account-data.yaml", "/user/{userId}/account_data/{type}", "put", 403, resp.json)
        resp = await self.request("GET", f"{C}/user/{ALICE}/account_data/x.y", token=self.bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("GET", f"{C}/user/{ALICE}/account_data/x.y", token=self.token)
        self.assertError(resp, 404, "M_NOT_FOUND")
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/m.push_rules", {}, token=self.token)
        self.assertError(resp, 405, "M_BAD_JSON")
        validate_response("account-data.yaml", "/user/{userId}/account_data/{type}", "put", 405, resp.json)
        resp = await self.request("PUT", f"{C}/user/{ALICE}/rooms/{ROOM}/account_data/m.fully_read", {}, token=self.token)
        self.assertError(resp, 405, "M_BAD_JSON")
        resp = await self.request("PUT", f"{C}/user/{ALICE}/rooms/notaroom/account_data/x.y", {}, token=self.token)
        self.assertError(resp, 400, "M_INVALID_PARAM")
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/x.y", [1], token=self.token)
        self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/x.y", b"nope", token=self.token)
        self.assertError(resp, 400, "M_NOT_JSON")
        resp = await self.request("PUT", f"{C}/user/{ALICE}/account_data/x.y", b'{"a":"' + b"x" * (1024 * 1024) + b'"}', token=self.token)
        self.assertError(resp, 413, "M_TOO_LARGE")
        self.assertEqual(await self.count("account_data"), 0)

    async def test_tags(self) -> None:
        """Tags are added, listed and removed; they are the room's m.tag account data."""
        base = f"{C}/user/{ALICE}/rooms/{ROOM}/tags"
        resp = await self.request("GET", base, token=self.token)
        self.assertEqual(resp.json, {"tags": {}})
        validate_request("tags.yaml", "/user/{userId}/rooms/{roomId}/tags/{tag}", "put", {"order": 0.25})
        self.assertEqual((await self.request("PUT", base + "/m.favourite", {"order": 0.25}, token=self.token)).code, 200)
        self.assertEqual((await self.request("PUT", base + "/u.work", {}, token=self.token)).code, 200)
        resp = await self.request("GET", base, token=self.token)
        validate_response("tags.yaml", "/user/{userId}/rooms/{roomId}/tags", "get", 200, resp.json)
        self.assertEqual(resp.json, {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}})
        data = await self.request("GET", f"{C}/user/{ALICE}/rooms/{ROOM}/account_data/m.tag", token=self.token)
        self.assertEqual(data.json, resp.json)
        self.assertEqual((await self.request("DELETE", base + "/u.work", token=self.token)).code, 200)
        resp = await self.request("GET", base, token=self.token)
        self.assertEqual(resp.json, {"tags": {"m.favourite": {"order": 0.25}}})
        resp = await self.request("PUT", base + "/x", {"order": "high"}, token=self.token)
        self.assertError(resp, 400, "M_BAD_JSON")
        resp = await self.request("PUT", base + "/x", {}, token=self.bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("GET", base, token=self.bob)
        self.assertError(resp, 403, "M_FORBIDDEN")


class FilterTests(ApiTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.token = (await self.register_user("alice"))["access_token"]
        self.bob = (await self.register_user("bob"))["access_token"]

    async def test_create_and_get(self) -> None:
        """A valid filter is stored and returned as posted."""
        body = {"room": {"timeline": {"limit": 10, "types": ["m.room.message"], "lazy_load_members": True},
                         "state": {"lazy_load_members": True}, "include_leave": False},
                "presence": {"not_types": ["*"]}, "event_format": "client", "event_fields": ["type", "content.body"]}
        validate_request("filter.yaml", "/user/{userId}/filter", "post", body)
        resp = await self.request("POST", f"{C}/user/{ALICE}/filter", body, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        validate_response("filter.yaml", "/user/{userId}/filter", "post", 200, resp.json)
        fid = resp.json["filter_id"]
        resp = await self.request("GET", f"{C}/user/{ALICE}/filter/{fid}", token=self.token)
        self.assertEqual(resp.json, body)
        validate_response("filter.yaml", "/user/{userId}/filter/{filterId}", "get", 200, resp.json)
        second = await self.request("POST", f"{C}/user/{ALICE}/filter", {}, token=self.token)
        self.assertNotEqual(second.json["filter_id"], fid)

    async def test_refusals(self) -> None:
        """Invalid filters are M_BAD_JSON; others' filters 403; unknown ids 404; nothing written."""
        for bad in ({"room": {"timeline": {"limit": "ten"}}}, {"room": []}, {"event_format": "xml"},
                    {"presence": {"types": "m.presence"}}, {"room": {"state": {"lazy_load_members": 1}}},
                    {"event_fields": [1]}, {"room": {"rooms": "!a:b"}}, {"room": {"timeline": {"limit": 0}}}):
            resp = await self.request("POST", f"{C}/user/{ALICE}/filter", bad, token=self.token)
            self.assertError(resp, 400, "M_BAD_JSON")
        self.assertEqual(await self.count("user_filters"), 0)
        resp = await self.request("POST", f"{C}/user/{ALICE}/filter", {}, token=self.bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        fid = (await self.request("POST", f"{C}/user/{ALICE}/filter", {}, token=self.token)).json["filter_id"]
        self.assertError(await self.request("GET", f"{C}/user/{ALICE}/filter/{fid}", token=self.bob), 403, "M_FORBIDDEN")
        for missing in ("999", "abc", "-1"):
            resp = await self.request("GET", f"{C}/user/{ALICE}/filter/{missing}", token=self.token)
            self.assertError(resp, 404, "M_NOT_FOUND")


class DiscoveryTests(ApiTestCase):
    well_known_overrides = {"client_base_url": "https://matrix.test.local", "server_delegation": "matrix.test.local:443",
                            "client_extra": {"m.identity_server": {"base_url": "https://id.example"}}}

    async def test_versions(self) -> None:
        """/versions answers without auth and matches the spec."""
        resp = await self.request("GET", "/_matrix/client/versions")
        self.assertEqual(resp.code, 200)
        validate_response("versions.yaml", "/versions", "get", 200, resp.json)
        self.assertIn("v1.3", resp.json["versions"])

    async def test_well_known(self) -> None:
        """Both .well-known documents come from config."""
        resp = await self.request("GET", "/.well-known/matrix/client")
        validate_response("wellknown.yaml", "/matrix/client", "get", 200, resp.json)
        self.assertEqual(resp.json["m.homeserver"], {"base_url": "https://matrix.test.local"})
        self.assertEqual(resp.json["m.identity_server"], {"base_url": "https://id.example"})
        resp = await self.request("GET", "/.well-known/matrix/server")
        self.assertEqual(resp.json, {"m.server": "matrix.test.local:443"})
        # Logins carry the client document too.
        await self.register_user("alice")
        login = await self.login()
        self.assertEqual(login["well_known"]["m.homeserver"], {"base_url": "https://matrix.test.local"})
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), "*")

    async def test_capabilities(self) -> None:
        """Capabilities need auth and list room versions, password change and disabled 3PID changes."""
        self.assertError(await self.request("GET", f"{C}/capabilities"), 401, "M_MISSING_TOKEN")
        token = (await self.register_user("alice"))["access_token"]
        resp = await self.request("GET", f"{C}/capabilities", token=token)
        validate_response("capabilities.yaml", "/capabilities", "get", 200, resp.json)
        caps = resp.json["capabilities"]
        self.assertEqual(caps["m.change_password"], {"enabled": True})
        self.assertEqual(caps["m.3pid_changes"], {"enabled": False})
        self.assertIn(caps["m.room_versions"]["default"], caps["m.room_versions"]["available"])
        self.assertEqual(caps["m.set_avatar_url"], {"enabled": True})


class WellKnownUnsetTests(ApiTestCase):
    async def test_unset_is_404(self) -> None:
        """Without config, the .well-known documents are 404."""
        resp = await self.request("GET", "/.well-known/matrix/client")
        self.assertEqual(resp.code, 404)
        validate_error(resp.json)
        self.assertEqual((await self.request("GET", "/.well-known/matrix/server")).code, 404)


class NulCharacterTests(ApiTestCase):
    async def test_nul_refused_everywhere(self) -> None:
        """NUL characters (which PostgreSQL cannot store) are 400s, never 500s, and write nothing."""
        token = (await self.register_user("alice"))["access_token"]
        cases = [
            ("PUT", f"{C}/user/{ALICE}/account_data/x.y", {"a": "b\u0000"}, "M_BAD_JSON"),
            ("PUT", f"{C}/user/{ALICE}/account_data/x%00y", {"a": 1}, "M_INVALID_PARAM"),
            ("PUT", f"{C}/profile/{ALICE}/displayname", {"displayname": "a\u0000"}, "M_BAD_JSON"),
            ("POST", f"{C}/user/{ALICE}/filter", {"room": {"rooms": ["\u0000"]}}, "M_BAD_JSON"),
            ("PUT", f"{C}/devices/X%00", {"display_name": "x"}, "M_INVALID_PARAM"),
            ("POST", f"{C}/login", {"type": "m.login.password", "user": "al\u0000ice", "password": "x"}, "M_BAD_JSON"),
            ("POST", f"{C}/register", {"username": "bob", "password": "correct horse battery", "device_id": "D\u0000",
                                       "auth": {"type": "m.login.dummy"}}, "M_BAD_JSON"),
            ("GET", f"{C}/register/available?username=a%00b", None, "M_INVALID_PARAM"),
        ]
        for method, path, body, errcode in cases:
            resp = await self.request(method, path, body, token=token)
            self.assertError(resp, 400, errcode)
        self.assertEqual(await self.count("account_data"), 0)
        self.assertEqual(await self.count("user_filters"), 0)
        self.assertEqual(await self.count("users"), 1)
