"""Sync across a sync-worker restart (tokens stay valid, PostgreSQL fallback) and long state chains."""

from __future__ import annotations

from twisted.internet import reactor, task

from tests.integration.rooms.base import RoomsTestCase


class RestartTests(RoomsTestCase):
    """Sync tokens across a sync worker restart."""
    async def test_token_survives_sync_worker_restart(self) -> None:
        """A token from before a restart yields exactly the events sent meanwhile, read from PostgreSQL."""
        from workers.rooms import build_sync_api
        from homeserver.rest.client.sync import register_sync
        from homeserver.http.server import JsonResource, make_site

        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "before"}, "b")
        token = (await self.sync(alice))["next_batch"]
        await self.sync_api.stop()
        for i in range(3):
            await self.send(alice, room_id, {"msgtype": "m.text", "body": f"during {i}"}, f"d{i}")
        # A new sync worker: its tails start from PostgreSQL's positions, after the token.
        fresh = await build_sync_api(reactor, self.db, self.sync_bus, self.shard_counts,
                                     account_data_store=self.api.account_data_store)
        self.addCleanup(fresh.stop)
        from homeserver.handlers.rooms.tokens import StreamToken
        from homeserver.sharding import shard_for

        shard = shard_for(room_id, self.shard_counts["events"])
        old = StreamToken.decode(token, self.shard_counts).events[shard]
        # The range since the token is older than the new tail: PostgreSQL answers it.
        self.assertIsNone(fresh.events_tail.rows(shard, old, fresh.events_tail.current()[shard]))
        resource = JsonResource(self.clock)
        register_sync(resource, fresh.handler, self.api.authenticator)
        self.site = make_site(resource, task.Clock())
        body = await self.sync(alice, since=token)
        events = body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["content"]["body"] for e in events], ["during 0", "during 1", "during 2"])
        again = await self.sync(alice, since=body["next_batch"])
        self.assertEqual(again["rooms"]["join"], {})


class StateChainTests(RoomsTestCase):
    """State groups as delta chains."""
    async def test_state_at_every_point_across_snapshots(self) -> None:
        """State read back at past positions is right across delta chains and full snapshots."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        store = self.rooms_api.store
        expected_at: list[tuple[int, dict]] = []
        for i in range(60):
            key = f"k{i % 7}"
            resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/org.test/{key}", {"i": i}, token=alice)
            self.assertEqual(resp.code, 200, resp.body)
            if i % 13 == 0 or i == 59:
                rows = await store.get_events(room_id, [resp.json["event_id"]])
                position = rows[resp.json["event_id"]].stream_position
                state = await store.get_current_state_ids(room_id)
                expected_at.append((position, state))
        for position, state in expected_at:
            group, ids = await store.get_state_at_position(room_id, position)
            self.assertEqual(ids, state)
        state = await self.get(alice, f"/rooms/{room_id}/state")
        custom = {e["state_key"]: e["content"]["i"] for e in state.json if e["type"] == "org.test"}
        self.assertEqual(custom, {f"k{k}": max(i for i in range(60) if i % 7 == k) for k in range(7)})


class TrimmedBusTests(RoomsTestCase):
    """The writer's bus keeps only the last 2 entries of each shard."""

    bus_kwargs = {"stream_maxlen": {"events": 2}}

    async def test_tail_catches_up_trimmed_entries_from_postgres(self) -> None:
        """A tail behind a trimmed stream reads the missed events from PostgreSQL: all, in order, once."""
        from bus import ShardId
        from homeserver.handlers.sync.tail import StreamTail
        from homeserver.sharding import shard_for
        from storage.stores.events import StreamRow
        from tests.utils.wait import wait_until

        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        shard = shard_for(room_id, self.shard_counts["events"])
        before = self.sync_api.events_tail.current()
        await self.sync_api.stop()
        for i in range(12):
            self.assertEqual((await self.send(alice, room_id, {"msgtype": "m.text", "body": str(i)}, f"g{i}")).code, 200)
        committed = await self.rooms_api.store.get_stream_rows(shard, before[shard], None, 1000)
        self.assertEqual(len(committed), 12)

        fetched = []

        def fetch(shard_, after, upto, limit):
            """Serve the tail's catch-up reads."""
            fetched.append((shard_, after, upto))
            return self.rooms_api.store.get_stream_rows(shard_, after, upto, limit)

        tail = StreamTail(reactor, "events", self.shard_counts["events"], fetch, StreamRow.from_payload)
        tail.start(list(before))
        sub = self.sync_bus.subscribe({ShardId("events", s): p for s, p in enumerate(before)},
                                      tail.on_entry, tail.on_gap, name="test")
        self.addCleanup(sub.stop)
        last = committed[-1].stream_position
        await wait_until(reactor, lambda: tail.current()[shard] >= last, timeout=10, what="tail catch-up")
        rows = tail.rows(shard, before[shard], last)
        self.assertEqual([r.event_id for r in rows], [r.event_id for r in committed])
        self.assertIn(shard, [f[0] for f in fetched])  # the trimmed part came from PostgreSQL


