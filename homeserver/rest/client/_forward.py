"""Forwarding writes to the owner of their shard (DESIGN.md §4), written once.

A handler that finds the write belongs to a shard this instance does not
own raises :class:`NotShardOwnerError` before changing anything. Wrapped
with :func:`with_forwarding`, the request is then passed to ``forward(request,
stream, shard)`` (built in ``workers/``: an internal HTTP call to the owner)
and the owner's response is returned as is. A request that was already
forwarded once is never forwarded again (no loops when the config is
inconsistent between instances): the client gets the 503.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from homeserver.handlers.rooms.creation import NotShardOwnerError
from homeserver.http.server import header

#: Set on forwarded requests.
FORWARDED_HEADER = "X-Estuary-Forwarded"

Forward = Callable[[Any, str, int], Awaitable[Any]]


def with_forwarding(handler: Callable[..., Awaitable[Any]], forward: Optional[Forward]) -> Callable[..., Awaitable[Any]]:
    """``handler``, forwarding to the shard owner when it raises :class:`NotShardOwnerError`."""
    if forward is None:
        return handler

    async def forwarding(request: Any, **kwargs: Any) -> Any:
        try:
            return await handler(request, **kwargs)
        except NotShardOwnerError as e:
            if header(request, FORWARDED_HEADER) is not None:
                raise
            return await forward(request, e.stream, e.shard)

    forwarding.__name__ = getattr(handler, "__name__", "forwarding")
    return forwarding
