"""Other servers' verify keys and the key responses they came in."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import attrs
from twisted.internet import defer


@attrs.frozen
class StoredKey:
    """One row of ``server_signature_keys`` (the newest statement about a key)."""

    server_name: str
    key_id: str
    from_server: str
    verify_key: str
    fetched_ts: int
    valid_until_ts: int
    expired_ts: Optional[int]


@attrs.frozen
class StoredKeyJson:
    """A key response as received, for serving again as a notary."""

    server_name: str
    from_server: str
    fetched_ts: int
    key_json: str


class ServerKeyStore:
    """``server_signature_keys`` in PostgreSQL."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def store_key_response(
        self,
        server_name: str,
        from_server: str,
        fetched_ts: int,
        key_json: str,
        keys: Iterable[tuple[str, str, int, Optional[int]]],
    ) -> "defer.Deferred[None]":
        """Record a validated response: ``keys`` are ``(key_id, verify_key, valid_until_ts, expired_ts)``.

        A row is only replaced by a statement fetched at the same time or later.
        """
        rows = [
            (server_name, key_id, from_server, vk, fetched_ts, valid_until, expired, key_json)
            for key_id, vk, valid_until, expired in keys
        ]

        def txn_fn(txn: Any) -> None:
            if not rows:
                return
            txn.execute_values(
                "INSERT INTO server_signature_keys (server_name, key_id, from_server, verify_key,"
                " fetched_ts, valid_until_ts, expired_ts, key_json) VALUES %s"
                " ON CONFLICT (server_name, key_id, from_server) DO UPDATE SET"
                " verify_key = EXCLUDED.verify_key, fetched_ts = EXCLUDED.fetched_ts,"
                " valid_until_ts = EXCLUDED.valid_until_ts, expired_ts = EXCLUDED.expired_ts,"
                " key_json = EXCLUDED.key_json"
                " WHERE server_signature_keys.fetched_ts <= EXCLUDED.fetched_ts",
                rows,
            )

        return self._db.run_interaction("store_key_response", txn_fn)

    def get_server_keys(self, server_name: str, key_ids: Sequence[str]) -> "defer.Deferred[dict[str, StoredKey]]":
        """For each key ID known, the most recently fetched statement about it."""

        def txn_fn(txn: Any) -> dict[str, StoredKey]:
            txn.execute(
                "SELECT DISTINCT ON (key_id) server_name, key_id, from_server, verify_key, fetched_ts,"
                " valid_until_ts, expired_ts FROM server_signature_keys"
                " WHERE server_name = %s AND key_id = ANY(%s)"
                " ORDER BY key_id, fetched_ts DESC, valid_until_ts DESC, from_server",
                (server_name, list(key_ids)),
            )
            return {row[1]: StoredKey(*row) for row in txn.fetchall()}

        return self._db.run_interaction("get_server_keys", txn_fn)

    def get_key_jsons(
        self, server_name: str, key_ids: Optional[Sequence[str]] = None
    ) -> "defer.Deferred[list[StoredKeyJson]]":
        """The distinct stored responses of ``server_name`` (listing any of ``key_ids``,
        or all when None), newest first."""

        def txn_fn(txn: Any) -> list[StoredKeyJson]:
            if key_ids is None:
                txn.execute(
                    "SELECT server_name, from_server, MAX(fetched_ts), key_json FROM server_signature_keys"
                    " WHERE server_name = %s GROUP BY server_name, from_server, key_json ORDER BY 3 DESC",
                    (server_name,),
                )
            else:
                txn.execute(
                    "SELECT server_name, from_server, MAX(fetched_ts), key_json FROM server_signature_keys"
                    " WHERE server_name = %s AND key_id = ANY(%s)"
                    " GROUP BY server_name, from_server, key_json ORDER BY 3 DESC",
                    (server_name, list(key_ids)),
                )
            return [StoredKeyJson(*row) for row in txn.fetchall()]

        return self._db.run_interaction("get_key_jsons", txn_fn)