class SyncTimelineReadTests(RoomsTestCase):
    """``EventStore.get_sync_timelines``: the incremental sync's one-round-trip read."""

    async def one(self, store, room_id, after, upto, limit, user_id):
        return (await store.get_sync_timelines([(room_id, after, upto)], limit, user_id))[room_id]

    async def test_matches_the_separate_reads(self) -> None:
        """Timeline, more flag, start state and senders' memberships equal what the separate reads return."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        store = self.rooms_api.store
        positions = []
        for i in range(6):
            resp = await self.send(alice if i % 2 else bob, room_id, {"msgtype": "m.text", "body": str(i)}, f"t{i}")
            self.assertEqual(resp.code, 200, resp.body)
            positions.append((await store.get_events(room_id, [resp.json["event_id"]]))[resp.json["event_id"]].stream_position)
        top = positions[-1]
        for after, limit in ((positions[0], 10), (positions[1], 2), (0, 3), (top, 5)):
            rows, more, start, members = await self.one(store, room_id, after, top, limit, self.uid("carol"))
            want_rows, want_more = await store.get_room_events_in_range(room_id, after, top, limit)
            self.assertEqual(rows, want_rows)
            self.assertEqual(more, want_more)
            if not rows:
                self.assertIsNone(start)
                self.assertEqual(members, {})
                continue
            want_start = await store.get_state_at_position(room_id, rows[0].stream_position - 1)
            self.assertEqual(start, want_start)
            senders = {r.sender for r in rows}
            want_ids = [want_start[1][("m.room.member", u)] for u in senders if ("m.room.member", u) in want_start[1]]
            self.assertEqual(members, await store.get_events(room_id, want_ids))
        # The syncing user's own membership comes too, even when they sent nothing in the range.
        rows, _, start, members = await self.one(store, room_id, positions[-2], top, 10, self.uid("bob"))
        self.assertEqual({r.sender for r in rows}, {self.uid("alice")})
        self.assertIn(start[1][("m.room.member", self.uid("bob"))], members)

    async def test_batched_read_equals_one_read_per_room(self) -> None:
        """Several rooms in one call: each answered as if it were read alone."""
        alice = await self.make_user("alice")
        store = self.rooms_api.store
        rooms = [await self.create_room(alice, preset="public_chat") for _ in range(3)]
        tops = {}
        for i, room_id in enumerate(rooms):
            for j in range(i + 2):
                resp = await self.send(alice, room_id, {"msgtype": "m.text", "body": str(j)}, f"b{i}-{j}")
                self.assertEqual(resp.code, 200, resp.body)
                tops[room_id] = (await store.get_events(room_id, [resp.json["event_id"]]))[resp.json["event_id"]].stream_position
        ranges = [(room_id, tops[room_id] - 2, tops[room_id]) for room_id in rooms]
        batched = await store.get_sync_timelines(ranges, 1, self.uid("alice"))
        self.assertEqual(set(batched), set(rooms))
        for room_id, after, upto in ranges:
            self.assertEqual(batched[room_id], await self.one(store, room_id, after, upto, 1, self.uid("alice")))


class StateGroupCacheTests(RoomsTestCase):
    """Resolved state groups are kept in memory: same answers, fewer reads, copies handed out."""

    async def test_cached_state_equals_a_fresh_read(self) -> None:
        """A second read of a group comes from the cache and equals what a store without it reads."""
        from storage.stores.events import EventStore

        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        resp = await self.send(alice, room_id, {"msgtype": "m.text", "body": "hi"}, "c1")
        store = self.rooms_api.store
        position = (await store.get_events(room_id, [resp.json["event_id"]]))[resp.json["event_id"]].stream_position
        first = await store.get_state_at_position(room_id, position)
        hits = store.state_cache.hits
        second = await store.get_state_at_position(room_id, position)
        self.assertEqual(store.state_cache.hits, hits + 1)
        self.assertEqual(first, second)
        uncached = EventStore(store._db, state_cache_entries=0)
        self.assertEqual(await uncached.get_state_at_position(room_id, position), first)
        self.assertIn(("m.room.member", self.uid("bob")), first[1])
        # Callers get copies: changing one does not change what the next caller reads.
        second[1].clear()
        self.assertEqual(await store.get_state_at_position(room_id, position), first)
