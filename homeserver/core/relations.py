"""Event relationships (client-server API "Forming relationships between events"): parsing only."""

from __future__ import annotations

from typing import Any, Mapping, Optional


def relation_of(content: Mapping[str, Any]) -> Optional[tuple[str, str, Optional[str]]]:
    """``(rel_type, event_id, key)`` of a valid ``m.relates_to`` in event content, else None.

    ``key`` is the annotation key of ``m.annotation`` relations (None
    otherwise). Strings containing NUL are treated as invalid (they cannot
    be stored in PostgreSQL).
    """
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping):
        return None
    rel_type, parent = relates.get("rel_type"), relates.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent, str) or not rel_type or not parent:
        return None
    if "\x00" in rel_type or "\x00" in parent:
        return None
    key = relates.get("key") if rel_type == "m.annotation" else None
    if not isinstance(key, str) or "\x00" in key:
        key = None
    return rel_type, parent, key
