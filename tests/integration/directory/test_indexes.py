"""The event indexes written at persist time equal what the migration's backfill computes."""

from __future__ import annotations

import os

from tests.integration.directory.base import DirectoryTestCase

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "storage", "schema",
                      "0007_relations_directory_search.sql")
TABLES = {
    "event_relations": "SELECT * FROM event_relations ORDER BY room_id, event_id",
    "event_search": "SELECT room_id, event_id, key, vector::text, depth, stream_position, origin_server_ts"
                    " FROM event_search ORDER BY room_id, event_id",
    "room_directory_stats": "SELECT * FROM room_directory_stats ORDER BY room_id",
}


def backfill_sql() -> str:
    with open(SCHEMA, encoding="utf-8") as f:
        text = f.read()
    start = text.index("-- BEGIN BACKFILL")
    return text[start:text.index("-- END BACKFILL")]


class IndexBackfillTest(DirectoryTestCase):
    async def snapshot(self) -> dict[str, list[tuple]]:
        def txn_fn(txn: object) -> dict[str, list[tuple]]:
            out = {}
            for name, query in TABLES.items():
                txn.execute(query)  # type: ignore[attr-defined]
                out[name] = [tuple(r) for r in txn.fetchall()]  # type: ignore[attr-defined]
            return out

        return await self.db.run_interaction("snapshot_indexes", txn_fn)

    async def test_live_indexes_equal_backfill(self) -> None:
        """Relations, search rows and directory stats from the live hook match the SQL backfill,
        including redactions of relations, messages and directory state."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room = await self.create_room(alice, visibility="public", name="Index room", topic="About indexes",
                                      room_alias_name="idx", creation_content={"type": "m.space"})
        self.assertEqual((await self.join(bob, room)).code, 200)
        other = await self.create_room(bob, initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
        root = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "root message"})
        await self.send_ok(bob, room, {"msgtype": "m.text", "body": "in thread",
                                       "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        await self.send_ok(bob, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "k"}},
                           etype="m.reaction")
        await self.send_ok(bob, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root}},
                           etype="m.reaction")
        gone = await self.send_ok(alice, room, {"msgtype": "m.text", "body": "to be redacted",
                                                "m.relates_to": {"rel_type": "m.reference", "event_id": root}})
        await self.send_ok(alice, room, {"msgtype": "m.text", "body": ""})
        await self.send_ok(alice, room, {"msgtype": "m.text", "body": 5})
        for event_id, txn in ((gone, "a"),):
            resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room}/redact/{event_id}/{txn}", {}, token=alice)
            self.assertEqual(resp.code, 200, resp.body)
        name = await self.request("PUT", f"/_matrix/client/v3/rooms/{other}/state/m.room.name", {"name": "Other"},
                                  token=bob)
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{other}/redact/{name.json['event_id']}/b", {},
                                  token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        await self.post(bob, f"/rooms/{room}/leave")

        live = await self.snapshot()
        self.assertEqual(len(live["event_relations"]), 3)
        self.assertEqual(len(live["room_directory_stats"]), 2)
        self.assertTrue(live["event_search"])

        def rebuild(txn: object) -> None:
            txn.execute("TRUNCATE event_relations, event_search, room_directory_stats")  # type: ignore[attr-defined]
            txn.execute(backfill_sql())  # type: ignore[attr-defined]

        await self.db.run_interaction("rebuild_indexes", rebuild)
        self.assertEqual(await self.snapshot(), live)
