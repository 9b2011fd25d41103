"""E2E key management against a real database: /keys/* and the device list parts of /sync."""

from __future__ import annotations

import time
from typing import Any

import nacl.signing
from twisted.internet import defer
from unpaddedbase64 import encode_base64

from homeserver.core.signing import sign_json
from tests.integration.rooms.base import RoomsTestCase

V3 = "/_matrix/client/v3"


def device_keys(user_id: str, device_id: str, signing_key: nacl.signing.SigningKey) -> dict[str, Any]:
    """A device_keys object signed by the device's own ed25519 key."""
    public = encode_base64(bytes(signing_key.verify_key))
    keys = {
        "user_id": user_id, "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device_id}": "c" + public[1:], f"ed25519:{device_id}": public},
    }
    signing_key.version = device_id  # type: ignore[attr-defined]
    signing_key.alg = "ed25519"  # type: ignore[attr-defined]
    return sign_json(keys, user_id, signing_key)


def cross_key(user_id: str, usage: str, key: nacl.signing.SigningKey) -> dict[str, Any]:
    """An unsigned cross-signing key object."""
    public = encode_base64(bytes(key.verify_key))
    return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}


def signed_by(obj: dict[str, Any], user_id: str, key: nacl.signing.SigningKey, key_name: str) -> dict[str, Any]:
    """``obj`` signed by ``key`` under key ID ``ed25519:<key_name>``."""
    key.alg = "ed25519"  # type: ignore[attr-defined]
    key.version = key_name  # type: ignore[attr-defined]
    return sign_json(obj, user_id, key)


class E2EKeysTestCase(RoomsTestCase):
    """Rooms + sync + the keys API on one Site."""

    async def extra_setup(self) -> None:
        """Mount /keys (as RoomsProcess.mount does) and announce device changes."""
        from homeserver.handlers.rooms.commands import LocalDispatcher
        from workers.rooms import build_keys_api, register_keys_api, watch_devices

        self.keys = await build_keys_api(
            self.clock, self.server_name, self.db, self.bus, self.shard_counts,
            frozenset(range(self.shard_counts["device_lists"])), LocalDispatcher(), uia=self.api.uia,
        )
        watch_devices(self.api, self.keys)
        register_keys_api(self.resource, self.keys, self.api.authenticator)

    async def user(self, name: str) -> tuple[str, str]:
        """Register ``name``: (access token, device ID)."""
        body = await self.register_user(name)
        return body["access_token"], body["device_id"]

    async def upload(self, token: str, body: Any) -> Any:
        return await self.request("POST", f"{V3}/keys/upload", body, token=token)

    async def sync_until(self, token: str, since: str, check: Any, timeout: float = 10) -> dict:
        """Long-poll (short waits) until ``check(body)`` holds or a deadline passes; returns the last body."""
        deadline = time.monotonic() + timeout
        while True:
            body = await self.sync(token, since, timeout=300)
            if check(body) or time.monotonic() > deadline:
                return body
            since = body["next_batch"]


