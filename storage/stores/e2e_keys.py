"""End-to-end encryption keys and the ``device_lists`` stream (schema 0014).

Writes that change what other users must re-query (device keys, devices
deleted, cross-signing keys and signatures) allocate a position of the
user's ``device_lists`` shard in the same transaction, so the change and its
announcement commit together (DESIGN.md invariant 1); they run on the owner
of that shard, whose allocator publishes after commit. One-time keys are
claimed from any instance: ``DELETE ... RETURNING`` with ``SKIP LOCKED``
hands each key to exactly one claimer.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import attrs
from twisted.internet import defer

from homeserver.core.errors import OneTimeKeyConflict
from storage.stores.stream_tables import UserStreamReads


@attrs.frozen
class DeviceListRow:
    """A position of the ``device_lists`` stream: ``user_id``'s devices or keys changed."""

    stream_shard: int
    stream_position: int
    user_id: str

    def to_payload(self) -> dict[str, Any]:
        """The bus payload: whose list changed (details stay in PostgreSQL)."""
        return {"user_id": self.user_id}

    @classmethod
    def from_payload(cls, shard: int, position: int, payload: Mapping[str, Any]) -> "DeviceListRow":
        """Decode a bus entry (``ValueError`` if malformed)."""
        user_id = payload.get("user_id") if isinstance(payload, Mapping) else None
        if not isinstance(user_id, str):
            raise ValueError("bad device_lists payload")
        return cls(shard, position, user_id)


