"""End-to-end encryption key management (client-server API, "End-to-End Encryption").

- ``POST /keys/upload``: device identity keys, one-time keys and fallback
  keys of the requesting device. Runs on the owner of the user's
  ``device_lists`` shard (``e2e.upload`` command): new or changed device keys
  take a position of that shard in the same transaction.
- ``POST /keys/query``: device and cross-signing keys of local users (remote
  servers are reported in ``failures``: key federation is not implemented).
- ``POST /keys/claim``: one one-time key per requested device, handed out
  once (the database deletes it), else the device's fallback key.
- ``GET /keys/changes``: who changed between two sync tokens.
- ``POST /keys/device_signing/upload``: cross-signing keys, behind UIA unless
  none exist yet or the same keys are uploaded again (spec v1.11; Synapse
  behaves the same).
- ``POST /keys/signatures/upload``: signatures of one's own devices and master
  key by one's self-signing key / device keys, and of other users' master keys
  by one's user-signing key; each is verified before it is stored.

Device creation and deletion (login, logout, ``DELETE /devices``...) are
announced through :meth:`E2EKeysHandler.on_devices_changed`, which also drops
the keys of deleted devices.

Validation is pure (``parse_*``) and happens on the instance that received the
request; commands carry the validated values.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Callable, Mapping, Optional, Sequence

from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import OneTimeKeyConflict, SignatureVerifyError
from homeserver.core.signing import verify_key_from_base64, verify_signed_json
from homeserver.errors import Codes, MatrixError, bad_json, invalid_param
from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken
from homeserver.handlers.uia import PASSWORD

logger = logging.getLogger(__name__)

#: Bounds on one request (the spec sets none; these keep one request's work bounded).
MAX_KEYS_PER_UPLOAD = 1000
MAX_USERS_PER_REQUEST = 1000
MAX_DEVICES_PER_REQUEST = 10000
_NAME = re.compile(r"^[^\s:\x00-\x1f]{1,255}$")
_USER_ID = re.compile(r"^@[^:\s]+:[^\s]+$")
CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")
_BODY_FIELDS = {"master": "master_key", "self_signing": "self_signing_key", "user_signing": "user_signing_key"}


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


def _check_user_id(user_id: Any) -> str:
    if not isinstance(user_id, str) or not _USER_ID.match(user_id) or len(user_id) > 255:
        raise invalid_param(f"Invalid user ID {user_id!r}")
    return user_id


def _split_key_id(key_id: Any, what: str) -> tuple[str, str]:
    """``<algorithm>:<key id>`` -> its two parts (``M_BAD_JSON`` otherwise)."""
    if not isinstance(key_id, str):
        raise bad_json(f"{what} key IDs must be strings")
    algorithm, sep, name = key_id.partition(":")
    if not sep or not _NAME.match(algorithm) or not name or len(name) > 255:
        raise bad_json(f"Invalid {what} key ID {key_id!r}: expected <algorithm>:<key id>")
    return algorithm, name


def _check_key_value(value: Any, key_id: str) -> Any:
    """A one-time or fallback key: a string, or a (signed) object with a string ``key``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("key"), str):
        signatures = value.get("signatures")
        if signatures is not None and not isinstance(signatures, dict):
            raise bad_json(f"'signatures' of key {key_id} must be an object")
        return value
    raise bad_json(f"Key {key_id} must be a string or an object with a string 'key'")


def _check_signatures(signatures: Any, what: str) -> None:
    if not isinstance(signatures, dict):
        raise bad_json(f"'signatures' of {what} must be an object")
    for signer, sigs in signatures.items():
        if not isinstance(sigs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sigs.items()):
            raise bad_json(f"Signatures by {signer} in {what} must map key IDs to strings")


def parse_device_keys(value: Any, user_id: str, device_id: str) -> dict[str, Any]:
    """The ``device_keys`` of an upload: well formed and naming the requesting user and device.

    The self-signature is not verified (clients check it when they query;
    Synapse does not verify it either).
    """
    if not isinstance(value, dict):
        raise bad_json("'device_keys' must be an object")
    if value.get("user_id") != user_id:
        raise invalid_param("'device_keys.user_id' does not match the requesting user")
    if value.get("device_id") != device_id:
        raise invalid_param("'device_keys.device_id' does not match the requesting device")
    algorithms = value.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_json("'device_keys.algorithms' must be a list of strings")
    keys = value.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise bad_json("'device_keys.keys' must be a non-empty object")
    for key_id, key in keys.items():
        _split_key_id(key_id, "device")
        if not isinstance(key, str):
            raise bad_json(f"Device key {key_id} must be a string")
    _check_signatures(value.get("signatures"), "device_keys")
    return value