class UploadQueryClaimTests(E2EKeysTestCase):
    """/keys/upload, /keys/query, /keys/claim and their refusals."""

    async def test_upload_query_and_counts(self) -> None:
        """Device keys are returned by /keys/query (with the display name); one-time key counts by
        /keys/upload and /sync, ``signed_curve25519`` always counted."""
        registered = await self.register_user("alice", initial_device_display_name="phone")
        token, device = registered["access_token"], registered["device_id"]
        bob, _ = await self.user("bob")
        keys = device_keys(self.uid("alice"), device, nacl.signing.SigningKey.generate())
        otks = {f"signed_curve25519:k{i}": {"key": f"key{i}", "signatures": {}} for i in range(3)}
        resp = await self.upload(token, {"device_keys": keys, "one_time_keys": otks})
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"one_time_key_counts": {"signed_curve25519": 3}})
        # An empty upload reports the counts.
        resp = await self.upload(token, {})
        self.assertEqual(resp.json, {"one_time_key_counts": {"signed_curve25519": 3}})
        resp = await self.request("POST", f"{V3}/keys/query", {"device_keys": {self.uid("alice"): []}}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        got = resp.json["device_keys"][self.uid("alice")][device]
        self.assertEqual({k: v for k, v in got.items() if k != "unsigned"}, keys)
        self.assertEqual(got["unsigned"], {"device_display_name": "phone"})
        # Asking for an unknown device gives nothing for it.
        resp = await self.request("POST", f"{V3}/keys/query", {"device_keys": {self.uid("alice"): ["NOPE"]}}, token=bob)
        self.assertEqual(resp.json["device_keys"], {self.uid("alice"): {}})
        body = await self.sync(token)
        self.assertEqual(body["device_one_time_keys_count"], {"signed_curve25519": 3})
        self.assertEqual(body["device_unused_fallback_key_types"], [])
        # A user without keys still sees signed_curve25519: 0 (libolm clients upload when they see it).
        self.assertEqual((await self.sync(bob))["device_one_time_keys_count"], {"signed_curve25519": 0})

    async def test_refusals(self) -> None:
        """Wrong user or device in device_keys, malformed key IDs and values, no auth."""
        token, device = await self.user("alice")
        good = device_keys(self.uid("alice"), device, nacl.signing.SigningKey.generate())
        self.assertError(await self.upload(token, {"device_keys": {**good, "user_id": "@bob:test.local"}}),
                         400, "M_INVALID_PARAM")
        self.assertError(await self.upload(token, {"device_keys": {**good, "device_id": "OTHER"}}),
                         400, "M_INVALID_PARAM")
        self.assertError(await self.upload(token, {"device_keys": {**good, "keys": "x"}}), 400, "M_BAD_JSON")
        self.assertError(await self.upload(token, {"device_keys": {**good, "algorithms": [1]}}), 400, "M_BAD_JSON")
        self.assertError(await self.upload(token, {"one_time_keys": {"nocolon": "k"}}), 400, "M_BAD_JSON")
        self.assertError(await self.upload(token, {"one_time_keys": {"signed_curve25519:a": 5}}), 400, "M_BAD_JSON")
        self.assertError(await self.upload(token, {"one_time_keys": []}), 400, "M_BAD_JSON")
        self.assertError(await self.upload(token, {"fallback_keys": {"a:1": "x", "a:2": "y"}}), 400, "M_INVALID_PARAM")
        resp = await self.request("POST", f"{V3}/keys/upload", {"one_time_keys": {}})
        self.assertError(resp, 401, "M_MISSING_TOKEN")
        resp = await self.request("POST", f"{V3}/keys/query", {"device_keys": {}})
        self.assertError(resp, 401, "M_MISSING_TOKEN")
        self.assertError(await self.request("POST", f"{V3}/keys/query", {"device_keys": []}, token=token),
                         400, "M_BAD_JSON")
        self.assertError(await self.request("POST", f"{V3}/keys/query", {"device_keys": {"bob": []}}, token=token),
                         400, "M_INVALID_PARAM")
        self.assertError(await self.request("POST", f"{V3}/keys/claim", {"one_time_keys": {"@a:b": {"D": 3}}},
                                            token=token), 400, "M_BAD_JSON")
        self.assertError(await self.request("POST", f"{V3}/keys/claim", {}, token=token), 400, "M_BAD_JSON")
        # Nothing was stored by the refused uploads.
        self.assertEqual(await self.count("e2e_device_keys"), 0)
        self.assertEqual(await self.count("e2e_one_time_keys"), 0)

    async def test_one_time_key_reupload(self) -> None:
        """The same one-time key again is accepted (a retry); other contents under its ID are refused
        and the whole upload is rolled back."""
        token, _ = await self.user("alice")
        self.assertEqual((await self.upload(token, {"one_time_keys": {"curve25519:A": "one"}})).code, 200)
        self.assertEqual((await self.upload(token, {"one_time_keys": {"curve25519:A": "one"}})).code, 200)
        resp = await self.upload(token, {"one_time_keys": {"curve25519:B": "two", "curve25519:A": "changed"}})
        self.assertError(resp, 400, "M_INVALID_PARAM")
        self.assertEqual(await self.count("e2e_one_time_keys"), 1)

    async def test_claim_once_then_fallback(self) -> None:
        """Each one-time key is claimed once; then the fallback key is returned (and reported used)."""
        token, device = await self.user("alice")
        bob, _ = await self.user("bob")
        await self.upload(token, {
            "one_time_keys": {"signed_curve25519:A": {"key": "a", "signatures": {}}},
            "fallback_keys": {"signed_curve25519:F": {"key": "f", "fallback": True, "signatures": {}}},
        })
        self.assertEqual((await self.sync(token))["device_unused_fallback_key_types"], ["signed_curve25519"])
        claim = {"one_time_keys": {self.uid("alice"): {device: "signed_curve25519"}}}
        first = await self.request("POST", f"{V3}/keys/claim", claim, token=bob)
        self.assertEqual(first.code, 200, first.body)
        self.assertEqual(first.json["one_time_keys"], {self.uid("alice"): {device: {"signed_curve25519:A": {"key": "a", "signatures": {}}}}})
        second = await self.request("POST", f"{V3}/keys/claim", claim, token=bob)
        self.assertEqual(second.json["one_time_keys"],
                         {self.uid("alice"): {device: {"signed_curve25519:F": {"key": "f", "fallback": True, "signatures": {}}}}})
        body = await self.sync(token)
        self.assertEqual(body["device_one_time_keys_count"], {"signed_curve25519": 0})
        self.assertEqual(body["device_unused_fallback_key_types"], [])
        # A remote user is a failure, not an error.
        remote = await self.request("POST", f"{V3}/keys/claim", {"one_time_keys": {"@x:elsewhere": {"D": "a"}}}, token=bob)
        self.assertEqual(remote.code, 200)
        self.assertIn("elsewhere", remote.json["failures"])

    async def test_concurrent_claims_get_distinct_keys(self) -> None:
        """Many claims at once: every one-time key goes to exactly one claimer."""
        token, device = await self.user("alice")
        bob, _ = await self.user("bob")
        count = 20
        await self.upload(token, {"one_time_keys": {f"curve25519:k{i:02d}": f"v{i}" for i in range(count)}})
        claim = {"one_time_keys": {self.uid("alice"): {device: "curve25519"}}}
        responses = await defer.gatherResults([
            defer.ensureDeferred(self.request("POST", f"{V3}/keys/claim", claim, token=bob)) for _ in range(count + 5)
        ])
        got = []
        for resp in responses:
            self.assertEqual(resp.code, 200)
            got.extend(resp.json["one_time_keys"].get(self.uid("alice"), {}).get(device, {}))
        self.assertEqual(sorted(got), sorted(f"curve25519:k{i:02d}" for i in range(count)))
        self.assertEqual(await self.count("e2e_one_time_keys"), 0)

    async def test_deleted_device_keys_are_dropped(self) -> None:
        """Logging a device out deletes its keys: they are no longer queried or claimed."""
        first = await self.register_user("alice")
        second = await self.login("alice")
        for body in (first, second):
            await self.upload(body["access_token"], {
                "device_keys": device_keys(self.uid("alice"), body["device_id"], nacl.signing.SigningKey.generate()),
                "one_time_keys": {"curve25519:X": "x"},
            })
        resp = await self.request("POST", f"{V3}/logout", {}, token=second["access_token"])
        self.assertEqual(resp.code, 200)
        resp = await self.request("POST", f"{V3}/keys/query", {"device_keys": {self.uid("alice"): []}},
                                  token=first["access_token"])
        self.assertEqual(list(resp.json["device_keys"][self.uid("alice")]), [first["device_id"]])
        self.assertEqual(await self.count("e2e_one_time_keys"), 1)


class DeviceListSyncTests(E2EKeysTestCase):
    """device_lists.changed / left in /sync and /keys/changes."""

    async def test_changed_for_room_mates_and_left_after_leave(self) -> None:
        """Bob sees Alice in ``changed`` when she joins his room and when she uploads device keys
        (his long-poll is woken), not users he shares no room with, and ``left`` after she leaves."""
        alice, alice_device = await self.user("alice")
        bob, _ = await self.user("bob")
        carol, carol_device = await self.user("carol")
        room = await self.create_room(bob, preset="public_chat")
        start = (await self.sync(bob))["next_batch"]
        self.assertEqual((await self.join(alice, room)).code, 200)
        body = await self.sync_until(bob, start, lambda b: self.uid("alice") in b["device_lists"]["changed"])
        self.assertEqual(body["device_lists"]["changed"], [self.uid("alice")])
        since = body["next_batch"]
        poll = defer.ensureDeferred(self.sync(bob, since, timeout=5000))
        await self.upload(alice, {"device_keys": device_keys(self.uid("alice"), alice_device,
                                                             nacl.signing.SigningKey.generate())})
        await self.upload(carol, {"device_keys": device_keys(self.uid("carol"), carol_device,
                                                             nacl.signing.SigningKey.generate())})
        started = time.monotonic()
        woken = await poll
        self.assertLess(time.monotonic() - started, 4)
        if not woken["device_lists"]["changed"]:
            woken = await self.sync_until(bob, woken["next_batch"], lambda b: b["device_lists"]["changed"])
        self.assertEqual(woken["device_lists"]["changed"], [self.uid("alice")])
        self.assertEqual(woken["device_lists"]["left"], [])
        since = woken["next_batch"]
        changes = await self.request("GET", f"{V3}/keys/changes?from={start}&to={since}", token=bob)
        self.assertEqual(changes.code, 200, changes.body)
        self.assertEqual(changes.json, {"changed": [self.uid("alice")], "left": []})
        self.assertEqual((await self.request("POST", f"{V3}/rooms/{room}/leave", {}, token=alice)).code, 200)
        body = await self.sync_until(bob, since, lambda b: b["device_lists"]["left"])
        self.assertEqual(body["device_lists"], {"changed": [], "left": [self.uid("alice")]})
        # Nothing is repeated by the next incremental sync.
        again = await self.sync(bob, body["next_batch"])
        self.assertEqual(again["device_lists"], {"changed": [], "left": []})

    async def test_new_and_deleted_devices_are_changes(self) -> None:
        """A room mate's new login and logout show up in ``changed``; so do the user's own."""
        alice, _ = await self.user("alice")
        bob, _ = await self.user("bob")
        room = await self.create_room(bob, preset="public_chat")
        await self.join(alice, room)
        since = (await self.sync(bob))["next_batch"]
        second = await self.login("alice")
        body = await self.sync_until(bob, since, lambda b: b["device_lists"]["changed"])
        self.assertEqual(body["device_lists"]["changed"], [self.uid("alice")])
        since = body["next_batch"]
        await self.request("POST", f"{V3}/logout", {}, token=second["access_token"])
        body = await self.sync_until(bob, since, lambda b: b["device_lists"]["changed"])
        self.assertEqual(body["device_lists"]["changed"], [self.uid("alice")])
        own_since = (await self.sync(alice))["next_batch"]
        await self.login("alice")
        body = await self.sync_until(alice, own_since, lambda b: b["device_lists"]["changed"])
        self.assertEqual(body["device_lists"]["changed"], [self.uid("alice")])

    async def test_keys_changes_refusals(self) -> None:
        """Missing or malformed tokens are refused."""
        bob, _ = await self.user("bob")
        self.assertError(await self.request("GET", f"{V3}/keys/changes", token=bob), 400, "M_MISSING_PARAM")
        self.assertError(await self.request("GET", f"{V3}/keys/changes?from=x&to=y", token=bob), 400, "M_INVALID_PARAM")


class CrossSigningTests(E2EKeysTestCase):
    """/keys/device_signing/upload and /keys/signatures/upload."""

    async def asyncSetUpKeys(self) -> None:
        self.token, self.device = await self.user("alice")
        self.device_key = nacl.signing.SigningKey.generate()
        await self.upload(self.token, {"device_keys": device_keys(self.uid("alice"), self.device, self.device_key)})
        self.master = nacl.signing.SigningKey.generate()
        self.ssk = nacl.signing.SigningKey.generate()
        self.usk = nacl.signing.SigningKey.generate()
        me = self.uid("alice")
        self.master_pub = encode_base64(bytes(self.master.verify_key))
        self.bodies = {
            "master_key": cross_key(me, "master", self.master),
            "self_signing_key": signed_by(cross_key(me, "self_signing", self.ssk), me, self.master, self.master_pub),
            "user_signing_key": signed_by(cross_key(me, "user_signing", self.usk), me, self.master, self.master_pub),
        }

    async def test_first_upload_without_uia_then_uia_to_replace(self) -> None:
        """The first upload needs no UIA, re-uploading the same keys neither; replacing them does."""
        await self.asyncSetUpKeys()
        bob, _ = await self.user("bob")
        url = f"{V3}/keys/device_signing/upload"
        resp = await self.request("POST", url, self.bodies, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.request("POST", url, self.bodies, token=self.token)).code, 200)
        query = {"device_keys": {self.uid("alice"): []}}
        mine = (await self.request("POST", f"{V3}/keys/query", query, token=self.token)).json
        self.assertEqual(mine["master_keys"][self.uid("alice")], self.bodies["master_key"])
        self.assertEqual(mine["self_signing_keys"][self.uid("alice")], self.bodies["self_signing_key"])
        self.assertEqual(mine["user_signing_keys"][self.uid("alice")], self.bodies["user_signing_key"])
        theirs = (await self.request("POST", f"{V3}/keys/query", query, token=bob)).json
        self.assertNotIn(self.uid("alice"), theirs.get("user_signing_keys", {}))
        new_master = nacl.signing.SigningKey.generate()
        replacement = {"master_key": cross_key(self.uid("alice"), "master", new_master)}
        # cross_signing.yaml documents no 401 although the endpoint uses UIA (a gap of the spec's OpenAPI).
        self.check_responses_against_spec = False
        resp = await self.request("POST", url, replacement, token=self.token)
        self.assertEqual(resp.code, 401)
        self.assertEqual(resp.json["flows"], [{"stages": ["m.login.password"]}])
        auth = {"type": "m.login.password", "session": resp.json["session"],
                "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}
        resp = await self.request("POST", url, {**replacement, "auth": auth}, token=self.token)
        self.assertEqual(resp.code, 401)
        auth["password"] = "correct horse battery"
        self.check_responses_against_spec = True
        resp = await self.request("POST", url, {**replacement, "auth": auth}, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        mine = (await self.request("POST", f"{V3}/keys/query", query, token=self.token)).json
        self.assertEqual(mine["master_keys"][self.uid("alice")], replacement["master_key"])

    async def test_device_signing_refusals(self) -> None:
        """A self-signing key not signed by the master key, a wrong user or usage are refused."""
        await self.asyncSetUpKeys()
        url = f"{V3}/keys/device_signing/upload"
        me = self.uid("alice")
        unsigned_ssk = {"master_key": self.bodies["master_key"], "self_signing_key": cross_key(me, "self_signing", self.ssk)}
        self.assertError(await self.request("POST", url, unsigned_ssk, token=self.token), 400, "M_INVALID_SIGNATURE")
        wrong_user = {"master_key": cross_key("@bob:test.local", "master", self.master)}
        self.assertError(await self.request("POST", url, wrong_user, token=self.token), 400, "M_INVALID_PARAM")
        wrong_usage = {"master_key": cross_key(me, "self_signing", self.master)}
        self.assertError(await self.request("POST", url, wrong_usage, token=self.token), 400, "M_INVALID_PARAM")
        self.assertError(await self.request("POST", url, {"master_key": "x"}, token=self.token), 400, "M_BAD_JSON")
        self.assertError(await self.request("POST", url, {}, token=self.token), 400, "M_MISSING_PARAM")
        self.assertError(await self.request("POST", url, self.bodies), 401, "M_MISSING_TOKEN")
        self.assertEqual(await self.count("e2e_cross_signing_keys"), 0)

    async def test_signatures_upload(self) -> None:
        """The self-signing key signs the device, the user-signing key another user's master key; both
        show in /keys/query (the latter only to the signer); a bad signature is reported in failures."""
        await self.asyncSetUpKeys()
        me = self.uid("alice")
        self.assertEqual((await self.request("POST", f"{V3}/keys/device_signing/upload", self.bodies,
                                             token=self.token)).code, 200)
        bob, _ = await self.user("bob")
        bob_master = nacl.signing.SigningKey.generate()
        bob_master_obj = cross_key(self.uid("bob"), "master", bob_master)
        self.assertEqual((await self.request("POST", f"{V3}/keys/device_signing/upload", {"master_key": bob_master_obj},
                                             token=bob)).code, 200)
        query = {"device_keys": {me: []}}
        stored = (await self.request("POST", f"{V3}/keys/query", query, token=self.token)).json
        device_obj = {k: v for k, v in stored["device_keys"][me][self.device].items() if k != "unsigned"}
        ssk_pub = encode_base64(bytes(self.ssk.verify_key))
        usk_pub = encode_base64(bytes(self.usk.verify_key))
        bob_pub = encode_base64(bytes(bob_master.verify_key))
        signed_device = signed_by(device_obj, me, self.ssk, ssk_pub)
        signed_bob = signed_by(bob_master_obj, me, self.usk, usk_pub)
        forged = signed_by(device_obj, me, nacl.signing.SigningKey.generate(), ssk_pub)
        resp = await self.request("POST", f"{V3}/keys/signatures/upload", {
            me: {self.device: signed_device}, self.uid("bob"): {bob_pub: signed_bob},
        }, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["failures"], {})
        resp = await self.request("POST", f"{V3}/keys/signatures/upload", {me: {self.device: forged}}, token=self.token)
        self.assertEqual(resp.json["failures"][me][self.device]["errcode"], "M_INVALID_SIGNATURE")
        # The device signs its user's master key (what a client does when it trusts the master key).
        master_signed = signed_by(self.bodies["master_key"], me, self.device_key, self.device)
        resp = await self.request("POST", f"{V3}/keys/signatures/upload", {me: {self.master_pub: master_signed}},
                                  token=self.token)
        self.assertEqual(resp.json["failures"], {})
        # Unknown keys and objects that differ from the stored key are failures too.
        resp = await self.request("POST", f"{V3}/keys/signatures/upload", {
            me: {"NOPE": signed_device, self.master_pub: {**master_signed, "usage": ["other"]}}}, token=self.token)
        self.assertEqual(resp.json["failures"][me]["NOPE"]["errcode"], "M_NOT_FOUND")
        self.assertEqual(resp.json["failures"][me][self.master_pub]["errcode"], "M_INVALID_PARAM")
        resp = await self.request("POST", f"{V3}/keys/signatures/upload",
                                  {me: {self.device: {**signed_device, "signatures": ["x"]}}}, token=self.token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["failures"][me][self.device]["errcode"], "M_INVALID_SIGNATURE")
        self.assertError(await self.request("POST", f"{V3}/keys/signatures/upload", {me: ["x"]}, token=self.token),
                         400, "M_BAD_JSON")
        self.assertError(await self.request("POST", f"{V3}/keys/signatures/upload", {"bob": {}}, token=self.token),
                         400, "M_INVALID_PARAM")
        mine = (await self.request("POST", f"{V3}/keys/query", {"device_keys": {me: [], self.uid("bob"): []}},
                                   token=self.token)).json
        self.assertEqual(mine["master_keys"][me]["signatures"][me][f"ed25519:{self.device}"],
                         master_signed["signatures"][me][f"ed25519:{self.device}"])
        self.assertEqual(mine["device_keys"][me][self.device]["signatures"][me][f"ed25519:{ssk_pub}"],
                         signed_device["signatures"][me][f"ed25519:{ssk_pub}"])
        self.assertIn(me, mine["master_keys"][self.uid("bob")]["signatures"])
        theirs = (await self.request("POST", f"{V3}/keys/query", {"device_keys": {self.uid("bob"): []}}, token=bob)).json
        self.assertNotIn(me, theirs["master_keys"][self.uid("bob")].get("signatures", {}))


class RedisDeviceListSyncTests(DeviceListSyncTests):
    """The device list sync tests with the bus on real Redis (writer and syncer on separate connections)."""

    use_redis = True


def backup_key(index: int, forwarded: int = 0, verified: bool = False, data: str = "x") -> dict[str, Any]:
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": {"ciphertext": data, "ephemeral": "e", "mac": "m"}}


class KeyBackupTests(E2EKeysTestCase):
    """/room_keys/version and /room_keys/keys."""

    ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"

    async def test_versions(self) -> None:
        """Create, read (current and by number), update auth_data, delete; numbers are never reused."""
        token, _ = await self.user("alice")
        self.assertError(await self.get(token, "/room_keys/version"), 404, "M_NOT_FOUND")
        body = {"algorithm": self.ALGORITHM, "auth_data": {"public_key": "abc"}}
        first = await self.post(token, "/room_keys/version", body)
        self.assertEqual(first.code, 200, first.body)
        version = first.json["version"]
        got = await self.get(token, "/room_keys/version")
        self.assertEqual(got.json, {**body, "count": 0, "etag": "0", "version": version})
        self.assertEqual((await self.get(token, f"/room_keys/version/{version}")).json["version"], version)
        update = {"algorithm": self.ALGORITHM, "auth_data": {"public_key": "def"}, "version": version}
        resp = await self.request("PUT", f"{V3}/room_keys/version/{version}", update, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.get(token, "/room_keys/version")).json["auth_data"], {"public_key": "def"})
        # Refusals: algorithm change, version mismatch, unknown versions, other users' versions.
        resp = await self.request("PUT", f"{V3}/room_keys/version/{version}", {**update, "algorithm": "other"}, token=token)
        self.assertError(resp, 400, "M_INVALID_PARAM")
        resp = await self.request("PUT", f"{V3}/room_keys/version/{version}", {**update, "version": "99"}, token=token)
        self.assertError(resp, 400, "M_INVALID_PARAM")
        self.assertError(await self.get(token, "/room_keys/version/99"), 404, "M_NOT_FOUND")
        self.assertError(await self.get(token, "/room_keys/version/abc"), 404, "M_NOT_FOUND")
        self.assertError(await self.post(token, "/room_keys/version", {"algorithm": self.ALGORITHM}), 400, "M_BAD_JSON")
        bob, _ = await self.user("bob")
        self.assertError(await self.get(bob, f"/room_keys/version/{version}"), 404, "M_NOT_FOUND")
        self.assertError(await self.request("GET", f"{V3}/room_keys/version"), 401, "M_MISSING_TOKEN")
        resp = await self.request("DELETE", f"{V3}/room_keys/version/{version}", token=token)
        self.assertEqual(resp.code, 200)
        self.assertError(await self.get(token, "/room_keys/version"), 404, "M_NOT_FOUND")
        second = await self.post(token, "/room_keys/version", body)
        self.assertNotEqual(second.json["version"], version)

    async def test_keys(self) -> None:
        """Upload at the three levels; a worse key does not replace a better one; etag and count move;
        writing to an old version is refused with the current one; deletes."""
        token, _ = await self.user("alice")
        body = {"algorithm": self.ALGORITHM, "auth_data": {"public_key": "abc"}}
        old = (await self.post(token, "/room_keys/version", body)).json["version"]
        version = (await self.post(token, "/room_keys/version", body)).json["version"]
        url = f"{V3}/room_keys/keys"
        resp = await self.request("PUT", f"{url}?version={version}",
                                  {"rooms": {"!r:hs": {"sessions": {"s1": backup_key(5), "s2": backup_key(0)}}}}, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"etag": "1", "count": 2})
        # Worse (higher index) does not replace; better (verified) does.
        resp = await self.request("PUT", f"{url}/!r:hs/s1?version={version}", backup_key(9, data="worse"), token=token)
        self.assertEqual(resp.json, {"etag": "1", "count": 2})
        resp = await self.request("PUT", f"{url}/!r:hs/s1?version={version}", backup_key(7, verified=True, data="good"),
                                  token=token)
        self.assertEqual(resp.json, {"etag": "2", "count": 2})
        resp = await self.request("PUT", f"{url}/!q:hs?version={version}", {"sessions": {"s3": backup_key(1)}}, token=token)
        self.assertEqual(resp.json, {"etag": "3", "count": 3})
        got = await self.request("GET", f"{url}/!r:hs/s1?version={version}", token=token)
        self.assertEqual(got.json["session_data"]["ciphertext"], "good")
        everything = await self.request("GET", f"{url}?version={version}", token=token)
        self.assertEqual(sorted(everything.json["rooms"]), ["!q:hs", "!r:hs"])
        room = await self.request("GET", f"{url}/!r:hs?version={version}", token=token)
        self.assertEqual(sorted(room.json["sessions"]), ["s1", "s2"])
        self.assertEqual((await self.request("GET", f"{url}/!none:hs?version={version}", token=token)).json,
                         {"sessions": {}})
        self.assertError(await self.request("GET", f"{url}/!r:hs/nope?version={version}", token=token), 404, "M_NOT_FOUND")
        # Refusals.
        resp = await self.request("PUT", f"{url}/!r:hs/s9?version={old}", backup_key(0), token=token)
        self.assertError(resp, 403, "M_WRONG_ROOM_KEYS_VERSION")
        self.assertEqual(resp.json["current_version"], version)
        self.assertError(await self.request("PUT", f"{url}/!r:hs/s9", backup_key(0), token=token), 400, "M_MISSING_PARAM")
        bad = {**backup_key(0), "is_verified": "yes"}
        self.assertError(await self.request("PUT", f"{url}/!r:hs/s9?version={version}", bad, token=token), 400, "M_BAD_JSON")
        self.assertError(await self.request("GET", f"{url}?version=77", token=token), 404, "M_NOT_FOUND")
        # Deletes move the etag and the count.
        resp = await self.request("DELETE", f"{url}/!r:hs/s2?version={version}", token=token)
        self.assertEqual(resp.json, {"etag": "4", "count": 2})
        resp = await self.request("DELETE", f"{url}?version={version}", token=token)
        self.assertEqual(resp.json, {"etag": "5", "count": 0})
        self.assertEqual((await self.get(token, "/room_keys/version")).json["count"], 0)


