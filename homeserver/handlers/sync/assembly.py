"""Pure pieces of sync response assembly: state deltas, lazy members, summaries, receipts."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional, Sequence

StateKey = tuple[str, str]
MAX_HEROES = 5


def timeline_state(start: Mapping[StateKey, str], since: Optional[Mapping[StateKey, str]], full: bool,
                   limited: bool) -> dict[StateKey, str]:
    """The ``state`` section of a room: what the client must learn besides the timeline.

    ``start`` is the state just before the first timeline event, ``since``
    the state at the client's previous token. A full sync (initial, full
    state, newly joined) gets all of ``start``; a gappy incremental one the
    entries that changed since; a complete incremental timeline nothing
    (its state events are in the timeline).
    """
    if full:
        return dict(start)
    if limited:
        before = since or {}
        return {k: v for k, v in start.items() if before.get(k) != v}
    return {}


def lazy_members(state: Mapping[StateKey, str], start: Mapping[StateKey, str], senders: Iterable[str],
                 full: bool) -> dict[StateKey, str]:
    """Keep only the membership events of ``senders`` (lazy-loading members).

    On incremental syncs the senders' memberships are added from ``start``
    even when unchanged, since the client may never have loaded them.
    """
    wanted = set(senders)
    out = {k: v for k, v in state.items() if k[0] != "m.room.member" or k[1] in wanted}
    if not full:
        for sender in wanted:
            key = ("m.room.member", sender)
            if key in start:
                out.setdefault(key, start[key])
    return out


def room_summary(members: Sequence[tuple[str, str]], user_id: str) -> dict[str, Any]:
    """``summary``: heroes and member counts from ``(user_id, membership)`` in join order."""
    joined = [u for u, m in members if m == "join"]
    invited = [u for u, m in members if m == "invite"]
    heroes = [u for u in joined + invited if u != user_id][:MAX_HEROES]
    if not heroes:
        heroes = [u for u, m in members if u != user_id and m in ("leave", "ban")][:MAX_HEROES]
    return {"m.heroes": heroes, "m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}


def receipt_contents(rows: Iterable[Any], user_id: str) -> dict[str, dict[str, Any]]:
    """``m.receipt`` contents per room from receipt rows; private receipts only for their owner."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.receipt_type == "m.read.private" and row.user_id != user_id:
            continue
        content = out.setdefault(row.room_id, {})
        content.setdefault(row.event_id, {}).setdefault(row.receipt_type, {})[row.user_id] = json.loads(row.data)
    return out
