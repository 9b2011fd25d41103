"""matrix-nio with encryption against a multi-process stack: an encrypted room works end to end.

Two writers split every stream's shards; Alice's and Carol's ``device_lists``
shards are on different writers, so key uploads reach their owner through
the router or by forwarding (checked at the end with an upload sent to the
writer that does not own the user, and the writers' forwarding metrics). Both nio clients upload their device and
one-time keys, Alice creates an encrypted room and invites Carol; once Carol
has joined, Alice's /sync lists Carol in ``device_lists.changed``, Alice
queries and claims Carol's keys, shares a Megolm session over Olm
(to-device) and sends an encrypted message that Carol's client decrypts.
"""

import asyncio
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from homeserver.sharding import shard_for
from tests.e2e.stack import Stack

try:
    import nio
    from nio.crypto import ENCRYPTION_ENABLED
except ImportError:  # pragma: no cover
    nio = None
    ENCRYPTION_ENABLED = False

SHARDS = {"events": 16, "receipts": 4, "typing": 4, "presence": 4, "to_device": 8, "account_data": 4,
          "device_lists": 4, "push_rules": 4}


def _half(first: bool) -> dict[str, str]:
    return {s: (f"0-{n // 2 - 1}" if first else f"{n // 2}-{n - 1}") for s, n in SHARDS.items()}


LAYOUT = {
    "writer1": {"roles": ["client_writer", "background", "admin", "federation_sender", "pusher"], "shards": _half(True)},
    "writer2": {"roles": ["client_writer"], "shards": _half(False)},
    "reader": {"roles": ["client_reader", "federation_inbound", "media"]},
    "sync": {"roles": ["sync"]},
}


def as_deferred(coro):
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


async def sync_until(client, predicate, timeout=30.0):
    """Sync (long-polling, uploading keys when nio wants to) until ``predicate(response)`` holds."""
    loop = asyncio.get_event_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.sync(timeout=2000)
        assert isinstance(resp, nio.SyncResponse), resp
        if client.should_upload_keys:
            uploaded = await client.keys_upload()
            assert isinstance(uploaded, nio.KeysUploadResponse), uploaded
        if predicate(resp):
            return resp
    raise AssertionError("sync condition not reached in time")


class NioEncryptionTests(unittest.TestCase):
    timeout = 240

    def setUp(self):
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")
        if not ENCRYPTION_ENABLED:
            raise unittest.SkipTest("matrix-nio's encryption extra (python-olm) is not installed")

    async def _client(self, stack, name):
        path = tempfile.mkdtemp(prefix=f"nio-{name}-")
        self.addCleanup(shutil.rmtree, path, True)
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        client = nio.AsyncClient(stack.base, name, store_path=path, config=config)
        self.clients.append(client)
        resp = await client.register(name, f"password for {name} 1")
        assert isinstance(resp, nio.RegisterResponse), resp
        assert client.olm is not None, "nio did not load its olm machine"
        uploaded = await client.keys_upload()
        assert isinstance(uploaded, nio.KeysUploadResponse), uploaded
        assert uploaded.signed_curve25519_count > 0, uploaded
        return client

    @defer.inlineCallbacks
    def test_encrypted_message_decrypts(self):
        """Carol decrypts the message Alice sent to their encrypted room."""
        self.assertNotEqual(shard_for("@alice:localhost", 4) >= 2, shard_for("@carol:localhost", 4) >= 2,
                            "alice and carol must have their device_lists shards on different writers")
        stack = Stack(self, reactor, LAYOUT)
        yield stack.start()
        self.clients = []
        self.addCleanup(lambda: defer.gatherResults([as_deferred(c.close()) for c in self.clients]))
        yield as_deferred(self._scenario(stack))

    async def _scenario(self, stack):
        alice = await self._client(stack, "alice")
        carol = await self._client(stack, "carol")
        await sync_until(alice, lambda r: True)
        await sync_until(carol, lambda r: True)

        created = await alice.room_create(name="Secret", invite=[carol.user_id], initial_state=[{
            "type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        await sync_until(carol, lambda r: room_id in r.rooms.invite)
        joined = await carol.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined

        # Alice learns that Carol now shares a room with her (device_lists.changed) and queries her keys.
        await sync_until(alice, lambda r: carol.user_id in r.device_list.changed)
        if alice.should_query_keys:
            queried = await alice.keys_query()
            assert isinstance(queried, nio.KeysQueryResponse), queried
        assert carol.device_id in alice.device_store[carol.user_id], "Alice does not know Carol's device"
        assert alice.rooms[room_id].encrypted

        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "top secret"},
                                     ignore_unverified_devices=True)
        assert isinstance(sent, nio.RoomSendResponse), sent

        def decrypted(resp):
            room = resp.rooms.join.get(room_id)
            return room is not None and any(
                isinstance(e, nio.RoomMessageText) and e.event_id == sent.event_id for e in room.timeline.events)

        resp = await sync_until(carol, decrypted)
        event = next(e for e in resp.rooms.join[room_id].timeline.events if e.event_id == sent.event_id)
        self.assertEqual(event.body, "top secret")
        self.assertTrue(event.decrypted)
        # The claimed one-time key is gone from Carol's count; the server reports it.
        self.assertIsInstance(resp.device_key_count.signed_curve25519, int)
        # A key upload sent to the writer that does not own the user's shard is forwarded to the owner.
        for client, other in ((alice, "writer1"), (carol, "writer2")):
            status, body = await asyncio.to_thread(
                _post, stack.instance_base(other) + "/_matrix/client/v3/keys/upload", client.access_token)
            self.assertEqual(status, 200, body)
            self.assertIn("signed_curve25519", body["one_time_key_counts"])
        forwarded = 0.0
        for name in ("writer1", "writer2"):
            text = await asyncio.to_thread(_read, stack.instance_base(name) + "/metrics")
            for line in text.splitlines():
                if line.startswith("estuary_replication_forwarded_total") and 'command="e2e.' in line \
                        and 'outcome="ok"' in line:
                    forwarded += float(line.rsplit(" ", 1)[1])
        self.assertGreater(forwarded, 0, "no key write was forwarded between the writers")


def _post(url, token):
    import json
    import urllib.request

    request = urllib.request.Request(url, data=b"{}", method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, json.loads(r.read())


def _read(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()