class MalformedBodiesTests(E2EKeysTestCase):
    """Odd JSON shapes on every key endpoint get a 4xx Matrix error, never a 500."""

    check_responses_against_spec = False

    async def test_never_500(self) -> None:
        token, _ = await self.user("alice")
        odd_values: list[Any] = [None, 1, "x", [], [1], {}, {"a": None}, {"a": [1]}, {"a": {"b": 1}}, True]
        endpoints = {
            "/keys/upload": ["device_keys", "one_time_keys", "fallback_keys"],
            "/keys/query": ["device_keys", "timeout"],
            "/keys/claim": ["one_time_keys", "timeout"],
            "/keys/device_signing/upload": ["master_key", "self_signing_key", "user_signing_key", "auth"],
            "/keys/signatures/upload": [self.uid("alice"), "@bob:test.local"],
            "/room_keys/version": ["algorithm", "auth_data"],
        }
        for path, fields in endpoints.items():
            for field in fields:
                for value in odd_values:
                    resp = await self.request("POST", f"{V3}{path}", {field: value}, token=token)
                    self.assertLess(resp.code, 500, (path, field, value, resp.body))
                    if resp.code >= 400:
                        self.assertIn("errcode", resp.json, (path, field, value))
        for value in odd_values:
            resp = await self.request("PUT", f"{V3}/room_keys/keys?version=1", {"rooms": value}, token=token)
            self.assertLess(resp.code, 500, (value, resp.body))
            resp = await self.request("PUT", f"{V3}/room_keys/keys/!r:hs/s?version=1", {"session_data": value}, token=token)
            self.assertLess(resp.code, 500, (value, resp.body))
