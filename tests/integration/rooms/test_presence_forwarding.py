"""Presence written through another instance: the owner of the user's presence shard stores it."""

from __future__ import annotations

from homeserver.sharding import shard_for
from tests.integration.rooms import test_forwarding
from tests.integration.rooms.base import SHARD_COUNTS

V3 = "/_matrix/client/v3"


class PresenceForwardingTests(test_forwarding.ForwardingTests):
    """A (this site) owns presence shard 0, B shard 1; PUT /status on A for B's users runs on B."""

    shard_counts = {**SHARD_COUNTS, "presence": 2}
    def test_writes_are_forwarded_to_the_owner(self) -> None:  # type: ignore[override]
        """Inherited rooms test: it runs in test_forwarding already."""

    test_writes_are_forwarded_to_the_owner.skip = "runs in test_forwarding"  # type: ignore[attr-defined]

    async def extra_setup(self) -> None:
        """The two instances of ForwardingTests, plus the presence endpoints on A."""
        from workers.rooms import register_presence_api

        await super().extra_setup()
        for ephemeral in (self.a_ephemeral, self.b_ephemeral):
            self.addCleanup(ephemeral.presence_writer.stop)
        register_presence_api(self.resource, self.a_ephemeral, self.api.authenticator)

    async def test_status_set_on_the_owner(self) -> None:
        """Users of both shards set their presence through A; each row is written by its shard's owner."""
        names = {}
        i = 0
        while len(names) < 2:
            name = f"user{i}"
            names.setdefault(shard_for(self.uid(name), 2), name)
            i += 1
        for shard, name in sorted(names.items()):
            token = await self.make_user(name)
            resp = await self.request("PUT", f"{V3}/presence/{self.uid(name)}/status",
                                      {"presence": "online", "status_msg": f"on {shard}"}, token=token)
            self.assertEqual(resp.code, 200, resp.body)
            resp = await self.get(token, f"/presence/{self.uid(name)}/status")
            self.assertEqual((resp.json["presence"], resp.json["status_msg"]), ("online", f"on {shard}"))
            rows = await self.a_ephemeral.presence_store.get_presence([self.uid(name)])
            self.assertEqual(rows[self.uid(name)].stream_shard, shard)
        # Each writer's timer times out only its own users: B's user goes offline through B.
        from homeserver.core.presence import SYNC_TIMEOUT_MS

        self.clock.advance(SYNC_TIMEOUT_MS / 1000)
        # The timers fired on the fake clock; these calls wait for those still writing (per-user lock).
        await self.a_ephemeral.presence_writer.check_timeouts()
        await self.b_ephemeral.presence_writer.check_timeouts()
        rows = await self.a_ephemeral.presence_store.get_presence([self.uid(n) for n in names.values()])
        self.assertEqual({r.presence.state for r in rows.values()}, {"offline"})
