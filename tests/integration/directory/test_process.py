"""Part B mounted for one process from its config and roles."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor, task

from tests.utils.client import ApiTestCase


class DirectoryProcessTests(ApiTestCase):
    async def test_reader_writer_sync_process(self) -> None:
        """One process with every client role serves aliases, relations bundles and legacy sync."""
        from bus import MemoryBus
        from homeserver.config import load_config
        from homeserver.http.server import JsonResource, make_site
        from homeserver.rest.client import register_account_api
        from storage.streams import ensure_stream_shards
        from workers.app import ProcessContext
        from workers.directory import build_directory_process
        from workers.rooms import build_rooms_process

        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        config = load_config({
            "server_name": "test.local",
            "signing_key_path": os.path.join(tmp, "signing.key"),
            "replication": {"secret": "x" * 32},
            "instances": {"main": {"roles": ["client_writer", "client_reader", "sync"],
                                   "listen": "127.0.0.1:18008", "replication_listen": "127.0.0.1:19008"}},
        }, env={})
        await ensure_stream_shards(self.db, config.stream_shards)
        bus = MemoryBus(reactor, block_seconds=0.05)
        from homeserver.replication import CommandDispatcher

        dispatcher = CommandDispatcher(config, "main", client=None)  # owns every shard: never forwards
        ctx = ProcessContext(reactor, config, config.instance("main"), self.db, bus, dispatcher)
        process = build_directory_process(ctx, self.api, await build_rooms_process(ctx, self.api))
        self.addCleanup(bus.close)
        self.addCleanup(process.stop)
        resource = JsonResource(self.clock)
        register_account_api(resource, self.api)
        process.mount(resource, self.api.authenticator, config.instance("main").roles)
        self.site = make_site(resource, task.Clock())

        token = (await self.register_user("alice"))["access_token"]
        resp = await self.request("POST", "/_matrix/client/v3/createRoom", {"room_alias_name": "wired"}, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        room_id = resp.json["room_id"]
        alias = await self.request("GET", "/_matrix/client/v3/directory/room/%23wired:test.local")
        self.assertEqual(alias.json["room_id"], room_id)
        root = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/1",
                                  {"msgtype": "m.text", "body": "hi"}, token=token)
        ref = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/2", {
            "msgtype": "m.text", "body": "see", "m.relates_to": {"rel_type": "m.reference", "event_id": root.json["event_id"]}},
            token=token)
        sync = await self.request("GET", "/_matrix/client/v3/sync", token=token)
        timeline = sync.json["rooms"]["join"][room_id]["timeline"]["events"]
        bundled = [e for e in timeline if e["event_id"] == root.json["event_id"]][0]["unsigned"]["m.relations"]
        self.assertEqual(bundled, {"m.reference": {"chunk": [{"event_id": ref.json["event_id"]}]}})
        legacy = await self.request("GET", f"/_matrix/client/v3/rooms/{room_id}/initialSync", token=token)
        self.assertEqual(legacy.code, 200, legacy.body)