@attrs.frozen
class UploadResult:
    """What an upload changed and the device's one-time key counts after it."""

    counts: dict[str, int]
    row: Optional[DeviceListRow]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class E2EKeyStore(UserStreamReads):
    """Keys of local devices and users, and the device list stream."""

    _stream_table = "device_lists_stream"
    _stream_row = DeviceListRow
    _stream_name = "device_list"

    def __init__(self, database: Any) -> None:
        self._db = database

    # -- writes on the owner of the user's device_lists shard ---------------------

    def _announce_txn(self, txn: Any, allocator: Any, user_id: str, device_ids: Sequence[Optional[str]],
                      on_row: Optional[Callable[[DeviceListRow], None]]) -> DeviceListRow:
        position = allocator.allocate(txn)
        for device_id in device_ids or [None]:
            txn.execute(
                "INSERT INTO device_lists_stream (stream_shard, stream_position, user_id, device_id)"
                " VALUES (%s, %s, %s, %s)",
                (allocator.shard, position, user_id, device_id),
            )
        row = DeviceListRow(allocator.shard, position, user_id)
        if on_row is not None:
            on_row(row)
        return row

    def upload_keys(self, allocator: Any, user_id: str, device_id: str, device_keys: Optional[Mapping[str, Any]],
                    one_time_keys: Sequence[tuple[str, str, Any]], fallback_keys: Sequence[tuple[str, str, Any]],
                    now_ms: int, on_row: Optional[Callable[[DeviceListRow], None]] = None,
                    ) -> "defer.Deferred[UploadResult]":
        """Store a /keys/upload in one transaction; returns the one-time key counts.

        New or changed device keys take a ``device_lists`` position. A
        one-time key ID already stored with other contents raises
        :class:`OneTimeKeyConflict` (nothing is written); the same contents
        again are ignored (a retried request). A fallback key replaces the
        previous one of its algorithm (unused again), unless it is the same.
        """

        def txn_fn(txn: Any) -> UploadResult:
            row = None
            for algorithm, key_id, key in one_time_keys:
                txn.execute(
                    "SELECT key_json FROM e2e_one_time_keys WHERE user_id = %s AND device_id = %s"
                    " AND algorithm = %s AND key_id = %s",
                    (user_id, device_id, algorithm, key_id),
                )
                found = txn.fetchone()
                if found is not None:
                    if json.loads(found[0]) != key:
                        raise OneTimeKeyConflict(f"{algorithm}:{key_id}")
                    continue
                txn.execute(
                    "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, ts)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (user_id, device_id, algorithm, key_id, _dumps(key), now_ms),
                )
            for algorithm, key_id, key in fallback_keys:
                txn.execute(
                    "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
                    " VALUES (%s, %s, %s, %s, %s, FALSE) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
                    " SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = FALSE"
                    " WHERE e2e_fallback_keys.key_id <> EXCLUDED.key_id OR e2e_fallback_keys.key_json <> EXCLUDED.key_json",
                    (user_id, device_id, algorithm, key_id, _dumps(key)),
                )
            if device_keys is not None:
                text = _dumps(device_keys)
                txn.execute(
                    "SELECT key_json FROM e2e_device_keys WHERE user_id = %s AND device_id = %s",
                    (user_id, device_id),
                )
                found = txn.fetchone()
                if found is None or json.loads(found[0]) != json.loads(text):
                    txn.execute(
                        "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json, ts = EXCLUDED.ts",
                        (user_id, device_id, text, now_ms),
                    )
                    row = self._announce_txn(txn, allocator, user_id, [device_id], on_row)
            return UploadResult(self._counts_txn(txn, user_id, device_id), row)

        return self._db.run_interaction("upload_e2e_keys", txn_fn)

    def devices_changed(self, allocator: Any, user_id: str, device_ids: Sequence[str],
                        on_row: Optional[Callable[[DeviceListRow], None]] = None) -> "defer.Deferred[DeviceListRow]":
        """Announce that devices of ``user_id`` were created, renamed or deleted.

        Keys of the listed devices that no longer exist are deleted in the
        same transaction (a deleted device's keys must not be handed out).
        """

        def txn_fn(txn: Any) -> DeviceListRow:
            ids = list(device_ids)
            txn.execute("SELECT device_id FROM devices WHERE user_id = %s AND device_id = ANY(%s)", (user_id, ids))
            alive = {r[0] for r in txn.fetchall()}
            gone = [d for d in ids if d not in alive]
            if gone:
                for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
                    txn.execute(
                        f"DELETE FROM {table} WHERE user_id = %s AND device_id = ANY(%s)",  # table: fixed names
                        (user_id, gone),
                    )
                txn.execute(
                    "DELETE FROM e2e_cross_signing_signatures WHERE target_user = %s AND target_key_id = ANY(%s)",
                    (user_id, gone),
                )
            return self._announce_txn(txn, allocator, user_id, ids, on_row)

        return self._db.run_interaction("e2e_devices_changed", txn_fn)

    def set_cross_signing_keys(self, allocator: Any, user_id: str, keys: Mapping[str, Mapping[str, Any]], now_ms: int,
                               on_row: Optional[Callable[[DeviceListRow], None]] = None,
                               ) -> "defer.Deferred[Optional[DeviceListRow]]":
        """Replace the user's cross-signing keys of the given types (``master``, ``self_signing``,
        ``user_signing``); a new master key drops the signatures made on the old one."""

        def txn_fn(txn: Any) -> Optional[DeviceListRow]:
            changed = False
            for key_type, key in sorted(keys.items()):
                text = _dumps(key)
                txn.execute("SELECT key_json FROM e2e_cross_signing_keys WHERE user_id = %s AND key_type = %s",
                            (user_id, key_type))
                found = txn.fetchone()
                if found is not None and json.loads(found[0]) == key:
                    continue
                txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json, ts) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = EXCLUDED.key_json, ts = EXCLUDED.ts",
                    (user_id, key_type, text, now_ms),
                )
                changed = True
            if not changed:
                return None
            return self._announce_txn(txn, allocator, user_id, [], on_row)

        return self._db.run_interaction("set_cross_signing_keys", txn_fn)

    def add_signatures(self, allocator: Any, signer: str, signatures: Sequence[tuple[str, str, str, str]],
                       on_row: Optional[Callable[[DeviceListRow], None]] = None) -> "defer.Deferred[None]":
        """Store ``(target_user, target_key_id, signing_key_id, signature)`` made by ``signer``.

        The signer's own device list changes (their keys gained signatures);
        signatures on other users' keys are only seen by the signer, whose list
        is announced as well so their other devices re-query.
        """

        def txn_fn(txn: Any) -> None:
            for target_user, target_key_id, signing_key_id, signature in signatures:
                txn.execute(
                    "INSERT INTO e2e_cross_signing_signatures (signer, signing_key_id, target_user, target_key_id,"
                    " signature) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (target_user, target_key_id, signer,"
                    " signing_key_id) DO UPDATE SET signature = EXCLUDED.signature",
                    (signer, signing_key_id, target_user, target_key_id, signature),
                )
            if signatures:
                self._announce_txn(txn, allocator, signer, [], on_row)

        return self._db.run_interaction("add_e2e_signatures", txn_fn)

    # -- claims (any instance) -------------------------------------------------------

    def claim_keys(self, wanted: Sequence[tuple[str, str, str]]) -> "defer.Deferred[dict[tuple[str, str], dict[str, Any]]]":
        """For each ``(user_id, device_id, algorithm)``, take one one-time key (deleted, so handed out
        once), else the device's fallback key of that algorithm (marked used, handed out again).

        Returns ``(user_id, device_id) -> {"<algorithm>:<key_id>": key}``.
        """

        def txn_fn(txn: Any) -> dict[tuple[str, str], dict[str, Any]]:
            out: dict[tuple[str, str], dict[str, Any]] = {}
            for user_id, device_id, algorithm in wanted:
                txn.execute(
                    "DELETE FROM e2e_one_time_keys WHERE ctid = (SELECT ctid FROM e2e_one_time_keys"
                    " WHERE user_id = %s AND device_id = %s AND algorithm = %s ORDER BY key_id LIMIT 1"
                    " FOR UPDATE SKIP LOCKED) RETURNING key_id, key_json",
                    (user_id, device_id, algorithm),
                )
                found = txn.fetchone()
                if found is None:
                    txn.execute(
                        "UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = %s AND device_id = %s"
                        " AND algorithm = %s RETURNING key_id, key_json",
                        (user_id, device_id, algorithm),
                    )
                    found = txn.fetchone()
                if found is not None:
                    out.setdefault((user_id, device_id), {})[f"{algorithm}:{found[0]}"] = json.loads(found[1])
            return out

        return self._db.run_interaction("claim_e2e_keys", txn_fn)

    # -- reads ----------------------------------------------------------------------

    def _counts_txn(self, txn: Any, user_id: str, device_id: str) -> dict[str, int]:
        txn.execute_prepared(
            "e2e_one_time_key_counts",
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = %s AND device_id = %s GROUP BY algorithm",
            (user_id, device_id),
        )
        return {r[0]: int(r[1]) for r in txn.fetchall()}

    def get_key_counts(self, user_id: str, device_id: str) -> "defer.Deferred[tuple[dict[str, int], list[str]]]":
        """The device's unclaimed one-time keys per algorithm and its unused fallback key algorithms."""

        def txn_fn(txn: Any) -> tuple[dict[str, int], list[str]]:
            counts = self._counts_txn(txn, user_id, device_id)
            txn.execute(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = %s AND device_id = %s AND NOT used"
                " ORDER BY algorithm",
                (user_id, device_id),
            )
            return counts, [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("get_e2e_key_counts", txn_fn)

    def get_device_keys(self, user_ids: Iterable[str]) -> "defer.Deferred[dict[str, dict[str, tuple[dict[str, Any], Optional[str]]]]]":
        """``user -> device -> (device_keys, display name)`` of the users' devices that uploaded keys."""
        users = sorted(set(user_ids))

        def txn_fn(txn: Any) -> dict[str, dict[str, tuple[dict[str, Any], Optional[str]]]]:
            txn.execute(
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                " WHERE k.user_id = ANY(%s)",
                (users,),
            )
            out: dict[str, dict[str, tuple[dict[str, Any], Optional[str]]]] = {}
            for user_id, device_id, key_json, name in txn.fetchall():
                out.setdefault(user_id, {})[device_id] = (json.loads(key_json), name)
            return out

        return self._db.run_interaction("get_e2e_device_keys", txn_fn)

    def get_cross_signing_keys(self, user_ids: Iterable[str]) -> "defer.Deferred[dict[str, dict[str, dict[str, Any]]]]":
        """``user -> key_type -> key`` of the users' cross-signing keys."""
        users = sorted(set(user_ids))

        def txn_fn(txn: Any) -> dict[str, dict[str, dict[str, Any]]]:
            txn.execute("SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ANY(%s)", (users,))
            out: dict[str, dict[str, dict[str, Any]]] = {}
            for user_id, key_type, key_json in txn.fetchall():
                out.setdefault(user_id, {})[key_type] = json.loads(key_json)
            return out

        return self._db.run_interaction("get_cross_signing_keys", txn_fn)

    def get_signatures(self, target_users: Iterable[str], viewer: str,
                       ) -> "defer.Deferred[dict[tuple[str, str], dict[str, dict[str, str]]]]":
        """Uploaded signatures on the keys of ``target_users`` that ``viewer`` may see: those made by the
        key owner themself, and those ``viewer`` made. ``(user, key_id) -> signer -> signing key -> sig``."""
        users = sorted(set(target_users))

        def txn_fn(txn: Any) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
            txn.execute(
                "SELECT target_user, target_key_id, signer, signing_key_id, signature FROM e2e_cross_signing_signatures"
                " WHERE target_user = ANY(%s) AND (signer = target_user OR signer = %s)",
                (users, viewer),
            )
            out: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
            for target_user, key_id, signer, signing_key_id, signature in txn.fetchall():
                out.setdefault((target_user, key_id), {}).setdefault(signer, {})[signing_key_id] = signature
            return out

        return self._db.run_interaction("get_e2e_signatures", txn_fn)

    # -- the device_lists stream ------------------------------------------------------

    def get_changed_users(self, ranges: Mapping[int, tuple[int, int]]) -> "defer.Deferred[set[str]]":
        """Users with a device list change in ``after < position <= upto`` of each shard."""
        items = [(s, a, u) for s, (a, u) in ranges.items() if u > a]

        def txn_fn(txn: Any) -> set[str]:
            out: set[str] = set()
            for shard, after, upto in items:
                txn.execute(
                    "SELECT DISTINCT user_id FROM device_lists_stream WHERE stream_shard = %s"
                    " AND stream_position > %s AND stream_position <= %s",
                    (shard, after, upto),
                )
                out.update(r[0] for r in txn.fetchall())
            return out

        return self._db.run_interaction("get_device_list_changed_users", txn_fn)

    # -- who shares rooms (current membership) --------------------------------------------

    def get_room_mates(self, user_id: str) -> "defer.Deferred[set[str]]":
        """Users joined to a room the user is joined to (the user included)."""

        def txn_fn(txn: Any) -> set[str]:
            txn.execute(
                "SELECT DISTINCT o.user_id FROM room_memberships m JOIN room_memberships o ON o.room_id = m.room_id"
                " WHERE m.user_id = %s AND m.membership = 'join' AND o.membership = 'join'",
                (user_id,),
            )
            return {r[0] for r in txn.fetchall()}

        return self._db.run_interaction("get_room_mates", txn_fn)

    def get_joined_rooms(self, user_id: str) -> "defer.Deferred[list[str]]":
        """The rooms the user is joined to now."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT room_id FROM room_memberships WHERE user_id = %s AND membership = 'join'", (user_id,))
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("get_joined_rooms_e2e", txn_fn)

    def get_membership_changes(self, rooms_by_shard: Mapping[int, tuple[Sequence[str], int, int]],
                               ) -> "defer.Deferred[list[tuple[str, str, str]]]":
        """``(room_id, user_id, membership)`` of member events in the rooms in ``after < position <= upto``
        of their events shard, oldest first."""
        items = [(s, list(rooms), a, u) for s, (rooms, a, u) in rooms_by_shard.items() if u > a and rooms]

        def txn_fn(txn: Any) -> list[tuple[str, str, str]]:
            out: list[tuple[int, str, str, str]] = []
            for shard, rooms, after, upto in items:
                txn.execute_prepared(
                    "e2e_membership_changes",
                    "SELECT stream_position, room_id, state_key, membership FROM events WHERE room_id = ANY(%s)"
                    " AND stream_shard = %s AND stream_position > %s AND stream_position <= %s"
                    " AND type = 'm.room.member' AND state_key IS NOT NULL AND membership IS NOT NULL",
                    (rooms, shard, after, upto),
                )
                out.extend(txn.fetchall())
            out.sort()
            return [(room, user, membership) for _, room, user, membership in out]

        return self._db.run_interaction("get_membership_changes_e2e", txn_fn)

    def get_room_members_joined(self, room_ids: Sequence[str]) -> "defer.Deferred[set[str]]":
        """Users joined now to any of the rooms."""

        def txn_fn(txn: Any) -> set[str]:
            txn.execute("SELECT DISTINCT user_id FROM room_memberships WHERE room_id = ANY(%s) AND membership = 'join'",
                        (list(room_ids),))
            return {r[0] for r in txn.fetchall()}

        return self._db.run_interaction("get_room_members_joined_e2e", txn_fn)

    def get_user_room_ids(self, user_id: str) -> "defer.Deferred[list[str]]":
        """Every room the user has a membership in (any membership)."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT room_id FROM room_memberships WHERE user_id = %s", (user_id,))
            return [r[0] for r in txn.fetchall()]

        return self._db.run_interaction("get_user_room_ids_e2e", txn_fn)

    # -- federation ----------------------------------------------------------------------------

    def announce(self, allocator: Any, user_id: str,
                 on_row: Optional[Callable[[DeviceListRow], None]] = None) -> "defer.Deferred[DeviceListRow]":
        """A ``device_lists`` position saying only that ``user_id``'s list changed (a remote user's EDU)."""
        return self._db.run_interaction("announce_device_list", self._announce_txn, allocator, user_id, [], on_row)

    def get_all_devices(self, user_id: str) -> "defer.Deferred[list[tuple[str, Optional[dict[str, Any]], Optional[str]]]]":
        """``(device_id, device_keys or None, display name)`` of every device of a local user."""

        def txn_fn(txn: Any) -> list[tuple[str, Optional[dict[str, Any]], Optional[str]]]:
            txn.execute(
                "SELECT d.device_id, k.key_json, d.display_name FROM devices d LEFT JOIN e2e_device_keys k"
                " ON k.user_id = d.user_id AND k.device_id = d.device_id WHERE d.user_id = %s ORDER BY d.device_id",
                (user_id,),
            )
            return [(r[0], json.loads(r[1]) if r[1] is not None else None, r[2]) for r in txn.fetchall()]

        return self._db.run_interaction("get_all_devices_e2e", txn_fn)

    def get_user_stream_id(self, user_id: str) -> "defer.Deferred[int]":
        """The latest ``device_lists`` position of the user (0 when none)."""

        def txn_fn(txn: Any) -> int:
            txn.execute("SELECT COALESCE(MAX(stream_position), 0) FROM device_lists_stream WHERE user_id = %s",
                        (user_id,))
            return int(txn.fetchone()[0])

        return self._db.run_interaction("get_user_device_stream_id", txn_fn)

    def get_remote_servers_sharing(self, user_id: str, own_server: str) -> "defer.Deferred[list[str]]":
        """The other servers with a member joined to a room the user is joined to."""

        def txn_fn(txn: Any) -> list[str]:
            txn.execute(
                "SELECT DISTINCT substring(o.user_id FROM position(':' IN o.user_id) + 1)"
                " FROM room_memberships m JOIN room_memberships o ON o.room_id = m.room_id"
                " WHERE m.user_id = %s AND m.membership = 'join' AND o.membership = 'join'",
                (user_id,),
            )
            return sorted(s for (s,) in txn.fetchall() if s and s != own_server)

        return self._db.run_interaction("get_remote_servers_sharing", txn_fn)
