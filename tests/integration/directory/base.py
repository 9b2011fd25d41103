"""Rooms test case with the part-B surfaces mounted and bundled aggregations on served events."""

from __future__ import annotations

from typing import Any

from twisted.internet import task

from tests.integration.rooms.base import RoomsTestCase


class DirectoryTestCase(RoomsTestCase):
    """The rooms test case, re-mounted the way the lead mounts part B (see workers/directory.py)."""

    async def extra_setup(self) -> None:
        """Rebuild the Site: accounts, rooms and sync with aggregations, ephemeral, part-B endpoints."""
        from homeserver.http.server import JsonResource, make_site
        from homeserver.rest.client import register_account_api
        from workers.directory import (
            build_directory_api,
            extend_room_api,
            register_directory_api,
            register_legacy_sync_api,
        )
        from workers.rooms import register_ephemeral_api, register_room_api, register_sync_api

        self.directory_api = build_directory_api(
            self.server_name, self.db, self.rooms_api, self.api.account_data_store)
        rooms_api, sync_api = extend_room_api(self.directory_api, self.rooms_api, self.sync_api)
        self.resource = JsonResource(self.clock)
        register_account_api(self.resource, self.api)
        # Read-your-writes tracking is on the shared creator (track_writes in the parent's setUp).
        self.commands.rooms = rooms_api.rooms
        register_room_api(self.resource, rooms_api, self.commands, self.api.authenticator)
        register_sync_api(self.resource, sync_api, self.api.authenticator)
        register_ephemeral_api(self.resource, self.commands, self.api.authenticator)
        register_directory_api(self.resource, self.directory_api, self.api.authenticator)
        register_legacy_sync_api(self.resource, self.directory_api, rooms_api, sync_api, self.api.authenticator,
                                 self.api.account_data_store)
        self.site = make_site(self.resource, task.Clock())

    async def v1(self, method: str, token: str, path: str, body: Any = None) -> Any:
        """A request under /_matrix/client/v1."""
        return await self.request(method, "/_matrix/client/v1" + path, body, token=token)

    async def send_ok(self, token: str, room_id: str, content: Any, etype: str = "m.room.message") -> str:
        """Send an event (asserting 200); returns its event ID."""
        self._txn = getattr(self, "_txn", 0) + 1
        resp = await self.send(token, room_id, content, f"t{self._txn}", etype)
        self.assertEqual(resp.code, 200, resp.body)
        return resp.json["event_id"]
