"""Room aliases, canonical alias validation, directory visibility and /publicRooms."""

from __future__ import annotations

from urllib.parse import quote

from tests.integration.directory.base import DirectoryTestCase


def alias_path(alias: str) -> str:
    return "/directory/room/" + quote(alias, safe="")


class AliasTest(DirectoryTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.alice = await self.make_user("alice")
        self.bob = await self.make_user("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")

    async def put_alias(self, token: str, alias: str, room_id: str) -> object:
        return await self.request("PUT", "/_matrix/client/v3" + alias_path(alias), {"room_id": room_id}, token=token)

    async def test_create_resolve_list_delete(self) -> None:
        """An alias maps to its room, is listed, joins through it, and goes away when deleted."""
        alias = "#fun:test.local"
        resp = await self.put_alias(self.alice, alias, self.room)
        self.assertEqual(resp.code, 200, resp.body)
        got = await self.get(self.bob, alias_path(alias))
        self.assertEqual(got.json, {"room_id": self.room, "servers": ["test.local"]})
        unauthenticated = await self.request("GET", "/_matrix/client/v3" + alias_path(alias))
        self.assertEqual(unauthenticated.code, 200)
        self.assertEqual((await self.join(self.bob, quote(alias, safe=""))).json, {"room_id": self.room})
        listed = await self.get(self.bob, f"/rooms/{self.room}/aliases")
        self.assertEqual(listed.json, {"aliases": [alias]})
        resp = await self.request("DELETE", "/_matrix/client/v3" + alias_path(alias), token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertError(await self.get(self.bob, alias_path(alias)), 404, "M_NOT_FOUND")
        self.assertEqual((await self.get(self.bob, f"/rooms/{self.room}/aliases")).json, {"aliases": []})

    async def test_alias_refusals(self) -> None:
        """Bad aliases, taken aliases, remote aliases, unknown rooms and non-members are refused."""
        self.assertEqual((await self.put_alias(self.alice, "#taken:test.local", self.room)).code, 200)
        self.assertError(await self.put_alias(self.alice, "#taken:test.local", self.room), 409, "M_UNKNOWN")
        self.assertError(await self.put_alias(self.alice, "nohash", self.room), 400, "M_INVALID_PARAM")
        self.assertError(await self.put_alias(self.alice, "#x:elsewhere.org", self.room), 400, "M_INVALID_PARAM")
        self.assertError(await self.put_alias(self.alice, "#x:test.local", "!unknown:test.local"), 404, "M_NOT_FOUND")
        self.assertError(await self.put_alias(self.bob, "#bob:test.local", self.room), 403, "M_FORBIDDEN")
        resp = await self.request("PUT", "/_matrix/client/v3" + alias_path("#x:test.local"), b"{nope", token=self.alice)
        self.assertError(resp, 400, "M_NOT_JSON")
        resp = await self.request("PUT", "/_matrix/client/v3" + alias_path("#x:test.local"), {"room_id": 3}, token=self.alice)
        self.assertError(resp, 400, "M_BAD_JSON")
        self.assertError(await self.get(self.bob, alias_path("#x:elsewhere.org")), 404, "M_NOT_FOUND")
        self.assertError(await self.get(self.bob, alias_path("bad")), 400, "M_INVALID_PARAM")
        self.assertError(await self.request("DELETE", "/_matrix/client/v3" + alias_path("#none:test.local"),
                                            token=self.alice), 404, "M_NOT_FOUND")
        self.assertError(await self.get(self.bob, f"/rooms/{self.room}/aliases"), 403, "M_FORBIDDEN")

    async def test_concurrent_claims_of_one_alias(self) -> None:
        """Of several concurrent claims of one alias exactly one wins; the others get 409."""
        from twisted.internet import defer

        rooms = [self.room, await self.create_room(self.alice), await self.create_room(self.alice)]
        results = await defer.gatherResults([
            defer.ensureDeferred(self.put_alias(self.alice, "#race:test.local", room)) for room in rooms
        ])
        self.assertEqual(sorted(r.code for r in results), [200, 409, 409])
        winner = rooms[[r.code for r in results].index(200)]
        self.assertEqual((await self.get(self.bob, alias_path("#race:test.local"))).json["room_id"], winner)

    async def test_delete_permissions_and_canonical_alias_cleanup(self) -> None:
        """A member without power cannot delete another's alias; the room admin can, and the
        canonical alias event drops it."""
        alias = "#main:test.local"
        self.assertEqual((await self.put_alias(self.alice, alias, self.room)).code, 200)
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.canonical_alias",
                                  {"alias": alias}, token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.join(self.bob, self.room)).code, 200)
        bob_alias = "#bobs:test.local"
        self.assertEqual((await self.put_alias(self.bob, bob_alias, self.room)).code, 200)
        self.assertError(await self.request("DELETE", "/_matrix/client/v3" + alias_path(alias), token=self.bob),
                         403, "M_FORBIDDEN")
        # Its creator may delete it, and so may the room's admin.
        resp = await self.request("DELETE", "/_matrix/client/v3" + alias_path(bob_alias), token=self.bob)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await self.request("DELETE", "/_matrix/client/v3" + alias_path(alias), token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        state = await self.get(self.alice, f"/rooms/{self.room}/state/m.room.canonical_alias")
        self.assertNotIn("alias", state.json)

    async def test_canonical_alias_validation(self) -> None:
        """m.room.canonical_alias must name aliases of this room."""
        other = await self.create_room(self.alice)
        self.assertEqual((await self.put_alias(self.alice, "#here:test.local", self.room)).code, 200)
        self.assertEqual((await self.put_alias(self.alice, "#there:test.local", other)).code, 200)
        path = f"/_matrix/client/v3/rooms/{self.room}/state/m.room.canonical_alias"
        ok = await self.request("PUT", path, {"alias": "#here:test.local", "alt_aliases": ["#here:test.local"]},
                                token=self.alice)
        self.assertEqual(ok.code, 200, ok.body)
        for content in ({"alias": "#there:test.local"}, {"alt_aliases": ["#missing:test.local"]},
                        {"alias": "#remote:elsewhere.org"}):
            self.assertError(await self.request("PUT", path, content, token=self.alice), 400, "M_BAD_ALIAS")
        self.assertError(await self.request("PUT", path, {"alias": "bad"}, token=self.alice), 400, "M_INVALID_PARAM")
        self.assertError(await self.request("PUT", path, {"alt_aliases": "x"}, token=self.alice), 400, "M_INVALID_PARAM")
        # Non-members get the room handler's refusal, not an alias error.
        self.assertError(await self.request("PUT", path, {"alias": "#there:test.local"}, token=self.bob), 403, "M_FORBIDDEN")
        # Clearing the alias is allowed.
        self.assertEqual((await self.request("PUT", path, {}, token=self.alice)).code, 200)


class PublicRoomsTest(DirectoryTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.alice = await self.make_user("alice")
        self.bob = await self.make_user("bob")

    async def test_visibility_and_listing(self) -> None:
        """Rooms created public are listed with their state; visibility can be changed by the room admin."""
        big = await self.create_room(self.alice, visibility="public", name="Big room", topic="About cats",
                                     room_alias_name="big")
        self.assertEqual((await self.join(self.bob, big)).code, 200)
        small = await self.create_room(self.alice, name="Small")
        self.assertEqual((await self.get(self.bob, f"/directory/list/room/{small}")).json, {"visibility": "private"})
        self.assertError(await self.request("PUT", f"/_matrix/client/v3/directory/list/room/{small}",
                                            {"visibility": "public"}, token=self.bob), 403, "M_FORBIDDEN")
        resp = await self.request("PUT", f"/_matrix/client/v3/directory/list/room/{small}",
                                  {"visibility": "public"}, token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        listing = await self.request("GET", "/_matrix/client/v3/publicRooms")
        self.assertEqual(listing.code, 200, listing.body)
        self.assertEqual([r["room_id"] for r in listing.json["chunk"]], [big, small])
        first = listing.json["chunk"][0]
        self.assertEqual(first["num_joined_members"], 2)
        self.assertEqual(first["name"], "Big room")
        self.assertEqual(first["topic"], "About cats")
        self.assertEqual(first["canonical_alias"], "#big:test.local")
        self.assertEqual(first["join_rule"], "public")
        self.assertFalse(first["world_readable"])
        self.assertEqual(listing.json["total_room_count_estimate"], 2)

        page = await self.request("GET", "/_matrix/client/v3/publicRooms?limit=1")
        self.assertEqual([r["room_id"] for r in page.json["chunk"]], [big])
        page2 = await self.request("GET", f"/_matrix/client/v3/publicRooms?limit=1&since={page.json['next_batch']}")
        self.assertEqual([r["room_id"] for r in page2.json["chunk"]], [small])
        self.assertNotIn("next_batch", page2.json)
        self.assertIn("prev_batch", page2.json)

        found = await self.post(self.bob, "/publicRooms", {"filter": {"generic_search_term": "CATS"}})
        self.assertEqual([r["room_id"] for r in found.json["chunk"]], [big])
        typed = await self.post(self.bob, "/publicRooms", {"filter": {"room_types": ["m.space"]}})
        self.assertEqual(typed.json["chunk"], [])
        untyped = await self.post(self.bob, "/publicRooms", {"filter": {"room_types": [None]}})
        self.assertEqual(len(untyped.json["chunk"]), 2)
        bridged = await self.post(self.bob, "/publicRooms", {"third_party_instance_id": "irc"})
        self.assertEqual(bridged.json["chunk"], [])

        resp = await self.request("PUT", f"/_matrix/client/v3/directory/list/room/{big}",
                                  {"visibility": "private"}, token=self.alice)
        self.assertEqual(resp.code, 200)
        listing = await self.request("GET", "/_matrix/client/v3/publicRooms")
        self.assertEqual([r["room_id"] for r in listing.json["chunk"]], [small])

    async def test_refusals(self) -> None:
        """Unknown rooms, bad visibility, bad filters and tokens, remote servers, missing auth."""
        room = await self.create_room(self.alice)
        self.assertError(await self.get(self.bob, "/directory/list/room/!nope:test.local"), 404, "M_NOT_FOUND")
        self.assertError(await self.request("PUT", "/_matrix/client/v3/directory/list/room/!nope:test.local",
                                            {"visibility": "public"}, token=self.alice), 404, "M_NOT_FOUND")
        self.assertError(await self.request("PUT", f"/_matrix/client/v3/directory/list/room/{room}",
                                            {"visibility": "open"}, token=self.alice), 400, "M_BAD_JSON")
        for since in ("zz", "p99999999999999999999", "p%C2%B2"):
            self.assertError(await self.request("GET", f"/_matrix/client/v3/publicRooms?since={since}"),
                             400, "M_INVALID_PARAM")
        self.assertError(await self.request("GET", "/_matrix/client/v3/publicRooms?server=other.org"), 404, "M_NOT_FOUND")
        self.assertError(await self.post(self.bob, "/publicRooms", {"filter": "x"}), 400, "M_BAD_JSON")
        self.assertError(await self.post(self.bob, "/publicRooms", {"filter": {"room_types": [1]}}), 400, "M_BAD_JSON")
        self.assertError(await self.post(self.bob, "/publicRooms", {"limit": "ten"}), 400, "M_BAD_JSON")
        self.assertError(await self.post(self.bob, "/publicRooms", {"third_party_instance_id": 1}), 400, "M_BAD_JSON")
        resp = await self.request("POST", "/_matrix/client/v3/publicRooms", {})
        self.assertEqual(resp.code, 401)
