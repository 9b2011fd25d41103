"""Account data (global and per room, room tags as ``m.tag``) and filters.

Stream model: every write takes a position as its ``stream_id`` and
replaces the row, so "what changed for user U since position P" is
``WHERE user_id = U AND stream_id > P``.

Where positions come from is the ``allocator_for`` hook:

- ``None`` (single writer, tests): the global ``account_data_stream_seq``.
- ``allocator_for(user_id) -> storage.streams.ShardPositionAllocator``: the
  allocator of the user's shard of the ``account_data`` stream
  (``shard = stable hash(user_id) mod shard count``, owned by this writer).
  Positions are then per shard, which is all a user's readers need since a
  user never changes shard. ``{user_id, room_id, type}`` is attached to
  the position, so the allocator's ``on_publish`` callback (the bus
  publisher) receives it after commit, in position order. A process that
  does not own the user's shard must not call the write methods: it
  forwards the command to the owner (``AccountDataCommands``); the hook
  returns None for such a user and the write is refused.

/sync reads a user's changes as ``stream_id > since`` and moves its token
to the largest it saw, so a user's positions must commit in position
order, or a change committing late under a smaller position would never be
reported. Every write therefore takes a per-user transaction lock before it
draws its position: the writes of one user are serialised, across
processes too.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import attrs
from twisted.internet import defer

#: Room id used for global account data rows.
GLOBAL = ""


@attrs.frozen
class AccountDataChange:
    """What a write changed, published to observers after commit."""

    stream_id: int
    user_id: str
    room_id: Optional[str]
    data_type: str


class AccountDataStore:
    """``account_data`` and ``user_filters`` in PostgreSQL."""

    def __init__(self, database: Any, allocator_for: Optional[Callable[[str], Any]] = None) -> None:
        self._db = database
        self._allocator_for = allocator_for
        self.sharded = allocator_for is not None
        #: Called with an :class:`AccountDataChange` after each committed write.
        self.observers: list[Callable[[AccountDataChange], None]] = []

    def _notify(self, change: AccountDataChange) -> None:
        for observer in list(self.observers):
            observer(change)

    def get_account_data(self, user_id: str, room_id: Optional[str], data_type: str) -> "defer.Deferred[Optional[dict]]":
        """The content stored for this type (globally if ``room_id`` is None), or None."""

        def txn_fn(txn: Any) -> Optional[dict]:
            txn.execute_prepared(
                "account_data_get",
                "SELECT content FROM account_data WHERE user_id = %s AND room_id = %s AND data_type = %s",
                (user_id, room_id or GLOBAL, data_type),
            )
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("get_account_data", txn_fn)

    def set_account_data(self, user_id: str, room_id: Optional[str], data_type: str, content: dict) -> "defer.Deferred[int]":
        """Replace the content of one type; returns its new stream position."""

        def txn_fn(txn: Any) -> int:
            return self._set_txn(txn, user_id, room_id, data_type, content)

        return self._db.run_interaction("set_account_data", txn_fn)

    def use_allocators(self, allocator_for: Callable[[str], Any]) -> None:
        """Draw positions from the owned shards' allocators from now on (see the module docstring)."""
        self._allocator_for = allocator_for
        self.sharded = True

    def _set_txn(self, txn: Any, user_id: str, room_id: Optional[str], data_type: str, content: Any) -> int:
        txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"account_data:{user_id}",))
        if self._allocator_for is not None:
            allocator = self._allocator_for(user_id)
            if allocator is None:
                raise RuntimeError(f"the account_data shard of {user_id} is not owned here")
            stream_id = allocator.allocate(txn)
            allocator.attach(stream_id, {"user_id": user_id, "room_id": room_id, "type": data_type})
        else:
            txn.execute("SELECT nextval('account_data_stream_seq')")
            (stream_id,) = txn.fetchone()
        txn.execute(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (user_id, room_id, data_type)"
            " DO UPDATE SET content = EXCLUDED.content, stream_id = EXCLUDED.stream_id",
            (user_id, room_id or GLOBAL, data_type, json.dumps(content), stream_id),
        )
        txn.call_after(self._notify, AccountDataChange(stream_id, user_id, room_id, data_type))
        return stream_id

    def update_tags(
        self, user_id: str, room_id: str, tag: str, content: Optional[dict]
    ) -> "defer.Deferred[int]":
        """Add/replace (``content``) or remove (None) one tag of ``m.tag``.

        Read-modify-write under a row lock (or an advisory lock when the row
        does not exist yet). Returns the new stream position.
        """

        def txn_fn(txn: Any) -> int:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tags:{user_id}:{room_id}",))
            txn.execute(
                "SELECT content FROM account_data WHERE user_id = %s AND room_id = %s AND data_type = 'm.tag'",
                (user_id, room_id),
            )
            row = txn.fetchone()
            current = row[0] if row else {}
            tags = dict(current.get("tags") or {}) if isinstance(current, dict) and isinstance(current.get("tags"), dict) else {}
            if content is None:
                tags.pop(tag, None)
            else:
                tags[tag] = content
            return self._set_txn(txn, user_id, room_id, "m.tag", {"tags": tags})

        return self._db.run_interaction("update_tags", txn_fn)

    def max_stream_id(self) -> "defer.Deferred[int]":
        """The largest position any account data row has (0 when there is none)."""

        def txn_fn(txn: Any) -> int:
            txn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM account_data")
            return int(txn.fetchone()[0])

        return self._db.run_interaction("account_data_max_stream_id", txn_fn)

    def get_changes_since(self, user_id: str, since_stream_id: int) -> "defer.Deferred[list[tuple[Optional[str], str, dict, int]]]":
        """``(room_id or None, type, content, stream_id)`` changed after a position (for /sync)."""

        def txn_fn(txn: Any) -> list[tuple[Optional[str], str, dict, int]]:
            txn.execute(
                "SELECT room_id, data_type, content, stream_id FROM account_data"
                " WHERE user_id = %s AND stream_id > %s ORDER BY stream_id",
                (user_id, since_stream_id),
            )
            return [(r or None, t, c, s) for r, t, c, s in txn.fetchall()]

        return self._db.run_interaction("get_account_data_changes", txn_fn)

    # -- filters -------------------------------------------------------------

    def add_filter(self, user_id: str, filter_json: dict) -> "defer.Deferred[int]":
        """Store a filter; returns its id (per user, counting from 0)."""

        def txn_fn(txn: Any) -> int:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("filters:" + user_id,))
            txn.execute("SELECT COALESCE(MAX(filter_id) + 1, 0) FROM user_filters WHERE user_id = %s", (user_id,))
            (filter_id,) = txn.fetchone()
            txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (%s, %s, %s)",
                (user_id, filter_id, json.dumps(filter_json)),
            )
            return filter_id

        return self._db.run_interaction("add_filter", txn_fn)

    def get_filter(self, user_id: str, filter_id: int) -> "defer.Deferred[Optional[dict]]":
        """A stored filter, or None."""

        def txn_fn(txn: Any) -> Optional[dict]:
            txn.execute(
                "SELECT filter_json FROM user_filters WHERE user_id = %s AND filter_id = %s", (user_id, filter_id)
            )
            row = txn.fetchone()
            return row[0] if row else None

        return self._db.run_interaction("get_filter", txn_fn)
