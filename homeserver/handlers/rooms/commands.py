"""Room writes as replication commands: run on the owner of the room's shard (DESIGN.md §4).

Every write of the rooms area (send, state, redact, membership, knock,
typing, receipts, createRoom) is a named command of the process's
``CommandDispatcher`` (``homeserver.replication``): it runs here when this
instance owns the shard of the room in the command's stream, and is
forwarded over the internal replication API otherwise. The HTTP edge calls
:class:`RoomCommands` and never branches on ownership itself.

Arguments and results are JSON. The requester travels with the command: the
replication API is authenticated with the shared secret and never routed
publicly, so the owner trusts the forwarding instance's authentication.
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping, Optional, Sequence

import attrs

from homeserver.errors import bad_json

#: (command name, stream whose shard owner runs it)
COMMANDS = (
    ("rooms.create", "events"),
    ("rooms.send", "events"),
    ("rooms.state", "events"),
    ("rooms.redact", "events"),
    ("rooms.join", "events"),
    ("rooms.knock", "events"),
    ("rooms.leave", "events"),
    ("rooms.membership", "events"),
    ("rooms.typing", "typing"),
    ("rooms.receipt", "receipts"),
    ("rooms.read_markers", "receipts"),
)


@attrs.frozen
class RemoteRequester:
    """The requester of a forwarded command (the fields handlers read)."""

    user_id: str
    device_id: Optional[str]
    is_guest: bool
    access_token_id: int
    is_admin: bool


def requester_to_json(requester: Any) -> dict[str, Any]:
    """What a command carries about who asked."""
    return {
        "user_id": requester.user_id,
        "device_id": requester.device_id,
        "is_guest": requester.is_guest,
        "access_token_id": requester.access_token_id,
        "is_admin": requester.is_admin,
    }


def requester_from_json(data: Any) -> RemoteRequester:
    """The requester of a command (400 if malformed)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("user_id"), str):
        raise bad_json("command lacks its requester")
    device = data.get("device_id")
    token_id = data.get("access_token_id")
    return RemoteRequester(
        user_id=data["user_id"],
        device_id=device if isinstance(device, str) else None,
        is_guest=bool(data.get("is_guest")),
        access_token_id=token_id if isinstance(token_id, int) else 0,
        is_admin=bool(data.get("is_admin")),
    )


def _created(created: Any) -> dict[str, Any]:
    return {"event_id": created.event.event_id, "stream_shard": created.stream_shard,
            "stream_position": created.stream_position}


