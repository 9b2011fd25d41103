"""Reads shared by the tables that hold a user-keyed stream (``stream_shard``, ``stream_position``, ``user_id``).

The to-device inbox and the device-list changes are such tables: their sync
tails catch up with one ``(position, user)`` per position of a shard and
start from the highest position stored. The table name is a fixed
identifier of the calling store, quoted with ``psycopg2.sql``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from psycopg2 import sql


def positions_and_users_txn(txn: Any, table: str, shard: int, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
    """``(position, user_id)`` once per position of ``shard`` with ``after < position <= upto``, in order."""
    txn.execute(
        sql.SQL(
            "SELECT DISTINCT stream_position, user_id FROM {} WHERE stream_shard = %s"
            " AND stream_position > %s AND stream_position <= %s ORDER BY stream_position LIMIT %s"
        ).format(sql.Identifier(table)),
        (shard, after, upto, limit),
    )
    return [(r[0], r[1]) for r in txn.fetchall()]


def max_positions_txn(txn: Any, table: str, shards: Iterable[int]) -> dict[int, int]:
    """The highest stored position of each of ``shards`` (0 when none)."""
    wanted = list(shards)
    txn.execute(
        sql.SQL("SELECT stream_shard, MAX(stream_position) FROM {} WHERE stream_shard = ANY(%s) GROUP BY stream_shard")
        .format(sql.Identifier(table)),
        (wanted,),
    )
    found = dict(txn.fetchall())
    return {s: int(found.get(s) or 0) for s in wanted}


class UserStreamReads:
    """The tail's reads of a user-keyed stream table, for a store with a ``_db``.

    A store sets ``_stream_table`` (the table), ``_stream_row`` (``row(shard,
    position, user_id)``) and ``_stream_name`` (labels its interactions).
    """

    _db: Any
    _stream_table: str
    _stream_row: Callable[[int, int, str], Any]
    _stream_name: str

    def get_rows(self, shard: int, after: int, upto: int, limit: int) -> Any:
        """One row per position of a shard with ``after < position <= upto`` (tail catch-up)."""
        table, row = self._stream_table, self._stream_row

        def txn_fn(txn: Any) -> list[Any]:
            return [row(shard, p, u) for p, u in positions_and_users_txn(txn, table, shard, after, upto, limit)]

        return self._db.run_interaction(f"get_{self._stream_name}_rows", txn_fn)

    def get_max_positions(self, shards: Iterable[int]) -> Any:
        """The highest stored position per shard (0 when none)."""
        table, wanted = self._stream_table, list(shards)

        def txn_fn(txn: Any) -> dict[int, int]:
            return max_positions_txn(txn, table, wanted)

        return self._db.run_interaction(f"get_{self._stream_name}_max_positions", txn_fn)
