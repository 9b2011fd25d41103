"""Event relations and the full-text search index over events.

Both tables (and ``room_directory_stats``, see storage/stores/directory.py)
are indexes of ``events`` written by :func:`write_event_indexes_txn` inside
the transaction that persists an event (``EventStore.persist_event``), so
they never disagree with the events they describe; a redaction removes the
redacted event's rows in the same transaction. Every persist path (local
creation today, federation later) must call it. The schema migration
backfills the same rows for events that existed before it, with the same
rules (tests/integration/directory/test_indexes.py checks both agree).
Every query filters on ``room_id`` (DESIGN.md §6).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
from twisted.internet import defer

from homeserver.core.events import Event
from homeserver.core.relations import relation_of
from storage.stores.directory import write_directory_stats_txn

#: Text search configuration used to index and to query.
SEARCH_CONFIG = "english"

#: The searchable key of each indexed event type (the search API's ``keys``).
SEARCH_KEYS = {"m.room.message": ("content.body", "body"), "m.room.name": ("content.name", "name"),
               "m.room.topic": ("content.topic", "topic")}


def write_event_indexes_txn(txn: Any, event: Event, position: int, unindex_redacted: bool = True,
                            directory_stats: bool = True) -> None:
    """Index a just-inserted event (relations, search and, with
    ``directory_stats``, the directory's room stats) and, with
    ``unindex_redacted``, unindex what it redacts.

    Runs inside the transaction that persists the event (local or received).
    """
    room_id = event.room_id
    if event.redacts is not None and unindex_redacted:
        txn.execute("DELETE FROM event_relations WHERE room_id = %s AND event_id = %s", (room_id, event.redacts))
        txn.execute("DELETE FROM event_search WHERE room_id = %s AND event_id = %s", (room_id, event.redacts))
    content = event.content
    relation = relation_of(content) if event.type != "m.room.redaction" else None
    if relation is not None:
        rel_type, parent, key = relation
        txn.execute(
            "INSERT INTO event_relations (room_id, event_id, relates_to_id, relation_type, type, sender, depth,"
            " stream_position, origin_server_ts, aggregation_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (room_id, event.event_id, parent, rel_type, event.type, event.sender, event.depth, position,
             event.origin_server_ts, key),
        )
    search = SEARCH_KEYS.get(event.type)
    if search is not None and (event.type != "m.room.message" or event.state_key is None):
        text = content.get(search[1])
        if isinstance(text, str) and text:
            txn.execute(
                "INSERT INTO event_search (room_id, event_id, key, vector, depth, stream_position, origin_server_ts)"
                " VALUES (%s, %s, %s, to_tsvector(%s::regconfig, %s), %s, %s, %s) ON CONFLICT DO NOTHING",
                (room_id, event.event_id, search[0], SEARCH_CONFIG, text.replace("\x00", " "), event.depth, position,
                 event.origin_server_ts),
            )
    if directory_stats:
        write_directory_stats_txn(txn, event)


@attrs.frozen
class RelationRow:
    """A row of ``event_relations``."""

    room_id: str
    event_id: str
    relates_to_id: str
    relation_type: str
    type: str
    sender: str
    depth: int
    stream_position: int
    origin_server_ts: int
    aggregation_key: Optional[str]


_RELATION_COLUMNS = (
    "room_id, event_id, relates_to_id, relation_type, type, sender, depth, stream_position, origin_server_ts,"
    " aggregation_key"
)


@attrs.frozen
class ThreadSummaryRow:
    """Aggregate of the ``m.thread`` children of one root."""

    root_id: str
    count: int
    latest_event_id: str
    participated: bool


@attrs.frozen
class SearchHit:
    """One full-text search match."""

    room_id: str
    event_id: str
    rank: float
    origin_server_ts: int
    stream_position: int


class RelationStore:
    """Reads of relations and of the search index."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def get_children(
        self,
        room_id: str,
        parent_id: str,
        *,
        rel_type: Optional[str],
        event_type: Optional[str],
        before: Optional[tuple[int, int]],
        after: Optional[tuple[int, int]],
        backwards: bool,
        limit: int,
        max_depth: int = 1,
    ) -> "defer.Deferred[tuple[list[RelationRow], bool]]":
        """Events relating to ``parent_id`` (recursively down to ``max_depth`` levels) in topological order.

        ``before``/``after`` bound ``(depth, stream_position)`` exclusively;
        returns up to ``limit`` rows and whether more exist.
        """

        def txn_fn(txn: Any) -> tuple[list[RelationRow], bool]:
            conds, args = [], []
            if rel_type is not None:
                conds.append("relation_type = %s")
                args.append(rel_type)
            if event_type is not None:
                conds.append("type = %s")
                args.append(event_type)
            if before is not None:
                conds.append("(depth, stream_position) < (%s, %s)")
                args.extend(before)
            if after is not None:
                conds.append("(depth, stream_position) > (%s, %s)")
                args.extend(after)
            where = (" WHERE " + " AND ".join(conds)) if conds else ""
            order = "DESC" if backwards else "ASC"
            txn.execute(
                f"WITH RECURSIVE rel AS ("
                f" SELECT {_RELATION_COLUMNS}, 1 AS level FROM event_relations WHERE room_id = %s AND relates_to_id = %s"
                f" UNION ALL SELECT r.room_id, r.event_id, r.relates_to_id, r.relation_type, r.type, r.sender, r.depth,"
                f" r.stream_position, r.origin_server_ts, r.aggregation_key, rel.level + 1"
                f" FROM event_relations r JOIN rel ON r.room_id = rel.room_id AND r.relates_to_id = rel.event_id"
                f" WHERE rel.level < %s)"
                f" SELECT DISTINCT {_RELATION_COLUMNS} FROM rel{where}"
                f" ORDER BY depth {order}, stream_position {order} LIMIT %s",
                [room_id, parent_id, max_depth, *args, limit + 1],
            )
            rows = [RelationRow(*r) for r in txn.fetchall()]
            return rows[:limit], len(rows) > limit

        return self._db.run_interaction("get_relation_children", txn_fn)

    def has_annotation(self, room_id: str, parent_id: str, sender: str, event_type: str,
                       key: str) -> "defer.Deferred[bool]":
        """Whether ``sender`` already annotated ``parent_id`` with ``key`` in an event of ``event_type``
        (redacted annotations no longer count)."""

        def txn_fn(txn: Any) -> bool:
            txn.execute(
                "SELECT 1 FROM event_relations WHERE room_id = %s AND relates_to_id = %s AND relation_type = 'm.annotation'"
                " AND sender = %s AND type = %s AND aggregation_key = %s LIMIT 1",
                (room_id, parent_id, sender, event_type, key),
            )
            return txn.fetchone() is not None

        return self._db.run_interaction("has_annotation", txn_fn)

    def get_bundle_rows(
        self, parents: Sequence[tuple[str, str]], rel_types: Sequence[str], user_id: Optional[str],
        ignored: Sequence[str] = (),
    ) -> "defer.Deferred[tuple[list[RelationRow], dict[tuple[str, str], ThreadSummaryRow]]]":
        """What bundled aggregations of the events ``parents`` (``(room_id, event_id)`` pairs, any
        rooms) need, in one round trip: their relations of ``rel_types`` in topological order, and
        (when ``user_id`` is given) the thread summary of each ``(room_id, root_id)`` with replies,
        not counting replies from the ``ignored`` senders."""

        def txn_fn(txn: Any) -> tuple[list[RelationRow], dict[tuple[str, str], ThreadSummaryRow]]:
            rooms = [p[0] for p in parents]
            events = [p[1] for p in parents]
            parents_cte = "WITH p AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS p(room_id, event_id))"
            columns = ", ".join("r." + c.strip() for c in _RELATION_COLUMNS.split(","))
            txn.execute(
                f"{parents_cte} SELECT {columns} FROM event_relations r"
                " JOIN p ON r.room_id = p.room_id AND r.relates_to_id = p.event_id"
                " WHERE r.relation_type = ANY(%s) ORDER BY r.depth, r.stream_position",
                (rooms, events, list(rel_types)),
            )
            rows = [RelationRow(*r) for r in txn.fetchall()]
            summaries: dict[tuple[str, str], ThreadSummaryRow] = {}
            if user_id is not None:
                txn.execute(
                    f"{parents_cte} SELECT r.room_id, r.relates_to_id, count(*), bool_or(r.sender = %s),"
                    " (array_agg(r.event_id ORDER BY r.depth DESC, r.stream_position DESC))[1]"
                    " FROM event_relations r JOIN p ON r.room_id = p.room_id AND r.relates_to_id = p.event_id"
                    " WHERE r.relation_type = 'm.thread' AND NOT (r.sender = ANY(%s))"
                    " GROUP BY r.room_id, r.relates_to_id",
                    (rooms, events, user_id, list(ignored)),
                )
                for room_id, root_id, count, participated, latest in txn.fetchall():
                    summaries[(room_id, root_id)] = ThreadSummaryRow(root_id, count, latest, bool(participated))
            return rows, summaries

        return self._db.run_interaction("get_bundle_rows", txn_fn)

    def get_threads(
        self, room_id: str, participant: Optional[str], before_position: Optional[int], limit: int
    ) -> "defer.Deferred[tuple[list[tuple[str, int]], bool]]":
        """Thread roots of a room, most recently active first: ``[(root_id, latest_position)]``, more?

        ``participant`` keeps threads that user started or replied to;
        ``before_position`` continues after a previous page.
        """

        def txn_fn(txn: Any) -> tuple[list[tuple[str, int]], bool]:
            having, args = [], []
            if participant is not None:
                having.append("(bool_or(r.sender = %s) OR e.sender = %s)")
                args.extend([participant, participant])
            if before_position is not None:
                having.append("max(r.stream_position) < %s")
                args.append(before_position)
            clause = (" HAVING " + " AND ".join(having)) if having else ""
            txn.execute(
                "SELECT r.relates_to_id, max(r.stream_position) AS latest FROM event_relations r"
                " JOIN events e ON e.room_id = r.room_id AND e.event_id = r.relates_to_id"
                " WHERE r.room_id = %s AND r.relation_type = 'm.thread' AND e.redacted_by IS NULL"
                f" GROUP BY r.relates_to_id, e.sender{clause} ORDER BY latest DESC LIMIT %s",
                [room_id, *args, limit + 1],
            )
            rows = [(r[0], r[1]) for r in txn.fetchall()]
            return rows[:limit], len(rows) > limit

        return self._db.run_interaction("get_threads", txn_fn)

    # -- search ----------------------------------------------------------------

    def search(
        self,
        room_ids: Sequence[str],
        term: str,
        keys: Sequence[str],
        order_by_rank: bool,
        offset: int,
        limit: int,
    ) -> "defer.Deferred[tuple[list[SearchHit], int]]":
        """Full-text matches of ``term`` in ``room_ids``: a page of hits and the total count.

        Hits are ordered by rank (then recency) or by recency
        (``origin_server_ts``, then event ID); ``offset`` skips earlier pages.
        """

        def txn_fn(txn: Any) -> tuple[list[SearchHit], int]:
            if not room_ids:
                return [], 0
            base = (
                " FROM event_search s, websearch_to_tsquery(%s::regconfig, %s) q"
                " WHERE s.room_id = ANY(%s) AND s.key = ANY(%s) AND s.vector @@ q"
            )
            args = [SEARCH_CONFIG, term, list(room_ids), list(keys)]
            order = (
                "rank DESC, s.origin_server_ts DESC, s.event_id DESC" if order_by_rank
                else "s.origin_server_ts DESC, s.event_id DESC"
            )
            txn.execute(
                "SELECT s.room_id, s.event_id, ts_rank_cd(s.vector, q) AS rank, s.origin_server_ts, s.stream_position"
                + base + f" ORDER BY {order} OFFSET %s LIMIT %s",
                args + [offset, limit],
            )
            hits = [SearchHit(r[0], r[1], float(r[2]), r[3], r[4]) for r in txn.fetchall()]
            txn.execute("SELECT count(*)" + base, args)
            return hits, txn.fetchone()[0]

        return self._db.run_interaction("search_events", txn_fn)