def _parse_key_map(value: Any, field: str) -> list[tuple[str, str, Any]]:
    if not isinstance(value, dict):
        raise bad_json(f"'{field}' must be an object")
    if len(value) > MAX_KEYS_PER_UPLOAD:
        raise invalid_param(f"At most {MAX_KEYS_PER_UPLOAD} keys per upload")
    out = []
    for key_id, key in value.items():
        algorithm, name = _split_key_id(key_id, field)
        out.append((algorithm, name, _check_key_value(key, key_id)))
    return out


def parse_upload(body: Any, user_id: str, device_id: Optional[str]) -> tuple[Optional[dict[str, Any]], list, list]:
    """``(device_keys, one_time_keys, fallback_keys)`` of a ``/keys/upload`` body (pure)."""
    if not isinstance(body, dict):
        raise bad_json("Body must be a JSON object")
    if device_id is None:
        raise invalid_param("Keys can only be uploaded by an access token bound to a device")
    device_keys = None
    if body.get("device_keys") is not None:
        device_keys = parse_device_keys(body["device_keys"], user_id, device_id)
    one_time = _parse_key_map(body["one_time_keys"], "one_time_keys") if body.get("one_time_keys") is not None else []
    raw_fallback = body.get("fallback_keys")
    if raw_fallback is None:
        raw_fallback = body.get("org.matrix.msc2732.fallback_keys")
    fallback = _parse_key_map(raw_fallback, "fallback_keys") if raw_fallback is not None else []
    if len({a for a, _, _ in fallback}) != len(fallback):
        raise invalid_param("At most one fallback key per algorithm")
    return device_keys, one_time, fallback


def parse_timeout(body: Mapping[str, Any]) -> None:
    timeout = body.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
        raise bad_json("'timeout' must be an integer")


def parse_query(body: Any) -> dict[str, list[str]]:
    """``user -> device IDs`` (empty: every device) of a ``/keys/query`` body."""
    if not isinstance(body, dict):
        raise bad_json("Body must be a JSON object")
    parse_timeout(body)
    wanted = body.get("device_keys")
    if not isinstance(wanted, dict):
        raise bad_json("'device_keys' must be an object")
    if len(wanted) > MAX_USERS_PER_REQUEST:
        raise invalid_param(f"At most {MAX_USERS_PER_REQUEST} users per request")
    out = {}
    for user_id, devices in wanted.items():
        _check_user_id(user_id)
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json(f"Devices of {user_id} must be a list of strings")
        out[user_id] = devices
    return out


def parse_claim(body: Any) -> list[tuple[str, str, str]]:
    """``(user, device, algorithm)`` of a ``/keys/claim`` body."""
    if not isinstance(body, dict):
        raise bad_json("Body must be a JSON object")
    parse_timeout(body)
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise bad_json("'one_time_keys' must be an object")
    out = []
    for user_id, devices in wanted.items():
        _check_user_id(user_id)
        if not isinstance(devices, dict):
            raise bad_json(f"'one_time_keys.{user_id}' must be an object")
        for device_id, algorithm in devices.items():
            if not isinstance(algorithm, str) or not _NAME.match(algorithm):
                raise bad_json(f"Algorithm for {user_id}/{device_id} must be an algorithm name")
            out.append((user_id, device_id, algorithm))
    if len(out) > MAX_DEVICES_PER_REQUEST:
        raise invalid_param(f"At most {MAX_DEVICES_PER_REQUEST} devices per request")
    return out


def cross_signing_public_key(key: Mapping[str, Any]) -> str:
    """The one ed25519 public key (unpadded base64) of a cross-signing key object."""
    return next(iter(key["keys"].values()))


