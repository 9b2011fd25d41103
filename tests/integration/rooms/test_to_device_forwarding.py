"""Send-to-device through another instance: the owner of each recipient's to_device shard stores the messages."""

from __future__ import annotations

import time

from homeserver.sharding import shard_for
from tests.integration.rooms import test_forwarding
from tests.integration.rooms.base import SHARD_COUNTS

V3 = "/_matrix/client/v3"


class ToDeviceForwardingTests(test_forwarding.ForwardingTests):
    """A (this site) owns to_device shard 0, B shard 1; sendToDevice on A for B's users runs on B."""

    shard_counts = {**SHARD_COUNTS, "presence": 2, "to_device": 2}

    def test_writes_are_forwarded_to_the_owner(self) -> None:  # type: ignore[override]
        """Inherited rooms test: it runs in test_forwarding already."""

    test_writes_are_forwarded_to_the_owner.skip = "runs in test_forwarding"  # type: ignore[attr-defined]

    async def extra_setup(self) -> None:
        """The two instances of ForwardingTests, plus sendToDevice and /sync (the shared sync worker) on A."""
        from workers.rooms import register_sync_api, register_to_device_api

        await super().extra_setup()
        for ephemeral in (self.a_ephemeral, self.b_ephemeral):
            self.addCleanup(ephemeral.presence_writer.stop)
        register_to_device_api(self.resource, self.a_ephemeral, self.api.authenticator)
        register_sync_api(self.resource, self.sync_api, self.api.authenticator)

    async def _stored_shard(self, user_id: str) -> list:
        def txn_fn(txn):
            txn.execute("SELECT DISTINCT stream_shard FROM device_inbox WHERE user_id = %s", (user_id,))
            return [r[0] for r in txn.fetchall()]

        return await self.db.run_interaction("stored_shard", txn_fn)

    async def test_messages_stored_by_each_owner_and_synced(self) -> None:
        """Recipients on both shards get their message in /sync; each row sits on its user's shard."""
        names = {}
        i = 0
        while len(names) < 2:
            name = f"user{i}"
            names.setdefault(shard_for(self.uid(name), 2), name)
            i += 1
        sender = await self.make_user("sender")
        tokens = {shard: await self.make_user(name) for shard, name in names.items()}
        starts = {shard: (await self.sync(token))["next_batch"] for shard, token in tokens.items()}
        messages = {self.uid(name): {"*": {"to": name}} for name in names.values()}
        resp = await self.request("PUT", f"{V3}/sendToDevice/m.test/fwd1", {"messages": messages}, token=sender)
        self.assertEqual(resp.code, 200, resp.body)
        for shard, name in sorted(names.items()):
            self.assertEqual(await self._stored_shard(self.uid(name)), [shard])
            deadline = time.monotonic() + 10
            while True:
                body = await self.sync(tokens[shard], starts[shard], timeout=200)
                if body["to_device"]["events"] or time.monotonic() > deadline:
                    break
            self.assertEqual([e["content"] for e in body["to_device"]["events"]], [{"to": name}])
