"""Keyring logic with an in-memory store and fake client: caching, refetch rules,
event and JSON signature checks per room version."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.core.errors import SignatureVerifyError
from homeserver.core.events import Event
from homeserver.core.room_versions import get_room_version
from homeserver.core.signing import (
    add_hashes_and_signatures,
    build_server_keys,
    encode_verify_key_base64,
    get_verify_key,
    key_id_of,
    sign_json,
    signing_key_from_seed,
)
from homeserver.federation.keyring import Keyring
from homeserver.federation.keys import KeyLookupError, LocalKeys
from storage.stores.server_keys import StoredKey, StoredKeyJson

OURS = signing_key_from_seed("me", b"\x01" * 32)
REMOTE = signing_key_from_seed("r1", b"\x02" * 32)
DAY = 24 * 3600 * 1000


class MemoryKeyStore:
    def __init__(self):
        self.rows = {}

    async def store_key_response(self, server_name, from_server, fetched_ts, key_json, keys):
        for key_id, vk, valid_until, expired in keys:
            self.rows[(server_name, key_id, from_server)] = StoredKey(server_name, key_id, from_server, vk, fetched_ts, valid_until, expired), key_json

    async def get_server_keys(self, server_name, key_ids):
        out = {}
        for (s, k, _), (row, _) in sorted(self.rows.items(), key=lambda kv: kv[1][0].fetched_ts):
            if s == server_name and k in key_ids:
                out[k] = row
        return out

    async def get_key_jsons(self, server_name, key_ids=None):
        return [StoredKeyJson(s, f, row.fetched_ts, js) for (s, k, f), (row, js) in self.rows.items()
                if s == server_name and (key_ids is None or k in key_ids)]


class FakeClient:
    """Serves remote.test's key response; counts fetches; can be made to fail."""

    def __init__(self, clock):
        self.clock = clock
        self.fetches = 0
        self.down = False
        self.valid_for = 2 * DAY

    async def get_json(self, destination, path, args=None, **kw):
        self.fetches += 1
        if self.down:
            raise ConnectionRefusedError()
        assert (destination, path) == ("remote.test", "/_matrix/key/v2/server")
        return build_server_keys("remote.test", [REMOTE], [], int(self.clock.seconds() * 1000) + self.valid_for)


class KeyringTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryKeyStore()
        self.client = FakeClient(self.clock)
        self.keyring = Keyring(self.clock, LocalKeys("me.test", [OURS]), self.store, self.client, refetch_after_failure_ms=60_000)

    def run_(self, coro):
        return self.successResultOf(defer.ensureDeferred(coro))

    def now(self):
        return int(self.clock.seconds() * 1000)

    def test_fetch_once_then_cache(self):
        """A key is fetched when unknown, then served from the store while valid enough."""
        key = self.run_(self.keyring.get_server_key("remote.test", key_id_of(REMOTE), self.now()))
        self.assertEqual(key.key_base64, encode_verify_key_base64(get_verify_key(REMOTE)))
        self.run_(self.keyring.get_server_key("remote.test", key_id_of(REMOTE), self.now()))
        self.assertEqual(self.client.fetches, 1)
        # Asking for validity beyond what is cached triggers a refetch.
        self.run_(self.keyring.get_server_key("remote.test", key_id_of(REMOTE), self.now() + 3 * DAY))
        self.assertEqual(self.client.fetches, 2)

    def test_failures_not_hammered(self):
        """After a failed fetch the server is not asked again before refetch_after_failure_ms."""
        self.client.down = True
        for _ in range(3):
            self.failureResultOf(defer.ensureDeferred(self.keyring.get_server_key("remote.test", "ed25519:r1", self.now())), KeyLookupError)
        self.assertEqual(self.client.fetches, 1)
        self.clock.advance(61)
        self.failureResultOf(defer.ensureDeferred(self.keyring.get_server_key("remote.test", "ed25519:r1", self.now())), KeyLookupError)
        self.assertEqual(self.client.fetches, 2)

    def test_own_keys_without_fetching(self):
        """Our own keys come from the local key set; unknown IDs of ours are errors."""
        key = self.run_(self.keyring.get_server_key("me.test", key_id_of(OURS), self.now()))
        self.assertFalse(key.is_old)
        self.failureResultOf(defer.ensureDeferred(self.keyring.get_server_key("me.test", "ed25519:x", 0)), KeyLookupError)
        self.assertEqual(self.client.fetches, 0)

    def test_verify_json(self):
        """A JSON object signed by a server verifies; unsigned or tampered ones do not."""
        obj = sign_json({"a": 1}, "remote.test", REMOTE)
        self.run_(self.keyring.verify_json_for_server("remote.test", obj, self.now()))
        for bad in ({"a": 1}, dict(obj, a=2)):
            self.failureResultOf(defer.ensureDeferred(self.keyring.verify_json_for_server("remote.test", bad, self.now())), SignatureVerifyError)

    def event(self, version, ts, key=REMOTE, sender="@u:remote.test"):
        rv = get_room_version(version)
        pdu = {
            "room_id": "!r:remote.test", "type": "m.room.message", "sender": sender, "content": {"body": "hi"},
            "origin_server_ts": ts, "depth": 3, "prev_events": ["$" + "A" * 43], "auth_events": ["$" + "B" * 43],
        }
        if version in ("1", "2"):
            pdu["event_id"] = "$e:remote.test"
            pdu["prev_events"] = [["$p:x", {}]]
            pdu["auth_events"] = [["$a:x", {}]]
        signed = add_hashes_and_signatures(rv, pdu, "remote.test", key)
        return Event.from_pdu(signed, rv)

    def test_event_signatures(self):
        """Events signed by the sender's server verify; a bad signature is refused."""
        self.run_(self.keyring.verify_event_signatures(self.event("10", self.now())))
        self.run_(self.keyring.verify_event_signatures(self.event("1", self.now())))
        forged = self.event("10", self.now(), key=signing_key_from_seed("r1", b"\x09" * 32))
        self.failureResultOf(defer.ensureDeferred(self.keyring.verify_event_signatures(forged)), SignatureVerifyError)

    def test_key_validity_per_room_version(self):
        """Rooms v5+ need the key valid at origin_server_ts; v4 ignores valid_until_ts."""
        self.client.valid_for = DAY
        late = self.now() + 2 * DAY  # beyond what the server publishes
        self.run_(self.keyring.verify_event_signatures(self.event("4", late)))
        self.failureResultOf(defer.ensureDeferred(self.keyring.verify_event_signatures(self.event("5", late))), SignatureVerifyError)
