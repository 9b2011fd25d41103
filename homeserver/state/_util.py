"""Small helpers shared by the state resolution modules."""

from __future__ import annotations

from typing import Any, Mapping


def content_of(event: Any) -> Mapping[str, Any]:
    """The event's content as a mapping ({} if malformed). Checks ``dict``
    first: ``isinstance(x, Mapping)`` is an ABC check, slow in hot loops."""
    content = event.content
    if isinstance(content, dict) or isinstance(content, Mapping):
        return content
    return {}
