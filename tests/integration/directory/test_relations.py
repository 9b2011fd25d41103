"""Relations, threads and bundled aggregations over the real HTTP surface."""

from __future__ import annotations

from tests.integration.directory.base import DirectoryTestCase


def edit(parent: str, body: str) -> dict:
    return {"msgtype": "m.text", "body": f"* {body}", "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": parent}}


def reply_in_thread(root: str, body: str) -> dict:
    return {"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}}


class RelationsTest(DirectoryTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.alice = await self.make_user("alice")
        self.bob = await self.make_user("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")
        self.assertEqual((await self.join(self.bob, self.room)).code, 200)
        self.root = await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": "root"})

    async def test_relations_pagination_and_filters(self) -> None:
        """/relations pages children newest first, filters by type, and follows next_batch to the end."""
        children = []
        for i in range(3):
            children.append(await self.send_ok(self.bob, self.room, reply_in_thread(self.root, f"r{i}")))
        reaction = await self.send_ok(self.bob, self.room, {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": self.root, "key": "👍"}}, etype="m.reaction")
        resp = await self.v1("GET", self.alice, f"/rooms/{self.room}/relations/{self.root}?limit=2")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual([e["event_id"] for e in resp.json["chunk"]], [reaction, children[2]])
        resp2 = await self.v1("GET", self.alice,
                              f"/rooms/{self.room}/relations/{self.root}?limit=2&from={resp.json['next_batch']}")
        self.assertEqual([e["event_id"] for e in resp2.json["chunk"]], [children[1], children[0]])
        self.assertNotIn("next_batch", resp2.json)
        threads = await self.v1("GET", self.alice, f"/rooms/{self.room}/relations/{self.root}/m.thread?dir=f")
        self.assertEqual([e["event_id"] for e in threads.json["chunk"]], children)
        typed = await self.v1("GET", self.alice, f"/rooms/{self.room}/relations/{self.root}/m.annotation/m.reaction")
        self.assertEqual([e["event_id"] for e in typed.json["chunk"]], [reaction])
        none = await self.v1("GET", self.alice, f"/rooms/{self.room}/relations/{self.root}/m.annotation/m.room.message")
        self.assertEqual(none.json["chunk"], [])

    async def test_recurse(self) -> None:
        """recurse=true includes relations of relations and reports the depth."""
        child = await self.send_ok(self.bob, self.room, reply_in_thread(self.root, "child"))
        grandchild = await self.send_ok(self.bob, self.room, edit(child, "child!"))
        flat = await self.v1("GET", self.alice, f"/rooms/{self.room}/relations/{self.root}")
        self.assertEqual([e["event_id"] for e in flat.json["chunk"]], [child])
        deep = await self.v1("GET", self.alice, f"/rooms/{self.room}/relations/{self.root}?recurse=true")
        self.assertEqual([e["event_id"] for e in deep.json["chunk"]], [grandchild, child])
        self.assertEqual(deep.json["recursion_depth"], 3)

    async def test_refusals(self) -> None:
        """Unknown events, outsiders, bad dir / recurse / tokens are refused."""
        eve = await self.make_user("eve")
        private = await self.create_room(self.alice)
        secret = await self.send_ok(self.alice, private, {"msgtype": "m.text", "body": "secret"})
        cases = [
            (self.alice, f"/rooms/{self.room}/relations/$unknown", 404, "M_NOT_FOUND"),
            (eve, f"/rooms/{private}/relations/{secret}", 404, "M_NOT_FOUND"),
            (self.alice, f"/rooms/!nope:test.local/relations/{secret}", 404, "M_NOT_FOUND"),
            (self.alice, f"/rooms/{self.room}/relations/{self.root}?dir=x", 400, "M_INVALID_PARAM"),
            (self.alice, f"/rooms/{self.room}/relations/{self.root}?recurse=yes", 400, "M_INVALID_PARAM"),
            (self.alice, f"/rooms/{self.room}/relations/{self.root}?from=zzz", 400, "M_INVALID_PARAM"),
            (self.alice, f"/rooms/{self.room}/relations/{self.root}?limit=-1", 400, "M_INVALID_PARAM"),
            (eve, f"/rooms/{private}/threads", 403, "M_FORBIDDEN"),
            (self.alice, f"/rooms/{self.room}/threads?include=some", 400, "M_INVALID_PARAM"),
            (self.alice, f"/rooms/{self.room}/threads?from=bad", 400, "M_INVALID_PARAM"),
            (self.alice, f"/rooms/{self.room}/threads?from=th99999999999999999999", 400, "M_INVALID_PARAM"),
        ]
        for token, path, code, errcode in cases:
            self.assertError(await self.v1("GET", token, path), code, errcode)
        resp = await self.request("GET", f"/_matrix/client/v1/rooms/{self.room}/relations/{self.root}")
        self.assertEqual(resp.code, 401)

    async def test_edit_bundle_rules(self) -> None:
        """The latest valid edit is bundled; edits by another sender or of another type are ignored."""
        await self.send_ok(self.alice, self.room, edit(self.root, "first"))
        self.clock.advance(1)
        latest = await self.send_ok(self.alice, self.room, edit(self.root, "second"))
        self.clock.advance(1)
        await self.send_ok(self.bob, self.room, edit(self.root, "hijack"))
        self.clock.advance(1)
        await self.send_ok(self.alice, self.room, edit(self.root, "wrong type"), etype="m.sticker")
        event = await self.get(self.bob, f"/rooms/{self.room}/event/{self.root}")
        self.assertEqual(event.code, 200, event.body)
        replace = event.json["unsigned"]["m.relations"]["m.replace"]
        self.assertEqual(replace["event_id"], latest)
        self.assertEqual(replace["content"]["m.new_content"]["body"], "second")
        messages = await self.get(self.bob, f"/rooms/{self.room}/messages?dir=b&limit=20")
        root = [e for e in messages.json["chunk"] if e["event_id"] == self.root][0]
        self.assertEqual(root["unsigned"]["m.relations"]["m.replace"]["event_id"], latest)
        context = await self.get(self.bob, f"/rooms/{self.room}/context/{self.root}")
        self.assertEqual(context.json["event"]["unsigned"]["m.relations"]["m.replace"]["event_id"], latest)

    async def test_redacted_edit_not_bundled(self) -> None:
        """Redacting the latest edit falls back to the previous one; redacting all removes the bundle."""
        first = await self.send_ok(self.alice, self.room, edit(self.root, "first"))
        self.clock.advance(1)
        second = await self.send_ok(self.alice, self.room, edit(self.root, "second"))
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{self.room}/redact/{second}/r1", {}, token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        event = await self.get(self.bob, f"/rooms/{self.room}/event/{self.root}")
        self.assertEqual(event.json["unsigned"]["m.relations"]["m.replace"]["event_id"], first)
        await self.request("PUT", f"/_matrix/client/v3/rooms/{self.room}/redact/{first}/r2", {}, token=self.alice)
        event = await self.get(self.bob, f"/rooms/{self.room}/event/{self.root}")
        self.assertNotIn("m.relations", event.json["unsigned"])

    async def test_thread_summary_and_threads_list(self) -> None:
        """m.thread summaries (count, latest, participation) and /threads ordering and filtering."""
        other_root = await self.send_ok(self.bob, self.room, {"msgtype": "m.text", "body": "bob's root"})
        await self.send_ok(self.bob, self.room, reply_in_thread(self.root, "one"))
        latest = await self.send_ok(self.bob, self.room, reply_in_thread(self.root, "two"))
        await self.send_ok(self.bob, self.room, reply_in_thread(other_root, "bob alone"))
        event = await self.get(self.alice, f"/rooms/{self.room}/event/{self.root}")
        thread = event.json["unsigned"]["m.relations"]["m.thread"]
        self.assertEqual(thread["count"], 2)
        self.assertEqual(thread["latest_event"]["event_id"], latest)
        self.assertTrue(thread["current_user_participated"])  # alice sent the root
        other = await self.get(self.alice, f"/rooms/{self.room}/event/{other_root}")
        self.assertFalse(other.json["unsigned"]["m.relations"]["m.thread"]["current_user_participated"])

        listing = await self.v1("GET", self.alice, f"/rooms/{self.room}/threads")
        self.assertEqual([e["event_id"] for e in listing.json["chunk"]], [other_root, self.root])
        mine = await self.v1("GET", self.alice, f"/rooms/{self.room}/threads?include=participated")
        self.assertEqual([e["event_id"] for e in mine.json["chunk"]], [self.root])
        page = await self.v1("GET", self.alice, f"/rooms/{self.room}/threads?limit=1")
        self.assertEqual([e["event_id"] for e in page.json["chunk"]], [other_root])
        page2 = await self.v1("GET", self.alice, f"/rooms/{self.room}/threads?limit=1&from={page.json['next_batch']}")
        self.assertEqual([e["event_id"] for e in page2.json["chunk"]], [self.root])
        self.assertNotIn("next_batch", page2.json)

    async def test_references_and_sync_bundles(self) -> None:
        """m.reference chunks are bundled, also on /sync timelines; annotations are not bundled."""
        ref = await self.send_ok(self.bob, self.room, {"body": "see", "m.relates_to": {
            "rel_type": "m.reference", "event_id": self.root}})
        await self.send_ok(self.bob, self.room, {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": self.root, "key": "x"}}, etype="m.reaction")
        body = await self.sync(self.alice)
        timeline = body["rooms"]["join"][self.room]["timeline"]["events"]
        root = [e for e in timeline if e["event_id"] == self.root][0]
        self.assertEqual(root["unsigned"]["m.relations"], {"m.reference": {"chunk": [{"event_id": ref}]}})


class IgnoredUsersTest(DirectoryTestCase):
    async def test_ignored_senders_hidden(self) -> None:
        """Events and invites from ignored users disappear from /sync, /messages and /context."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        mallory = await self.make_user("mallory")
        room = await self.create_room(alice, preset="public_chat")
        for token in (bob, mallory):
            self.assertEqual((await self.join(token, room)).code, 200)
        first = await self.send_ok(bob, room, {"msgtype": "m.text", "body": "hi"})
        spam = await self.send_ok(mallory, room, {"msgtype": "m.text", "body": "spam"})
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room}/state/org.example.state/x", {"a": 1},
                                  token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        state_event = resp.json["event_id"]
        last = await self.send_ok(bob, room, {"msgtype": "m.text", "body": "bye"})
        mallory_room = await self.create_room(mallory, invite=[self.uid("alice")])
        resp = await self.request("PUT", f"/_matrix/client/v3/user/{self.uid('alice')}/account_data/m.ignored_user_list",
                                  {"ignored_users": {self.uid("mallory"): {}}}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        body = await self.sync(alice)
        timeline = [e["event_id"] for e in body["rooms"]["join"][room]["timeline"]["events"]]
        self.assertIn(first, timeline)
        self.assertIn(last, timeline)
        self.assertNotIn(spam, timeline)
        # Mallory's membership (a state event) is still sent.
        self.assertIn(self.uid("mallory"), [e.get("state_key") for e in body["rooms"]["join"][room]["state"]["events"]
                                            + body["rooms"]["join"][room]["timeline"]["events"]])
        self.assertNotIn(mallory_room, body["rooms"]["invite"])
        messages = await self.get(alice, f"/rooms/{room}/messages?dir=b&limit=50")
        ids = [e["event_id"] for e in messages.json["chunk"]]
        self.assertIn(first, ids)
        self.assertNotIn(spam, ids)
        context = await self.get(alice, f"/rooms/{room}/context/{first}?limit=6")
        self.assertEqual([e["event_id"] for e in context.json["events_after"]], [state_event, last])
        thread_root = await self.send_ok(bob, room, {"msgtype": "m.text", "body": "thread root"})
        own_reply = await self.send_ok(bob, room, reply_in_thread(thread_root, "bob replies"))
        await self.send_ok(mallory, room, reply_in_thread(thread_root, "mallory replies"))
        summary = (await self.get(alice, f"/rooms/{room}/event/{thread_root}")).json["unsigned"]["m.relations"]["m.thread"]
        self.assertEqual((summary["count"], summary["latest_event"]["event_id"]), (1, own_reply))
        bob_summary = (await self.get(bob, f"/rooms/{room}/event/{thread_root}")).json["unsigned"]["m.relations"]["m.thread"]
        self.assertEqual(bob_summary["count"], 2)
        reaction = await self.send_ok(mallory, room, {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": first, "key": "x"}}, etype="m.reaction")
        relations = await self.v1("GET", alice, f"/rooms/{room}/relations/{first}")
        self.assertEqual(relations.json["chunk"], [])
        bob_relations = await self.v1("GET", bob, f"/rooms/{room}/relations/{first}")
        self.assertEqual([e["event_id"] for e in bob_relations.json["chunk"]], [reaction])
        # Bob ignores nobody and still sees everything.
        bob_messages = await self.get(bob, f"/rooms/{room}/messages?dir=b&limit=50")
        self.assertIn(spam, [e["event_id"] for e in bob_messages.json["chunk"]])


class AnnotationTest(DirectoryTestCase):
    async def test_duplicate_annotations_refused(self) -> None:
        """A second identical reaction is refused, a retried transaction is not, a redacted one can be redone."""
        alice = await self.make_user("alice")
        room = await self.create_room(alice)
        target = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "hi"})
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}}
        first = await self.send(alice, room, reaction, "r1", "m.reaction")
        self.assertEqual(first.code, 200, first.body)
        retry = await self.send(alice, room, reaction, "r1", "m.reaction")
        self.assertEqual(retry.json["event_id"], first.json["event_id"])
        self.assertError(await self.send(alice, room, reaction, "r2", "m.reaction"), 400, "M_DUPLICATE_ANNOTATION")
        other_key = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👎"}}
        self.assertEqual((await self.send(alice, room, other_key, "r3", "m.reaction")).code, 200)
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room}/redact/{first.json['event_id']}/x", {},
                                  token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.send(alice, room, reaction, "r4", "m.reaction")).code, 200)

    async def test_thread_off_a_relation_refused(self) -> None:
        """A thread cannot start from an event that itself relates to another (400 M_UNKNOWN)."""
        alice = await self.make_user("alice")
        room = await self.create_room(alice)
        root = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "root"})
        reply = await self.send_ok(alice, room, reply_in_thread(root, "reply"))
        self.assertError(await self.send(alice, room, reply_in_thread(reply, "nested"), "n1"), 400, "M_UNKNOWN")
        self.assertEqual((await self.send(alice, room, reply_in_thread(root, "fine"), "n2")).code, 200)
        # Outsiders learn nothing about the room's events: they are refused for not being in it.
        eve = await self.make_user("eve")
        self.assertError(await self.send(eve, room, reply_in_thread(reply, "probe"), "n3"), 403, "M_FORBIDDEN")


class RelationScopeTest(DirectoryTestCase):
    async def test_cross_room_relations_ignored_and_sync_tokens(self) -> None:
        """A relation sent in another room is not a child; sync tokens bound /relations pages."""
        alice = await self.make_user("alice")
        room = await self.create_room(alice)
        elsewhere = await self.create_room(alice)
        root = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "root"})
        await self.send_ok(alice, elsewhere, reply_in_thread(root, "wrong room"))
        resp = await self.v1("GET", alice, f"/rooms/{room}/relations/{root}")
        self.assertEqual(resp.json["chunk"], [])
        event = await self.get(alice, f"/rooms/{room}/event/{root}")
        self.assertNotIn("m.relations", event.json["unsigned"])

        before = await self.send_ok(alice, room, reply_in_thread(root, "before"))
        token = (await self.sync(alice))["next_batch"]
        after = await self.send_ok(alice, room, reply_in_thread(root, "after"))
        older = await self.v1("GET", alice, f"/rooms/{room}/relations/{root}?from={token}")
        self.assertEqual([e["event_id"] for e in older.json["chunk"]], [before])
        newer = await self.v1("GET", alice, f"/rooms/{room}/relations/{root}?from={token}&dir=f")
        self.assertEqual([e["event_id"] for e in newer.json["chunk"]], [after])
        bounded = await self.v1("GET", alice, f"/rooms/{room}/relations/{root}?to={token}")
        self.assertEqual([e["event_id"] for e in bounded.json["chunk"]], [after])


class MultiRoomBundleTest(DirectoryTestCase):
    async def test_one_sync_bundles_each_room_with_its_own_relations(self) -> None:
        """Bundles of several rooms built in one pass stay with their own room's events."""
        alice = await self.make_user("alice")
        rooms = [await self.create_room(alice) for _ in range(3)]
        roots, edits = {}, {}
        for i, room in enumerate(rooms[:2]):
            roots[room] = await self.send_ok(alice, room, {"msgtype": "m.text", "body": f"root {i}"})
            edits[room] = await self.send_ok(alice, room, edit(roots[room], f"edited {i}"))
        await self.send_ok(alice, rooms[1], reply_in_thread(roots[rooms[1]], "reply"))
        await self.send_ok(alice, rooms[2], {"msgtype": "m.text", "body": "plain"})
        body = await self.sync(alice)
        for room in rooms[:2]:
            timeline = body["rooms"]["join"][room]["timeline"]["events"]
            root = [e for e in timeline if e["event_id"] == roots[room]][0]
            self.assertEqual(root["unsigned"]["m.relations"]["m.replace"]["event_id"], edits[room])
        threaded = [e for e in body["rooms"]["join"][rooms[1]]["timeline"]["events"] if e["event_id"] == roots[rooms[1]]][0]
        self.assertEqual(threaded["unsigned"]["m.relations"]["m.thread"]["count"], 1)
        first = [e for e in body["rooms"]["join"][rooms[0]]["timeline"]["events"] if e["event_id"] == roots[rooms[0]]][0]
        self.assertNotIn("m.thread", first["unsigned"]["m.relations"])
        for event in body["rooms"]["join"][rooms[2]]["timeline"]["events"]:
            self.assertNotIn("m.relations", event["unsigned"])
