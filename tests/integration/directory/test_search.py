"""Server-side search, the user directory and content reports."""

from __future__ import annotations

from tests.integration.directory.base import DirectoryTestCase


def search_body(term: str, **extra: object) -> dict:
    return {"search_categories": {"room_events": {"search_term": term, **extra}}}


class SearchTest(DirectoryTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.alice = await self.make_user("alice")
        self.bob = await self.make_user("bob")
        self.room = await self.create_room(self.alice, preset="public_chat", name="Garden club", topic="Roses")
        self.assertEqual((await self.join(self.bob, self.room)).code, 200)

    async def test_search_rank_recent_and_pagination(self) -> None:
        """Matches are found by stem, ordered by rank or recency, and paged with next_batch."""
        ids = []
        for i, body in enumerate(["planting roses today", "roses roses roses everywhere", "nothing relevant",
                                  "rose bushes need water"]):
            self.clock.advance(1)
            ids.append(await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": body}))
        recent = await self.post(self.bob, "/search", search_body("roses", order_by="recent", keys=["content.body"]))
        self.assertEqual(recent.code, 200, recent.body)
        room_events = recent.json["search_categories"]["room_events"]
        self.assertEqual([r["result"]["event_id"] for r in room_events["results"]], [ids[3], ids[1], ids[0]])
        self.assertEqual(room_events["count"], 3)
        self.assertEqual(room_events["highlights"], ["roses"])
        self.assertEqual(room_events["results"][0]["result"]["room_id"], self.room)
        ranked = await self.post(self.bob, "/search", search_body("roses", keys=["content.body"]))
        self.assertEqual(ranked.json["search_categories"]["room_events"]["results"][0]["result"]["event_id"], ids[1])
        # The topic is indexed under content.topic.
        topics = await self.post(self.bob, "/search", search_body("roses", keys=["content.topic"]))
        self.assertEqual([r["result"]["type"] for r in topics.json["search_categories"]["room_events"]["results"]],
                         ["m.room.topic"])
        seen = []
        token = None
        for _ in range(5):
            path = "/search" + (f"?next_batch={token}" if token else "")
            page = await self.post(self.bob, path, search_body("roses", order_by="recent", keys=["content.body"],
                                                               filter={"limit": 2}))
            events = page.json["search_categories"]["room_events"]
            seen.extend(r["result"]["event_id"] for r in events["results"])
            token = events.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, [ids[3], ids[1], ids[0]])

    async def test_visibility_membership_and_redaction(self) -> None:
        """Only joined rooms are searched, history before a join stays hidden, redacted events vanish."""
        private = await self.create_room(self.alice, preset="public_chat", initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
        await self.send_ok(self.alice, private, {"msgtype": "m.text", "body": "secret tulips"})
        nothing = await self.post(self.bob, "/search", search_body("tulips"))
        self.assertEqual(nothing.json["search_categories"]["room_events"]["results"], [])
        self.assertEqual((await self.join(self.bob, private)).code, 200)
        later = await self.send_ok(self.alice, private, {"msgtype": "m.text", "body": "public tulips"})
        found = await self.post(self.bob, "/search", search_body("tulips"))
        self.assertEqual([r["result"]["event_id"] for r in found.json["search_categories"]["room_events"]["results"]],
                         [later])
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{private}/redact/{later}/x", {}, token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        gone = await self.post(self.bob, "/search", search_body("tulips"))
        self.assertEqual(gone.json["search_categories"]["room_events"]["results"], [])

    async def test_context_and_filter(self) -> None:
        """event_context returns neighbours and profiles; the filter restricts rooms and senders."""
        before = await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": "hello"})
        hit = await self.send_ok(self.bob, self.room, {"msgtype": "m.text", "body": "daffodils bloom"})
        after = await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": "bye"})
        resp = await self.post(self.alice, "/search", search_body(
            "daffodils", event_context={"before_limit": 1, "after_limit": 1, "include_profile": True}))
        result = resp.json["search_categories"]["room_events"]["results"][0]
        self.assertEqual(result["result"]["event_id"], hit)
        self.assertEqual([e["event_id"] for e in result["context"]["events_before"]], [before])
        self.assertEqual([e["event_id"] for e in result["context"]["events_after"]], [after])
        self.assertIn(self.uid("bob"), result["context"]["profile_info"])
        excluded = await self.post(self.alice, "/search", search_body("daffodils", filter={"not_senders": [self.uid("bob")]}))
        self.assertEqual(excluded.json["search_categories"]["room_events"]["results"], [])
        other_room = await self.post(self.alice, "/search", search_body("daffodils", filter={"rooms": ["!other:test.local"]}))
        self.assertEqual(other_room.json["search_categories"]["room_events"]["results"], [])

    async def test_search_refusals(self) -> None:
        """Malformed search requests are refused."""
        cases = [
            ({}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
            (search_body(5), "M_BAD_JSON"),
            (search_body("x", keys=["content.nope"]), "M_BAD_JSON"),
            (search_body("x", order_by="size"), "M_BAD_JSON"),
            (search_body("x", filter={"limit": "x"}), "M_BAD_JSON"),
            (search_body("x", event_context={"before_limit": -1}), None),
        ]
        for body, errcode in cases:
            resp = await self.post(self.alice, "/search", body)
            if errcode is None:
                self.assertEqual(resp.code, 200)  # no results, context never built
            else:
                self.assertError(resp, 400, errcode)
        for token in ("zz", "s99999999999999999999"):
            self.assertError(await self.post(self.alice, f"/search?next_batch={token}", search_body("x")),
                             400, "M_INVALID_PARAM")
        resp = await self.request("POST", "/_matrix/client/v3/search", b"not json", token=self.alice)
        self.assertError(resp, 400, "M_NOT_JSON")
        self.assertEqual((await self.request("POST", "/_matrix/client/v3/search", search_body("x"))).code, 401)


class UserDirectoryTest(DirectoryTestCase):
    async def test_shared_and_public_rooms(self) -> None:
        """Users sharing a room or in a published room are found by ID or display name; others are not."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        carol = await self.make_user("carol")
        await self.make_user("dave")
        resp = await self.request("PUT", f"/_matrix/client/v3/profile/{self.uid('bob')}/displayname",
                                  {"displayname": "Bobby Tables"}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        shared = await self.create_room(alice, invite=[self.uid("bob")])
        self.assertEqual((await self.join(bob, shared)).code, 200)
        published = await self.create_room(carol, visibility="public")
        self.assertEqual(published.startswith("!"), True)
        found = await self.post(alice, "/user_directory/search", {"search_term": "tables"})
        self.assertEqual(found.json, {"results": [{"user_id": self.uid("bob"), "display_name": "Bobby Tables"}],
                                      "limited": False})
        self.assertEqual([r["user_id"] for r in (await self.post(alice, "/user_directory/search",
                                                                 {"search_term": "carol"})).json["results"]],
                         [self.uid("carol")])
        self.assertEqual((await self.post(alice, "/user_directory/search", {"search_term": "dave"})).json["results"], [])
        limited = await self.post(alice, "/user_directory/search", {"search_term": "test.local", "limit": 1})
        self.assertEqual(len(limited.json["results"]), 1)
        self.assertTrue(limited.json["limited"])
        # Leaving the shared room hides bob again.
        await self.post(bob, f"/rooms/{shared}/leave", {})
        self.assertEqual((await self.post(alice, "/user_directory/search", {"search_term": "tables"})).json["results"], [])
        # Wildcards are literal.
        self.assertEqual((await self.post(alice, "/user_directory/search", {"search_term": "%"})).json["results"], [])

    async def test_refusals(self) -> None:
        """Missing or mistyped fields are refused; authentication is required."""
        alice = await self.make_user("alice")
        self.assertError(await self.post(alice, "/user_directory/search", {}), 400, "M_MISSING_PARAM")
        self.assertError(await self.post(alice, "/user_directory/search", {"search_term": 1}), 400, "M_BAD_JSON")
        self.assertError(await self.post(alice, "/user_directory/search", {"search_term": "a", "limit": -1}), 400, "M_BAD_JSON")
        resp = await self.request("POST", "/_matrix/client/v3/user_directory/search", {"search_term": "a"})
        self.assertEqual(resp.code, 401)


class ReportTest(DirectoryTestCase):
    async def test_reports_stored(self) -> None:
        """Event, room and user reports are stored with their reporter and reason."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, room)).code, 200)
        event = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "spam"})
        resp = await self.post(bob, f"/rooms/{room}/report/{event}", {"reason": "spam", "score": -100})
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertEqual((await self.post(bob, f"/rooms/{room}/report", {"reason": ""})).code, 200)
        self.assertEqual((await self.post(bob, f"/users/{self.uid('alice')}/report", {"reason": "rude"})).code, 200)
        store = self.directory_api.directory_store
        reports = await store.get_room_reports(room)
        self.assertEqual([(r[1], r[2], r[3], r[4]) for r in reports],
                         [(event, self.uid("bob"), "spam", -100), (None, self.uid("bob"), "", None)])
        user_reports = await store.get_user_reports(self.uid("alice"))
        self.assertEqual([(r[1], r[2]) for r in user_reports], [(self.uid("bob"), "rude")])

    async def test_report_refusals(self) -> None:
        """Unknown events and rooms, non-members, unknown users and bad bodies are refused."""
        alice = await self.make_user("alice")
        eve = await self.make_user("eve")
        room = await self.create_room(alice)
        event = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "hi"})
        self.assertError(await self.post(eve, f"/rooms/{room}/report/{event}", {"reason": "x"}), 404, "M_NOT_FOUND")
        self.assertError(await self.post(alice, f"/rooms/{room}/report/$nope", {"reason": "x"}), 404, "M_NOT_FOUND")
        self.assertError(await self.post(alice, f"/rooms/{room}/report/{event}", {"reason": 3}), 400, "M_BAD_JSON")
        self.assertError(await self.post(alice, f"/rooms/{room}/report/{event}", {"score": 5}), 400, "M_BAD_JSON")
        self.assertError(await self.post(alice, "/rooms/!nope:test.local/report", {"reason": "x"}), 404, "M_NOT_FOUND")
        self.assertError(await self.post(alice, f"/rooms/{room}/report", {}), 400, "M_MISSING_PARAM")
        self.assertError(await self.post(alice, "/users/@ghost:test.local/report", {"reason": "x"}), 404, "M_NOT_FOUND")
        self.assertError(await self.post(alice, "/users/notauser/report", {"reason": "x"}), 400, "M_INVALID_PARAM")
        self.assertEqual((await self.post(alice, "/users/@someone:remote.org/report", {"reason": "x"})).code, 200)
        resp = await self.request("POST", f"/_matrix/client/v3/rooms/{room}/report", {"reason": "x"})
        self.assertEqual(resp.code, 401)
        self.assertEqual(await self.directory_api.directory_store.get_room_reports(room), [])
