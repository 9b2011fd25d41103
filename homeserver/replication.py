"""Commands go to the shard owner: "write if I own it, else forward".

DESIGN.md §4: a command (create this event, store this receipt) must run on
the one ``client_writer`` that owns the shard of its room or user. Handlers
never branch on that themselves; they call :meth:`CommandDispatcher.run`,
which runs the command locally when this instance owns the shard and
otherwise forwards it over the internal replication API to the owner.

Commands are idempotent by construction (each carries the client's
transaction ID or is naturally idempotent), so the forwarder may retry one
whose answer was lost. A :class:`homeserver.errors.MatrixError` raised by the
owner reaches the caller unchanged, so the client sees the owner's refusal.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol

from homeserver.errors import Codes, MatrixError
from homeserver.sharding import shard_for

CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ShardMap(Protocol):
    """What the dispatcher needs of the config."""

    stream_shards: Mapping[str, int]

    def shard_owner(self, stream: str, shard: int) -> Any: ...


class ReplicationClient(Protocol):
    """Sends a command to another instance (implemented over HTTP in workers/)."""

    async def call(self, instance: Any, command: str, stream: str, key: str, args: dict[str, Any]) -> dict[str, Any]: ...


class WrongShard(MatrixError):
    """A command arrived at an instance that does not own its shard."""

    def __init__(self, stream: str, shard: int) -> None:
        super().__init__(409, Codes.UNKNOWN, f"this instance does not own {stream} shard {shard}")


class CommandDispatcher:
    """Runs or forwards named commands by shard ownership."""

    def __init__(self, shard_map: ShardMap, instance_name: str, client: ReplicationClient) -> None:
        self._map = shard_map
        self._me = instance_name
        self._client = client
        self._handlers: dict[str, tuple[str, CommandHandler]] = {}

    def register(self, command: str, stream: str, handler: CommandHandler) -> None:
        """``handler(args)`` runs ``command`` on the owner of ``stream``'s shard."""
        if command in self._handlers:
            raise ValueError(f"command {command!r} registered twice")
        if stream not in self._map.stream_shards:
            raise ValueError(f"unknown stream {stream!r}")
        self._handlers[command] = (stream, handler)

    def owner_of(self, stream: str, key: str) -> Any:
        """The instance owning ``key``'s shard of ``stream``."""
        return self._map.shard_owner(stream, shard_for(key, self._map.stream_shards[stream]))

    def owns(self, stream: str, key: str) -> bool:
        return self.owner_of(stream, key).name == self._me

    async def run(self, command: str, key: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run ``command`` for ``key`` (a room or user ID) where it belongs."""
        stream, handler = self._lookup(command)
        owner = self.owner_of(stream, key)
        if owner.name == self._me:
            return await handler(args)
        return await self._client.call(owner, command, stream, key, args)

    async def run_local(self, command: str, key: str, args: dict[str, Any]) -> dict[str, Any]:
        """Serve a forwarded command; refuse one for a shard we do not own."""
        stream, handler = self._lookup(command)
        shard = shard_for(key, self._map.stream_shards[stream])
        if self._map.shard_owner(stream, shard).name != self._me:
            raise WrongShard(stream, shard)
        return await handler(args)

    def _lookup(self, command: str) -> tuple[str, CommandHandler]:
        try:
            return self._handlers[command]
        except KeyError:
            raise MatrixError(404, Codes.UNRECOGNIZED, f"unknown replication command {command!r}")
