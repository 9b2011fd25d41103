"""A test case with the accounts and rooms APIs on one Site, a real database and a MemoryBus."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor

from tests.utils.client import ApiTestCase

SHARD_COUNTS = {"events": 4, "receipts": 2, "typing": 2, "presence": 1, "to_device": 1, "account_data": 1,
                "device_lists": 1, "push_rules": 1}


class RoomsTestCase(ApiTestCase):
    """Accounts + rooms (+ sync when built) on one Site; helpers to make users and rooms."""

    shard_counts = SHARD_COUNTS
    #: Run the bus on the real Redis, writer and syncer on separate connections (as separate processes).
    use_redis = False
    #: Extra arguments for the writer's bus (e.g. a tiny ``stream_maxlen`` to force gaps).
    bus_kwargs: dict = {}
    #: Let /sync record ``set_presence`` (off by default: a sync's own presence change would
    #: end the next long-poll early, which tests of other streams do not expect).
    sync_presence = False

    async def setUp(self) -> None:  # type: ignore[override]
        """Build the fixtures."""
        await super().setUp()
        from bus import MemoryBus
        from homeserver.core.signing import generate_signing_key
        from storage.streams import ensure_stream_shards
        from homeserver.handlers.rooms.commands import LocalDispatcher
        from workers.rooms import (
            build_ephemeral_api,
            build_room_commands,
            build_room_api,
            build_sync_api,
            register_ephemeral_api,
            register_room_api,
            register_sync_api,
            track_writes,
        )

        await ensure_stream_shards(self.db, self.shard_counts)
        if self.use_redis:
            from bus import Bus
            from tests.utils.services import redis_test_url

            url = redis_test_url(self)
            self.bus = Bus.from_url(url, reactor, block_seconds=0.5, **self.bus_kwargs)
            self.sync_bus = Bus.from_url(url, reactor, block_seconds=0.5)
        else:
            self.bus = MemoryBus(reactor, block_seconds=0.05, **self.bus_kwargs)
            self.sync_bus = MemoryBus(reactor, self.bus.broker, block_seconds=0.05)
        self.signing_key = generate_signing_key("test")
        self.rooms_api = await build_room_api(
            self.clock, self.server_name, self.db, self.bus, self.signing_key, self.shard_counts,
            frozenset(range(self.shard_counts["events"])), profile_lookup=self.api.profile_store.get_profile,
        )
        owned = {s: frozenset(range(n)) for s, n in self.shard_counts.items()}
        self.ephemeral_api = await build_ephemeral_api(
            self.clock, self.db, self.bus, self.shard_counts, owned, self.rooms_api.store, self.api.account_data_store,
        )
        # Sync waits on real time (long-polls), events carry the fake clock's time.
        self.sync_api = await build_sync_api(
            reactor, self.db, self.sync_bus, self.shard_counts, account_data_store=self.api.account_data_store,
        )
        self.addCleanup(self.bus.close)
        self.addCleanup(self.sync_bus.close)
        self.addCleanup(self.sync_api.stop)
        track_writes(self.rooms_api, self.sync_api)
        self.commands = build_room_commands(LocalDispatcher(), self.rooms_api, self.ephemeral_api)
        register_room_api(self.resource, self.rooms_api, self.commands, self.api.authenticator)
        register_sync_api(self.resource, self.sync_api, self.api.authenticator,
                          self.ephemeral_api.presence_commands if self.sync_presence else None)
        register_ephemeral_api(self.resource, self.commands, self.api.authenticator)
        await self.extra_setup()

    async def extra_setup(self) -> None:
        """Hook for subclasses (sync, typing)."""

    async def make_user(self, name: str) -> str:
        """Register ``name``; returns its access token (user ID is ``@name:test.local``)."""
        body = await self.register_user(name)
        return body["access_token"]

    async def create_room(self, token: str, **body: Any) -> str:
        """POST /createRoom; returns the room ID."""
        resp = await self.request("POST", "/_matrix/client/v3/createRoom", body, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        return resp.json["room_id"]

    async def send(self, token: str, room_id: str, body: Any, txn: str, etype: str = "m.room.message") -> Any:
        """PUT /send with a transaction ID."""
        return await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/{etype}/{txn}", body, token=token)

    async def join(self, token: str, room: str) -> Any:
        """POST /join/{room}."""
        return await self.request("POST", f"/_matrix/client/v3/join/{room}", {}, token=token)

    def uid(self, name: str) -> str:
        """The user ID of a local name."""
        return f"@{name}:{self.server_name}"

    async def get(self, token: str, path: str) -> Any:
        """GET a client API path."""
        return await self.request("GET", "/_matrix/client/v3" + path, token=token)

    async def sync(self, token: str, since: Optional[str] = None, timeout: int = 0, **params: Any) -> Any:
        """GET /sync; returns the response body (asserting 200)."""
        from urllib.parse import urlencode

        query = dict(params)
        if since is not None:
            query["since"] = since
        query["timeout"] = str(timeout)
        resp = await self.request("GET", "/_matrix/client/v3/sync?" + urlencode(query), token=token)
        self.assertEqual(resp.code, 200, resp.body)
        return resp.json

    async def post(self, token: str, path: str, body: Optional[Any] = None) -> Any:
        """POST to a client API path."""
        return await self.request("POST", "/_matrix/client/v3" + path, body if body is not None else {}, token=token)