def parse_cross_signing_key(value: Any, user_id: str, key_type: str) -> dict[str, Any]:
    """A cross-signing key object of the requesting user, with the usage of its type and one ed25519 key."""
    field = _BODY_FIELDS[key_type]
    if not isinstance(value, dict):
        raise bad_json(f"'{field}' must be an object")
    if value.get("user_id") != user_id:
        raise invalid_param(f"'{field}.user_id' does not match the requesting user")
    usage = value.get("usage")
    if not isinstance(usage, list) or key_type not in usage or not all(isinstance(u, str) for u in usage):
        raise invalid_param(f"'{field}.usage' must include {key_type!r}")
    keys = value.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise invalid_param(f"'{field}.keys' must hold exactly one key")
    (key_id, public), = keys.items()
    if not isinstance(public, str) or key_id != f"ed25519:{public}":
        raise invalid_param(f"'{field}.keys' must map 'ed25519:<public key>' to the public key")
    try:
        verify_key_from_base64(key_id, public)
    except ValueError as e:
        raise invalid_param(f"'{field}': {e}")
    if value.get("signatures") is not None:
        _check_signatures(value["signatures"], field)
    return value


def verify_by(obj: Mapping[str, Any], signer: str, public: str, key_id: Optional[str] = None) -> bool:
    """Whether ``obj`` carries a valid signature by ``signer`` with the ed25519 key ``public``, under
    ``key_id`` (default ``ed25519:<public>``, as cross-signing keys are named; devices use their ID)."""
    try:
        verify_signed_json(obj, signer, verify_key_from_base64(key_id or f"ed25519:{public}", public))
        return True
    except (SignatureVerifyError, ValueError):
        return False


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(encode_canonical_json(value)).hexdigest()