class RoomCommands:
    """The rooms area's write commands, run where their shard is owned.

    ``dispatcher`` is a ``homeserver.replication.CommandDispatcher`` (or
    anything with ``register(command, stream, handler)`` and ``run(command,
    key, args)``); ``rooms``, ``typing`` and ``receipts`` are the handlers that
    do the work on the owner.
    """

    def __init__(self, dispatcher: Any, rooms: Any, typing: Any, receipts: Any) -> None:
        self._dispatcher = dispatcher
        self._rooms = rooms
        self._typing = typing
        self._receipts = receipts

    @property
    def rooms(self) -> Any:
        """The room handler commands run with on the owner."""
        return self._rooms

    @rooms.setter
    def rooms(self, handler: Any) -> None:
        """Run commands with ``handler`` from now on (e.g. one wrapping the room handler
        with extra checks, as ``workers.directory.extend_room_api`` makes)."""
        self._rooms = handler

    def register(self) -> None:
        """Register every command with the dispatcher (once per process)."""
        handlers = {
            "rooms.create": self._create,
            "rooms.send": self._send,
            "rooms.state": self._state,
            "rooms.redact": self._redact,
            "rooms.join": self._join,
            "rooms.knock": self._knock,
            "rooms.leave": self._leave,
            "rooms.membership": self._membership,
            "rooms.typing": self._set_typing,
            "rooms.receipt": self._receipt,
            "rooms.read_markers": self._read_markers,
        }
        for name, stream in COMMANDS:
            self._dispatcher.register(name, stream, handlers[name])

    async def _run(self, command: str, key: str, requester: Any, **args: Any) -> dict[str, Any]:
        return await self._dispatcher.run(command, key, {"requester": requester_to_json(requester), **args})

    # -- what the HTTP edge calls ------------------------------------------------

    async def create_room(self, requester: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """createRoom on a writer of the events stream (this one if it writes any)."""
        if self._rooms.creator.owned_shards():
            return await self._rooms.create_room(requester, body)
        # Any owner will do: a random key picks one, spreading new rooms.
        return await self._run("rooms.create", "!" + secrets.token_hex(12), requester, body=dict(body))

    async def send_event(self, requester: Any, room_id: str, event_type: str, content: Any, txn_id: Optional[str]) -> dict[str, Any]:
        """PUT /send: ``{"event_id", "stream_shard", "stream_position"}``."""
        return await self._run("rooms.send", room_id, requester, room_id=room_id, event_type=event_type,
                               content=content, txn_id=txn_id)

    async def send_state(self, requester: Any, room_id: str, event_type: str, state_key: str, content: Any) -> dict[str, Any]:
        """PUT /state."""
        return await self._run("rooms.state", room_id, requester, room_id=room_id, event_type=event_type,
                               state_key=state_key, content=content)

    async def redact(self, requester: Any, room_id: str, event_id: str, txn_id: Optional[str], reason: Optional[str]) -> dict[str, Any]:
        """PUT /redact."""
        return await self._run("rooms.redact", room_id, requester, room_id=room_id, event_id=event_id,
                               txn_id=txn_id, reason=reason)

    async def join(self, requester: Any, room_id_or_alias: str, reason: Optional[str], servers: Sequence[str] = ()) -> str:
        """POST /join: aliases are resolved here (a read), the join runs on the owner
        (over federation through ``servers`` when the room is not known here)."""
        room_id, alias_servers = await self._rooms.resolve_room_and_servers(room_id_or_alias)
        via = list(servers) + [s for s in alias_servers if s not in servers]
        result = await self._run("rooms.join", room_id, requester, room_id=room_id, reason=reason, servers=via)
        return result["room_id"]

    async def knock(self, requester: Any, room_id_or_alias: str, reason: Optional[str]) -> str:
        """POST /knock."""
        room_id = await self._rooms.resolve_room(room_id_or_alias)
        result = await self._run("rooms.knock", room_id, requester, room_id=room_id, reason=reason)
        return result["room_id"]

    async def leave(self, requester: Any, room_id: str, reason: Optional[str]) -> None:
        """POST /leave."""
        await self._run("rooms.leave", room_id, requester, room_id=room_id, reason=reason)

    async def change_membership(self, requester: Any, room_id: str, target: str, action: str, reason: Optional[str]) -> None:
        """POST /invite, /kick, /ban, /unban."""
        await self._run("rooms.membership", room_id, requester, room_id=room_id, target=target, action=action,
                        reason=reason)

    async def set_typing(self, requester: Any, room_id: str, user_id: str, typing: Any, timeout: Any) -> None:
        """PUT /typing."""
        await self._run("rooms.typing", room_id, requester, room_id=room_id, user_id=user_id, typing=typing,
                        timeout=timeout)

    async def send_receipt(self, requester: Any, room_id: str, receipt_type: str, event_id: str, thread_id: Optional[str]) -> None:
        """POST /receipt."""
        await self._run("rooms.receipt", room_id, requester, room_id=room_id, receipt_type=receipt_type,
                        event_id=event_id, thread_id=thread_id)

    async def read_markers(self, requester: Any, room_id: str, body: Mapping[str, Any]) -> None:
        """POST /read_markers."""
        await self._run("rooms.read_markers", room_id, requester, room_id=room_id, body=dict(body))

    # -- what runs on the owner ------------------------------------------------------

    async def _create(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._rooms.create_room(requester_from_json(args.get("requester")), args.get("body") or {})

    async def _send(self, args: dict[str, Any]) -> dict[str, Any]:
        created = await self._rooms.send_event(requester_from_json(args.get("requester")), args["room_id"],
                                               args["event_type"], args.get("content"), args.get("txn_id"))
        return _created(created)

    async def _state(self, args: dict[str, Any]) -> dict[str, Any]:
        created = await self._rooms.send_state(requester_from_json(args.get("requester")), args["room_id"],
                                               args["event_type"], args["state_key"], args.get("content"))
        return _created(created)

    async def _redact(self, args: dict[str, Any]) -> dict[str, Any]:
        created = await self._rooms.redact(requester_from_json(args.get("requester")), args["room_id"],
                                           args["event_id"], args.get("txn_id"), args.get("reason"))
        return _created(created)

    async def _join(self, args: dict[str, Any]) -> dict[str, Any]:
        room_id = await self._rooms.join(requester_from_json(args.get("requester")), args["room_id"], args.get("reason"),
                                         servers=[s for s in args.get("servers") or () if isinstance(s, str)])
        return {"room_id": room_id}

    async def _knock(self, args: dict[str, Any]) -> dict[str, Any]:
        room_id = await self._rooms.knock(requester_from_json(args.get("requester")), args["room_id"], args.get("reason"))
        return {"room_id": room_id}

    async def _leave(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._rooms.leave(requester_from_json(args.get("requester")), args["room_id"], args.get("reason"))
        return {}

    async def _membership(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._rooms.change_membership(requester_from_json(args.get("requester")), args["room_id"],
                                            args["target"], args["action"], args.get("reason"))
        return {}

    async def _set_typing(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._typing.set_typing(requester_from_json(args.get("requester")), args["room_id"], args["user_id"],
                                      args.get("typing"), args.get("timeout"))
        return {}

    async def _receipt(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._receipts.send_receipt(requester_from_json(args.get("requester")), args["room_id"],
                                          args["receipt_type"], args["event_id"], args.get("thread_id"))
        return {}

    async def _read_markers(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._receipts.read_markers(requester_from_json(args.get("requester")), args["room_id"],
                                          args.get("body") or {})
        return {}


class LocalDispatcher:
    """Runs every command in this process (a single process owning every shard, and tests).

    Arguments and results go through JSON as they would over the
    replication API, so what works here works forwarded.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Any] = {}

    def register(self, command: str, stream: str, handler: Any) -> None:
        """Register ``handler(args)`` for ``command``."""
        if command in self._handlers:
            raise ValueError(f"command {command!r} registered twice")
        self._handlers[command] = handler

    async def run(self, command: str, key: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run ``command`` here."""
        import json

        result = await self._handlers[command](json.loads(json.dumps(args)))
        return json.loads(json.dumps(result))
