"""The rooms surface built for one process from its config and roles."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor, task

from tests.utils.client import ApiTestCase


class ProcessWiringTests(ApiTestCase):
    """build_rooms_process."""
    async def test_writer_and_sync_process(self) -> None:
        """A process with client_writer + sync roles creates rooms, syncs, and shares one signing key file."""
        from bus import MemoryBus
        from homeserver.config import load_config
        from homeserver.http.server import JsonResource, make_site
        from homeserver.rest.client import register_account_api
        from storage.streams import ensure_stream_shards
        from workers.app import ProcessContext
        from workers.rooms import build_rooms_process, load_or_create_signing_key

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
        process = await build_rooms_process(ctx, self.api)
        self.addCleanup(bus.close)
        self.addCleanup(process.stop)
        self.assertEqual(process.rooms.creator.owned_shards(), frozenset(range(16)))
        self.assertIsNotNone(process.sync)
        resource = JsonResource(self.clock)
        register_account_api(resource, self.api)
        process.mount(resource, self.api.authenticator, config.instance("main").roles)
        self.site = make_site(resource, task.Clock())

        token = (await self.register_user("alice"))["access_token"]
        resp = await self.request("POST", "/_matrix/client/v3/createRoom", {"name": "wired"}, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        room_id = resp.json["room_id"]
        sync = await self.request("GET", "/_matrix/client/v3/sync", token=token)
        self.assertEqual(sync.code, 200, sync.body)
        self.assertIn(room_id, sync.json["rooms"]["join"])
        # The key file was created once and is reused.
        key = load_or_create_signing_key(config.signing_key_path)
        again = load_or_create_signing_key(config.signing_key_path)
        self.assertEqual(bytes(key), bytes(again))
        self.assertEqual(os.stat(config.signing_key_path).st_mode & 0o777, 0o600)