class E2EKeysHandler:
    """The key endpoints; writes run on the owner of the user's ``device_lists`` shard."""

    def __init__(self, clock: Any, server_name: str, store: Any, dispatcher: Any, allocators: Mapping[int, Any],
                 shard_of: Callable[[str], int], uia: Any = None, device_lists: Any = None,
                 shard_counts: Optional[Mapping[str, int]] = None) -> None:
        self._clock = clock
        self._server_name = server_name
        self._store = store
        self._dispatcher = dispatcher
        self._allocators = allocators
        self._shard_of = shard_of
        self._uia = uia
        #: A ``DeviceListSource`` (GET /keys/changes); None where it is not served.
        self._device_lists = device_lists
        self._shard_counts = shard_counts or {}
        #: Set by :meth:`attach_federation` where this process talks to other servers.
        self._federation: Any = None
        self._queue: Any = None

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def register(self) -> None:
        """Register the write commands (run on the owner of the user's ``device_lists`` shard)."""
        self._dispatcher.register("e2e.remote_changed", "device_lists", self._remote_changed)
        self._dispatcher.register("e2e.upload", "device_lists", self._upload)
        self._dispatcher.register("e2e.devices_changed", "device_lists", self._devices_changed)
        self._dispatcher.register("e2e.cross_signing", "device_lists", self._cross_signing)
        self._dispatcher.register("e2e.signatures", "device_lists", self._signatures)

    def _allocator(self, user_id: str) -> Any:
        allocator = self._allocators.get(self._shard_of(user_id))
        if allocator is None:
            raise invalid_param("device_lists shard not owned here")
        return allocator

    @staticmethod
    def _on_row(allocator: Any) -> Callable[[Any], None]:
        return lambda row: allocator.attach(row.stream_position, row.to_payload())

    # -- /keys/upload -----------------------------------------------------------------

    async def upload(self, requester: Any, body: Any) -> dict[str, Any]:
        """POST /keys/upload: store the device's keys; the response carries its one-time key counts.

        Device keys different from those stored replace them and are announced
        (the spec does not forbid it and Synapse does the same; clients pin the
        identity keys they first saw and warn when they change). A one-time key
        ID re-uploaded with other contents is refused, as Synapse does.
        """
        device_keys, one_time, fallback = parse_upload(body, requester.user_id, requester.device_id)
        result = await self._dispatcher.run("e2e.upload", requester.user_id, {
            "user_id": requester.user_id, "device_id": requester.device_id, "device_keys": device_keys,
            "one_time_keys": [list(k) for k in one_time], "fallback_keys": [list(k) for k in fallback],
        })
        counts = dict(result["one_time_key_counts"])
        counts.setdefault("signed_curve25519", 0)
        return {"one_time_key_counts": counts}

    async def _upload(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id, device_id = str(args["user_id"]), str(args["device_id"])
        allocator = self._allocator(user_id)
        try:
            result = await self._store.upload_keys(
                allocator, user_id, device_id, args.get("device_keys"),
                [tuple(k) for k in args.get("one_time_keys") or []], [tuple(k) for k in args.get("fallback_keys") or []],
                self._now_ms(), on_row=self._on_row(allocator),
            )
        except OneTimeKeyConflict as e:
            # Synapse answers 400 too; the spec names no errcode.
            raise invalid_param(f"One-time key {e.key_id} already exists with other contents")
        if result.row is not None:
            self._announce_remote(user_id, [device_id], result.row.stream_position)
        return {"one_time_key_counts": result.counts,
                "position": result.row.stream_position if result.row is not None else None}

    # -- device changes (observers of the accounts area) ---------------------------------

    async def on_devices_changed(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Devices of a local user were created, renamed or deleted: announce it (and drop the
        keys of deleted ones) on the owner of the user's shard."""
        if device_ids:
            await self._dispatcher.run("e2e.devices_changed", user_id,
                                       {"user_id": user_id, "device_ids": sorted(set(device_ids))})

    async def _devices_changed(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args["user_id"])
        device_ids = args.get("device_ids")
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise bad_json("'device_ids' must be a list of strings")
        allocator = self._allocator(user_id)
        row = await self._store.devices_changed(allocator, user_id, device_ids, on_row=self._on_row(allocator))
        self._announce_remote(user_id, device_ids, row.stream_position)
        return {"position": row.stream_position}

    # -- /keys/query ----------------------------------------------------------------------

    async def query(self, requester: Any, body: Any) -> dict[str, Any]:
        """POST /keys/query for local users; remote servers are listed in ``failures``."""
        wanted = parse_query(body)
        local = {u: d for u, d in wanted.items() if _server_of(u) == self._server_name}
        response = await self._local_query(requester.user_id, local)
        response["failures"] = {}
        await self._remote_query(wanted, response)
        return response

    async def _local_query(self, viewer: Optional[str], local: Mapping[str, list[str]]) -> dict[str, Any]:
        """Device and cross-signing keys of local users (``user_signing_keys`` only for ``viewer`` themself)."""
        stored = await self._store.get_device_keys(local) if local else {}
        cross = await self._store.get_cross_signing_keys(local) if local else {}
        signatures = await self._store.get_signatures(local, viewer or "") if local else {}
        device_keys: dict[str, dict[str, Any]] = {}
        for user_id, devices in local.items():
            found = stored.get(user_id, {})
            chosen = devices or sorted(found)
            out = {}
            for device_id in chosen:
                if device_id not in found:
                    continue
                keys, display_name = found[device_id]
                keys = _with_signatures(keys, signatures.get((user_id, device_id)))
                if display_name is not None:
                    keys["unsigned"] = {"device_display_name": display_name}
                out[device_id] = keys
            device_keys[user_id] = out
        response: dict[str, Any] = {"device_keys": device_keys, "master_keys": {}, "self_signing_keys": {}}
        for user_id in local:
            keys = cross.get(user_id, {})
            if "master" in keys:
                master = keys["master"]
                response["master_keys"][user_id] = _with_signatures(
                    master, signatures.get((user_id, cross_signing_public_key(master))))
            if "self_signing" in keys:
                response["self_signing_keys"][user_id] = keys["self_signing"]
            if user_id == viewer and "user_signing" in keys:
                response["user_signing_keys"] = {user_id: keys["user_signing"]}
        return response

    async def _remote_query(self, wanted: Mapping[str, list[str]], response: dict[str, Any]) -> None:
        """Ask each other server for its users' keys (``/user/keys/query``); unreachable ones go to ``failures``."""
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in wanted.items():
            if _server_of(user_id) != self._server_name:
                by_server.setdefault(_server_of(user_id), {})[user_id] = devices
        if not by_server:
            return

        async def ask(server: str, users: dict[str, list[str]]) -> None:
            if self._federation is None:
                response["failures"][server] = {"status": 503, "message": "Federation is not available here"}
                return
            try:
                answer = await self._federation.post_json(server, "/_matrix/federation/v1/user/keys/query",
                                                          {"device_keys": users})
            except Exception as e:
                logger.info("keys query to %s failed: %r", server, e)
                response["failures"][server] = _failure(e)
                return
            if not isinstance(answer, dict):
                response["failures"][server] = {"status": 502, "message": "Malformed answer"}
                return
            for field in ("device_keys", "master_keys", "self_signing_keys"):
                got = answer.get(field)
                if not isinstance(got, dict):
                    continue
                for user_id, value in got.items():
                    # Only the answering server speaks for its users.
                    if user_id in users and isinstance(value, dict):
                        response.setdefault(field, {})[user_id] = value
            for user_id in users:
                response["device_keys"].setdefault(user_id, {})

        await _gather([ask(server, users) for server, users in sorted(by_server.items())])

    # -- federation: the other servers ask ---------------------------------------------------

    async def federation_query(self, origin: str, body: Any) -> dict[str, Any]:
        """``POST /_matrix/federation/v1/user/keys/query``: keys of our users."""
        wanted = parse_query(body)
        local = {u: d for u, d in wanted.items() if _server_of(u) == self._server_name}
        return await self._local_query(None, local)

    async def federation_claim(self, origin: str, body: Any) -> dict[str, Any]:
        """``POST /_matrix/federation/v1/user/keys/claim``: one key per device of our users."""
        wanted = [w for w in parse_claim(body) if _server_of(w[0]) == self._server_name]
        claimed = await self._store.claim_keys(wanted) if wanted else {}
        out: dict[str, dict[str, Any]] = {}
        for (user_id, device_id), keys in claimed.items():
            out.setdefault(user_id, {})[device_id] = keys
        return {"one_time_keys": out}

    async def federation_devices(self, origin: str, user_id: str) -> dict[str, Any]:
        """``GET /_matrix/federation/v1/user/devices/{userId}``: every device of a local user."""
        _check_user_id(user_id)
        if _server_of(user_id) != self._server_name:
            raise invalid_param("Not a user of this server")
        devices = await self._store.get_all_devices(user_id)
        cross = (await self._store.get_cross_signing_keys([user_id])).get(user_id, {})
        signatures = await self._store.get_signatures([user_id], user_id)
        out: dict[str, Any] = {"user_id": user_id, "stream_id": await self._store.get_user_stream_id(user_id),
                               "devices": []}
        for device_id, keys, display_name in devices:
            entry: dict[str, Any] = {"device_id": device_id}
            if keys is not None:
                entry["keys"] = _with_signatures(keys, signatures.get((user_id, device_id)))
            if display_name is not None:
                entry["device_display_name"] = display_name
            out["devices"].append(entry)
        if "master" in cross:
            master = cross["master"]
            out["master_key"] = _with_signatures(master, signatures.get((user_id, cross_signing_public_key(master))))
        if "self_signing" in cross:
            out["self_signing_key"] = cross["self_signing"]
        return out

    # -- federation: device list updates ---------------------------------------------------------

    def attach_federation(self, client: Any, queue: Any, edu_handlers: dict[str, Any]) -> None:
        """Query and claim remote keys through ``client``, send device list EDUs through ``queue``
        and receive the other servers' (``edu_handlers``: the federation room logic's table)."""
        self._federation = client
        self._queue = queue
        edu_handlers["m.device_list_update"] = self._on_device_list_edu
        edu_handlers["m.signing_key_update"] = self._on_signing_key_edu
        edu_handlers["org.matrix.signing_key_update"] = self._on_signing_key_edu

    async def _on_device_list_edu(self, origin: str, content: Any) -> None:
        user_id = content.get("user_id") if isinstance(content, dict) else None
        if not isinstance(user_id, str) or not _USER_ID.match(user_id) or _server_of(user_id) != origin:
            raise bad_json("m.device_list_update for a user of another server")
        # No remote keys are cached here: announcing the change makes our clients
        # query again, and each query reaches the user's server.
        await self._dispatcher.run("e2e.remote_changed", user_id, {"user_id": user_id})

    async def _on_signing_key_edu(self, origin: str, content: Any) -> None:
        await self._on_device_list_edu(origin, content)

    async def _remote_changed(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args["user_id"])
        if _server_of(user_id) == self._server_name:
            raise invalid_param("Not a remote user")
        allocator = self._allocator(user_id)
        row = await self._store.announce(allocator, user_id, on_row=self._on_row(allocator))
        return {"position": row.stream_position}

    def _announce_remote(self, user_id: str, device_ids: Sequence[str], position: int) -> None:
        """Queue ``m.device_list_update`` EDUs for the servers sharing a room with the user (best effort:
        a lost EDU is caught up by the next one, whose ``prev_id`` the receiver does not know)."""
        if self._queue is None:
            return
        self._background(self._send_device_updates(user_id, list(device_ids), position))

    def _announce_signing_keys(self, user_id: str) -> None:
        if self._queue is None:
            return
        self._background(self._send_signing_keys(user_id))

    def _background(self, coro: Any) -> None:
        from twisted.internet import defer

        d = defer.ensureDeferred(coro)
        d.addErrback(lambda f: logger.warning("device list EDU not queued: %s", f.getErrorMessage()))

    async def _send_device_updates(self, user_id: str, device_ids: list[str], position: int) -> None:
        servers = await self._store.get_remote_servers_sharing(user_id, self._server_name)
        if not servers:
            return
        devices = {d: (k, n) for d, k, n in await self._store.get_all_devices(user_id)}
        for device_id in device_ids:
            content: dict[str, Any] = {"user_id": user_id, "device_id": device_id, "stream_id": position,
                                       # A predecessor the receiver never saw: Synapse then re-reads the whole
                                       # list with GET /user/devices instead of trusting this one update.
                                       "prev_id": [position - 1] if position > 1 else []}
            if device_id not in devices:
                content["deleted"] = True
            else:
                keys, display_name = devices[device_id]
                if keys is not None:
                    content["keys"] = keys
                if display_name is not None:
                    content["device_display_name"] = display_name
            for server in servers:
                await self._queue.enqueue_edu(server, {"edu_type": "m.device_list_update", "content": content})

    async def _send_signing_keys(self, user_id: str) -> None:
        servers = await self._store.get_remote_servers_sharing(user_id, self._server_name)
        if not servers:
            return
        cross = (await self._store.get_cross_signing_keys([user_id])).get(user_id, {})
        content: dict[str, Any] = {"user_id": user_id}
        if "master" in cross:
            content["master_key"] = cross["master"]
        if "self_signing" in cross:
            content["self_signing_key"] = cross["self_signing"]
        for server in servers:
            await self._queue.enqueue_edu(server, {"edu_type": "m.signing_key_update", "content": content})

    # -- /keys/claim ----------------------------------------------------------------------

    async def claim(self, requester: Any, body: Any) -> dict[str, Any]:
        """POST /keys/claim: one key per local device asked for (each one-time key handed out once)."""
        wanted = parse_claim(body)
        local = [w for w in wanted if _server_of(w[0]) == self._server_name]
        failures: dict[str, Any] = {}
        claimed = await self._store.claim_keys(local) if local else {}
        out: dict[str, dict[str, Any]] = {}
        for (user_id, device_id), keys in claimed.items():
            out.setdefault(user_id, {})[device_id] = keys
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, device_id, algorithm in wanted:
            if _server_of(user_id) != self._server_name:
                by_server.setdefault(_server_of(user_id), {}).setdefault(user_id, {})[device_id] = algorithm

        async def ask(server: str, users: dict[str, dict[str, str]]) -> None:
            if self._federation is None:
                failures[server] = {"status": 503, "message": "Federation is not available here"}
                return
            try:
                answer = await self._federation.post_json(server, "/_matrix/federation/v1/user/keys/claim",
                                                          {"one_time_keys": users})
            except Exception as e:
                logger.info("keys claim to %s failed: %r", server, e)
                failures[server] = _failure(e)
                return
            got = answer.get("one_time_keys") if isinstance(answer, dict) else None
            if not isinstance(got, dict):
                failures[server] = {"status": 502, "message": "Malformed answer"}
                return
            for user_id, devices in got.items():
                if user_id in users and isinstance(devices, dict):
                    out[user_id] = {d: k for d, k in devices.items() if d in users[user_id] and isinstance(k, dict)}

        await _gather([ask(server, users) for server, users in sorted(by_server.items())])
        return {"one_time_keys": out, "failures": failures}

    # -- /keys/changes ------------------------------------------------------------------------

    async def changes(self, requester: Any, from_token: Optional[str], to_token: Optional[str]) -> dict[str, Any]:
        """GET /keys/changes: users whose keys changed (or who started / stopped sharing a room) between two sync tokens."""
        if not from_token or not to_token:
            raise MatrixError(400, Codes.MISSING_PARAM, "'from' and 'to' are required")
        if self._device_lists is None:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Device lists are not served here")
        try:
            since = StreamToken.decode(from_token, self._shard_counts)
            upto = StreamToken.decode(to_token, self._shard_counts)
        except InvalidTokenError as e:
            raise invalid_param(f"Invalid token: {e}")
        if not since.device_lists or not upto.device_lists:
            return {"changed": [], "left": []}
        rooms = await self._store.get_user_room_ids(requester.user_id)
        changed, left = await self._device_lists.changes(
            requester.user_id, rooms, since.events, upto.events, since.device_lists, upto.device_lists)
        return {"changed": changed, "left": left}

    # -- cross-signing -------------------------------------------------------------------------

    async def upload_device_signing(self, requester: Any, body: Any) -> None:
        """POST /keys/device_signing/upload: UIA unless no master key exists yet or nothing changes."""
        if not isinstance(body, dict):
            raise bad_json("Body must be a JSON object")
        user_id = requester.user_id
        keys = {t: parse_cross_signing_key(body[_BODY_FIELDS[t]], user_id, t)
                for t in CROSS_SIGNING_TYPES if body.get(_BODY_FIELDS[t]) is not None}
        if not keys:
            raise MatrixError(400, Codes.MISSING_PARAM, "No cross-signing key given")
        existing = (await self._store.get_cross_signing_keys([user_id])).get(user_id, {})
        master = keys.get("master") or existing.get("master")
        for key_type in ("self_signing", "user_signing"):
            if key_type in keys:
                if master is None:
                    raise invalid_param(f"No master key to verify the {key_type} key with")
                if not verify_by(keys[key_type], user_id, cross_signing_public_key(master)):
                    raise MatrixError(400, Codes.INVALID_SIGNATURE, f"The {key_type} key is not signed by the master key")
        unchanged = "master" in existing and all(existing.get(t) == k for t, k in keys.items())
        if "master" in existing and not unchanged:
            if self._uia is None:
                raise MatrixError(401, Codes.FORBIDDEN, "Replacing cross-signing keys needs interactive auth")
            session_id, _ = await self._uia.check(
                "device_signing_upload", [[PASSWORD]], body.get("auth"), user_id, self._server_name,
                params={"keys": _fingerprint(keys)},
            )
            await self._dispatcher.run("e2e.cross_signing", user_id, {"user_id": user_id, "keys": keys})
            await self._uia.finish(session_id)
            return
        if not unchanged:
            await self._dispatcher.run("e2e.cross_signing", user_id, {"user_id": user_id, "keys": keys})

    async def _cross_signing(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args["user_id"])
        keys = args.get("keys")
        if not isinstance(keys, dict) or not set(keys) <= set(CROSS_SIGNING_TYPES):
            raise bad_json("'keys' must map cross-signing key types to keys")
        allocator = self._allocator(user_id)
        row = await self._store.set_cross_signing_keys(allocator, user_id, keys, self._now_ms(),
                                                       on_row=self._on_row(allocator))
        if row is not None:
            self._announce_signing_keys(user_id)
        return {"position": row.stream_position if row is not None else None}

    async def upload_signatures(self, requester: Any, body: Any) -> dict[str, Any]:
        """POST /keys/signatures/upload: verify each signature, store the good ones, report the rest."""
        if not isinstance(body, dict):
            raise bad_json("Body must be a JSON object")
        user_id = requester.user_id
        targets = [u for u in body]
        for target in targets:
            _check_user_id(target)
            if not isinstance(body[target], dict):
                raise bad_json(f"Signatures for {target} must be an object")
        local = [u for u in targets if _server_of(u) == self._server_name]
        cross = await self._store.get_cross_signing_keys(set(local) | {user_id})
        devices = await self._store.get_device_keys([user_id])
        mine = cross.get(user_id, {})
        failures: dict[str, dict[str, Any]] = {}
        accepted: list[list[str]] = []

        def fail(target: str, key_id: str, errcode: str, message: str) -> None:
            failures.setdefault(target, {})[key_id] = {"errcode": errcode, "error": message}

        for target in targets:
            for key_id, signed in body[target].items():
                if not isinstance(signed, dict):
                    fail(target, key_id, Codes.BAD_JSON, "Signed object must be an object")
                    continue
                if target not in local:
                    fail(target, key_id, Codes.UNRECOGNIZED, "Signing keys of other servers is not supported yet")
                    continue
                found = self._signature_candidates(user_id, target, key_id, signed, mine, cross.get(target, {}),
                                                   devices.get(user_id, {}))
                if isinstance(found, tuple):
                    fail(target, key_id, *found)
                    continue
                accepted.extend([target, key_id, sk, sig] for sk, sig in found)
        if accepted:
            await self._dispatcher.run("e2e.signatures", user_id, {"signer": user_id, "signatures": accepted})
        return {"failures": failures}

    def _signature_candidates(self, user_id: str, target: str, key_id: str, signed: Mapping[str, Any],
                              mine: Mapping[str, Any], theirs: Mapping[str, Any],
                              my_devices: Mapping[str, Any]) -> Any:
        """The ``(signing key id, signature)`` pairs of ``signed`` that verify, or ``(errcode, error)``."""
        if target == user_id and key_id in my_devices:
            stored, _ = my_devices[key_id]
            signer_key = mine.get("self_signing")
            if signer_key is None:
                return Codes.MISSING_PARAM, "No self-signing key uploaded"
        elif target == user_id and "master" in mine and key_id == cross_signing_public_key(mine["master"]):
            stored = mine["master"]
            signer_key = None  # signed by one of the user's devices
        elif target != user_id and "master" in theirs and key_id == cross_signing_public_key(theirs["master"]):
            stored = theirs["master"]
            signer_key = mine.get("user_signing")
            if signer_key is None:
                return Codes.MISSING_PARAM, "No user-signing key uploaded"
        else:
            return Codes.NOT_FOUND, "Unknown key"
        unsigned_view = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        if unsigned_view != {k: v for k, v in stored.items() if k not in ("signatures", "unsigned")}:
            return Codes.INVALID_PARAM, "Signed object does not match the stored key"
        all_sigs = signed.get("signatures")
        sigs = all_sigs.get(user_id) if isinstance(all_sigs, dict) else None
        if not isinstance(sigs, dict) or not sigs:
            return Codes.INVALID_SIGNATURE, "No signature by the uploader"
        good = []
        for signing_key_id, signature in sigs.items():
            if not isinstance(signing_key_id, str) or not isinstance(signature, str):
                return Codes.BAD_JSON, "Signatures must be strings"
            if signer_key is not None:
                public = cross_signing_public_key(signer_key)
                if signing_key_id != f"ed25519:{public}":
                    continue
            else:
                # A device signing the master key: its ed25519 device key.
                algorithm, _, device_id = signing_key_id.partition(":")
                device = my_devices.get(device_id)
                public = device[0].get("keys", {}).get(signing_key_id) if device is not None else None
                if algorithm != "ed25519" or not isinstance(public, str):
                    continue
            if not verify_by({**stored, "signatures": {user_id: {signing_key_id: signature}}}, user_id, public,
                             signing_key_id):
                return Codes.INVALID_SIGNATURE, f"Invalid signature by {signing_key_id}"
            good.append((signing_key_id, signature))
        if not good:
            return Codes.INVALID_SIGNATURE, "No signature by a key that may sign this key"
        return good

    async def _signatures(self, args: dict[str, Any]) -> dict[str, Any]:
        signer = str(args["signer"])
        signatures = args.get("signatures")
        if not isinstance(signatures, list) or not all(
                isinstance(s, list) and len(s) == 4 and all(isinstance(x, str) for x in s) for s in signatures):
            raise bad_json("'signatures' must be a list of [target user, key, signing key, signature]")
        allocator = self._allocator(signer)
        await self._store.add_signatures(allocator, signer, [tuple(s) for s in signatures],
                                         on_row=self._on_row(allocator))
        return {}


def _failure(e: Exception) -> dict[str, Any]:
    """A ``failures`` entry for a server that did not answer usefully."""
    code = getattr(e, "code", None)
    return {"status": code if isinstance(code, int) else 503, "message": str(e)[:200] or type(e).__name__}


async def _gather(coros: list[Any]) -> None:
    from twisted.internet import defer

    if coros:
        await defer.gatherResults([defer.ensureDeferred(c) for c in coros], consumeErrors=True)


def _with_signatures(key: Mapping[str, Any], extra: Optional[Mapping[str, Mapping[str, str]]]) -> dict[str, Any]:
    """A copy of ``key`` with uploaded signatures merged into its ``signatures``."""
    out = dict(key)
    if extra:
        merged = {signer: dict(sigs) for signer, sigs in (key.get("signatures") or {}).items()}
        for signer, sigs in extra.items():
            merged.setdefault(signer, {}).update(sigs)
        out["signatures"] = merged
    return out
