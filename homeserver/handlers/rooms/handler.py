"""Rooms: creation, membership, state, messages, context, redaction.

Write operations go through :class:`EventCreator` (this instance must own
the room's events shard; the router sends room writes to the owner). Read
operations read PostgreSQL through the event store and apply history
visibility. Every refusal is a :class:`MatrixError`.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

from homeserver.core import ids
from homeserver.core.events import Event, thaw
from homeserver.core.power_levels import get_named_level, get_user_power_level
from homeserver.core.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.core.rooms import AliasInUseError, TxnKey
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, not_found
from homeserver.handlers.rooms.creation import CreatedEvent, EventCreator, NewRoom
from homeserver.handlers.rooms.events import EventLoader
from homeserver.handlers.rooms.filters import EventFilter
from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken, TopoToken
from homeserver.handlers.rooms.visibility import VisibilityHistory

StateKey = tuple[str, str]
ProfileLookup = Callable[[str], Awaitable[Mapping[str, Any]]]

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")
_ALIAS_LOCALPART = re.compile(r"^[^:\s#]+$")
MAX_MESSAGES_LIMIT = 1000


def txn_key_for(requester: Any, room_id: str, txn_id: str) -> TxnKey:
    """The transaction ID scope of a requester in a room: its device, else its access token."""
    device = requester.device_id if requester.device_id is not None else f"token:{requester.access_token_id}"
    return TxnKey(requester.user_id, device, room_id, txn_id)


def default_power_levels(version: RoomVersion, creator: str, preset: str, invitees: list[str]) -> dict[str, Any]:
    """The initial ``m.room.power_levels`` content of createRoom (before overrides)."""
    users: dict[str, int] = {}
    if not version.creators_have_infinite_power:
        users[creator] = 100
        if preset == "trusted_private_chat":
            for u in invitees:
                users[u] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150 if version.creators_have_infinite_power else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "historical": 100,
        "notifications": {"room": 50},
    }


def preset_state(preset: str) -> list[tuple[str, dict[str, Any]]]:
    """The join rules, history visibility and guest access a preset implies."""
    public = preset == "public_chat"
    return [
        ("m.room.join_rules", {"join_rule": "public" if public else "invite"}),
        ("m.room.history_visibility", {"history_visibility": "shared"}),
        ("m.room.guest_access", {"guest_access": "forbidden" if public else "can_join"}),
    ]


def _require_user_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ids.is_valid_user_id(value):
        raise invalid_param(f"{what} must be a valid user ID")
    return value


def _check_event_type(event_type: str) -> None:
    if not event_type or len(event_type.encode("utf-8")) > 255:
        raise invalid_param("Invalid event type")


class RoomHandler:
    """The room operations of the client-server API."""

    def __init__(
        self,
        server_name: str,
        creator: EventCreator,
        store: Any,
        loader: EventLoader,
        shard_counts: Mapping[str, int],
        profile_lookup: Optional[ProfileLookup] = None,
        ratelimiter: Any = None,
    ) -> None:
        self.server_name = server_name
        self.creator = creator
        self._store = store
        self.loader = loader
        self._shard_counts = shard_counts
        self._profile = profile_lookup
        self._ratelimiter = ratelimiter
        #: ``await guard(user_id, room_id)`` before a leave; raising refuses it
        #: (server notices rooms cannot be left).
        self.leave_guards: list[Callable[[str, str], Awaitable[None]]] = []
        #: Joins rooms unknown here over federation (set by the federation wiring).
        self.remote_join: Optional[Callable[[str, str, Sequence[str], Mapping[str, Any]], Awaitable[Any]]] = None
        #: Leaves a room known only from a remote invite (``remote_leave(user_id, room_id, servers, content)``).
        self.remote_leave: Optional[Callable[[str, str, Sequence[str], Mapping[str, Any]], Awaitable[Any]]] = None
        # Federation backfill: ``remote_backfill(room_id, limit)`` fetches one
        # round of history older than the room's oldest event (count stored).
        self.remote_backfill: Optional[Callable[[str, int], Awaitable[int]]] = None
        #: Resolves an alias of another server over federation (``remote_alias(alias) -> (room_id, servers)``).
        self.remote_alias: Optional[Callable[[str], Awaitable[tuple[str, list[str]]]]] = None
        #: Has an invite of a remote user signed by its server (``remote_invite(event) -> event``).
        self.remote_invite: Optional[Callable[[Event], Awaitable[Event]]] = None

    async def _rate_limit(self, requester: Any, room_id: str, kind: str) -> None:
        """Per-user message / join limits (issue 5), charged once: on the room's
        shard owner, so a write forwarded from another instance is not counted twice."""
        if self._ratelimiter is None or not self.creator.owns_room(room_id):
            return
        if kind == "join":
            await self._ratelimiter.check_join(requester)
        else:
            await self._ratelimiter.check_message(requester)

    # -- createRoom ------------------------------------------------------------

    async def create_room(self, requester: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /createRoom: build the room's first events in the spec's order."""
        user_id = requester.user_id
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise bad_json("'visibility' must be 'public' or 'private'")
        preset = body.get("preset", "public_chat" if visibility == "public" else "private_chat")
        if preset not in PRESETS:
            raise bad_json(f"'preset' must be one of {', '.join(PRESETS)}")
        version_id = body.get("room_version", DEFAULT_ROOM_VERSION.identifier)
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, f"Unsupported room version {version_id!r}")
        version = KNOWN_ROOM_VERSIONS[version_id]
        for key in ("name", "topic", "room_alias_name"):
            if key in body and not isinstance(body[key], str):
                raise bad_json(f"'{key}' must be a string")
        invite = body.get("invite", [])
        if not isinstance(invite, list):
            raise bad_json("'invite' must be a list of user IDs")
        invitees = [_require_user_id(u, "'invite' entries") for u in invite]
        invitees = [u for u in dict.fromkeys(invitees) if u != user_id]
        if "invite_3pid" in body and body["invite_3pid"]:
            raise MatrixError(400, Codes.UNRECOGNIZED, "Third-party invites are not supported")
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise bad_json("'is_direct' must be a boolean")
        creation_content = body.get("creation_content", {})
        if not isinstance(creation_content, dict):
            raise bad_json("'creation_content' must be an object")
        pl_override = body.get("power_level_content_override")
        if pl_override is not None and not isinstance(pl_override, dict):
            raise bad_json("'power_level_content_override' must be an object")
        initial_state = body.get("initial_state", [])
        if not isinstance(initial_state, list):
            raise bad_json("'initial_state' must be a list")
        parsed_initial: list[tuple[str, str, dict[str, Any]]] = []
        for item in initial_state:
            if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(item.get("content"), dict):
                raise bad_json("'initial_state' entries need a string 'type' and an object 'content'")
            state_key = item.get("state_key", "")
            if not isinstance(state_key, str):
                raise bad_json("'initial_state' state_key must be a string")
            parsed_initial.append((item["type"], state_key, item["content"]))

        alias = None
        if "room_alias_name" in body:
            localpart = body["room_alias_name"]
            if not _ALIAS_LOCALPART.match(localpart):
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid characters in room alias")
            alias = f"#{localpart}:{self.server_name}"
            if len(alias.encode("utf-8")) > 255:
                raise MatrixError(400, Codes.INVALID_PARAM, "Room alias too long")
            if await self._store.get_alias(alias) is not None:
                raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")

        content = dict(creation_content)
        content["room_version"] = version.identifier
        if not version.implicit_room_creator:
            content["creator"] = user_id
        if version.additional_creators and preset == "trusted_private_chat" and invitees:
            extra = content.get("additional_creators", [])
            if not isinstance(extra, list):
                raise bad_json("'additional_creators' must be a list of user IDs")
            content["additional_creators"] = list(dict.fromkeys([*extra, *invitees]))

        new_room = NewRoom(version, user_id, visibility == "public")
        room_id = None if version.room_id_is_create_event_hash else self.creator.new_room_id()
        created = await self.creator.create_room_event(new_room, content, room_id)
        room_id = created.event.room_id

        async def send(etype: str, state_key: str, event_content: Mapping[str, Any]) -> CreatedEvent:
            return await self.creator.create_event(room_id, user_id, etype, event_content, state_key=state_key)

        await send("m.room.member", user_id, await self._member_content(user_id, "join"))
        pl = default_power_levels(version, user_id, preset, invitees)
        if pl_override:
            pl.update(thaw(pl_override))
        await send("m.room.power_levels", "", pl)
        if alias is not None:
            try:
                await self._store.create_alias(alias, room_id, user_id)
            except AliasInUseError:
                raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")
            await send("m.room.canonical_alias", "", {"alias": alias})
        initial_keys = {(t, k) for t, k, _ in parsed_initial}
        for etype, event_content in preset_state(preset):
            if (etype, "") not in initial_keys:
                await send(etype, "", event_content)
        for etype, state_key, event_content in parsed_initial:
            if (etype == "m.room.name" and "name" in body) or (etype == "m.room.topic" and "topic" in body):
                continue
            await send(etype, state_key, event_content)
        if "name" in body:
            await send("m.room.name", "", {"name": body["name"]})
        if "topic" in body:
            topic = body["topic"]
            await send("m.room.topic", "", {"topic": topic, "m.topic": [{"body": topic, "mimetype": "text/plain"}]})
        for invitee in invitees:
            invite_content: dict[str, Any] = {"membership": "invite"}
            if is_direct:
                invite_content["is_direct"] = True
            await send("m.room.member", invitee, invite_content)
        result: dict[str, Any] = {"room_id": room_id}
        if alias is not None:
            result["room_alias"] = alias
        return result

    # -- sending -----------------------------------------------------------------

    async def send_event(self, requester: Any, room_id: str, event_type: str, content: Any, txn_id: Optional[str]) -> CreatedEvent:
        """PUT /rooms/{roomId}/send/{eventType}/{txnId}."""
        _check_event_type(event_type)
        if not isinstance(content, dict):
            raise bad_json("Event content must be a JSON object")
        await self._require_room(room_id)
        key = txn_key_for(requester, room_id, txn_id) if txn_id is not None else None
        await self._rate_limit(requester, room_id, "message")
        return await self.creator.create_event(
            room_id, requester.user_id, event_type, content, txn_key=key, check=self._sender_joined(requester.user_id)
        )

    async def send_state(self, requester: Any, room_id: str, event_type: str, state_key: str, content: Any) -> CreatedEvent:
        """PUT /rooms/{roomId}/state/{eventType}/{stateKey}."""
        _check_event_type(event_type)
        if not isinstance(content, dict):
            raise bad_json("Event content must be a JSON object")
        await self._require_room(room_id)
        if event_type == "m.room.member":
            membership = content.get("membership")
            if membership not in ("join", "leave", "invite", "ban"):
                raise bad_json("Invalid membership")
        return await self.creator.create_event(
            room_id, requester.user_id, event_type, content, state_key=state_key,
            check=None if event_type == "m.room.member" else self._sender_joined(requester.user_id),
        )

    async def redact(self, requester: Any, room_id: str, event_id: str, txn_id: Optional[str], reason: Optional[str]) -> CreatedEvent:
        """PUT /rooms/{roomId}/redact/{eventId}/{txnId}."""
        version = await self._require_room(room_id)
        if not ids.is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        targets = await self.loader.get_events(room_id, [event_id])
        target = targets.get(event_id)
        content: dict[str, Any] = {}
        if reason is not None:
            content["reason"] = reason
        user_id = requester.user_id

        def check(state: Mapping[StateKey, Event], event: Event) -> None:
            self._sender_joined(user_id)(state, event)
            if target is None or target.sender == user_id:
                return
            create = state.get(("m.room.create", ""))
            pl = state.get(("m.room.power_levels", ""))
            level = get_user_power_level(user_id, pl, create, version)
            if level < get_named_level(pl, "redact", version):
                raise forbidden("You don't have permission to redact events of other users")

        key = txn_key_for(requester, room_id, txn_id) if txn_id is not None else None
        return await self.creator.create_event(
            room_id, user_id, "m.room.redaction", content, redacts=event_id, txn_key=key, check=check
        )

    # -- membership ----------------------------------------------------------------

    async def resolve_room(self, room_id_or_alias: str) -> str:
        """A room ID from a room ID or a local alias (404 if unknown)."""
        if room_id_or_alias.startswith("#"):
            try:
                ids.RoomAlias.parse(room_id_or_alias)
            except ValueError:
                raise invalid_param("Invalid room alias")
            room_id = await self._store.get_alias(room_id_or_alias)
            if room_id is None:
                raise not_found("Room alias not found")
            return room_id
        if not room_id_or_alias.startswith("!"):
            raise invalid_param("Expected a room ID or alias")
        return room_id_or_alias

    async def resolve_room_and_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """Like :meth:`resolve_room`, and an alias of another server is asked of that server
        (when this server federates): the room ID and the servers to join it through."""
        if room_id_or_alias.startswith("#") and self.remote_alias is not None:
            try:
                alias = ids.RoomAlias.parse(room_id_or_alias)
            except ValueError:
                raise invalid_param("Invalid room alias")
            if alias.domain != self.server_name:
                return await self.remote_alias(room_id_or_alias)
        return await self.resolve_room(room_id_or_alias), []

    async def join(self, requester: Any, room_id_or_alias: str, reason: Optional[str] = None,
                   servers: Sequence[str] = ()) -> str:
        """POST /join/{roomIdOrAlias} and /rooms/{roomId}/join.

        A room unknown here is joined over federation through ``servers``
        (the ``server_name`` / ``via`` parameters, else the room ID's server)
        when :attr:`remote_join` is set (``remote_join(user_id, room_id,
        servers, content)``, run on the room's events shard owner).
        """
        room_id = await self.resolve_room(room_id_or_alias)
        if await self.loader.room_version(room_id) is None or (
            self.remote_join is not None and not await self._server_in_room(room_id)
        ):
            if self.remote_join is None:
                raise not_found("No known servers for this room")
            candidates = [s for s in servers if s]
            invite = await self._store.get_membership(room_id, requester.user_id)
            if invite is not None and invite.membership == "invite" and ":" in invite.sender:
                candidates.append(invite.sender.split(":", 1)[1])
            if ":" in room_id and room_id.split(":", 1)[1] not in candidates:
                candidates.append(room_id.split(":", 1)[1])
            if not candidates:
                raise not_found("No known servers for this room")
            content = await self._member_content(requester.user_id, "join", reason)
            await self.remote_join(requester.user_id, room_id, candidates, content)
            return room_id
        current = await self._store.get_membership(room_id, requester.user_id)
        if current is not None and current.membership == "join":
            return room_id
        await self._rate_limit(requester, room_id, "join")
        content = await self._member_content(requester.user_id, "join", reason)
        await self.creator.create_event(room_id, requester.user_id, "m.room.member", content, state_key=requester.user_id)
        return room_id

    async def _server_in_room(self, room_id: str) -> bool:
        """False when no user of ours is joined but users of other servers are, or when the room is
        known here only from an invite by another server: joining then goes through federation."""
        members = await self._store.get_room_members(room_id)
        local = ":" + self.server_name
        if any(m.membership == "join" and m.user_id.endswith(local) for m in members):
            return True
        remote_joined = any(m.membership == "join" for m in members)
        remote_invite = any(m.membership == "invite" and not m.sender.endswith(local) for m in members)
        return not (remote_joined or remote_invite)

    async def knock(self, requester: Any, room_id_or_alias: str, reason: Optional[str] = None) -> str:
        """POST /knock/{roomIdOrAlias}: ask to join a room whose join rule allows knocking."""
        room_id = await self.resolve_room(room_id_or_alias)
        version = await self.loader.room_version(room_id)
        if version is None:
            raise not_found("No known servers for this room")
        if not version.knock_join_rule:
            raise forbidden(f"Room version {version.identifier} does not support knocking")
        current = await self._store.get_membership(room_id, requester.user_id)
        if current is not None and current.membership == "join":
            raise forbidden("You are already in this room")
        content: dict[str, Any] = {"membership": "knock"}
        profile = await self._member_content(requester.user_id, "knock", reason)
        content.update(profile)
        await self.creator.create_event(room_id, requester.user_id, "m.room.member", content, state_key=requester.user_id)
        return room_id

    async def leave(self, requester: Any, room_id: str, reason: Optional[str] = None) -> None:
        """POST /rooms/{roomId}/leave (also rejects invites)."""
        for guard in self.leave_guards:
            await guard(requester.user_id, room_id)
        await self._require_room(room_id, status=404)
        current = await self._store.get_membership(room_id, requester.user_id)
        if current is None or current.membership in ("leave", "ban"):
            if current is not None and current.membership == "leave":
                return
            raise forbidden("You are not a member of this room")
        content: dict[str, Any] = {"membership": "leave"}
        if reason is not None:
            content["reason"] = reason
        if (self.remote_leave is not None and current.membership in ("invite", "knock") and ":" in current.sender
                and not await self._server_in_room(room_id)):
            # Rejecting an invite to a room we are not in: through the inviting server.
            await self.remote_leave(requester.user_id, room_id, [current.sender.split(":", 1)[1]], content)
            return
        await self.creator.create_event(room_id, requester.user_id, "m.room.member", content, state_key=requester.user_id)

    async def change_membership(self, requester: Any, room_id: str, target: str, action: str, reason: Optional[str] = None,
                                extra: Optional[Mapping[str, Any]] = None) -> None:
        """invite / kick / ban / unban of ``target`` by the requester."""
        _require_user_id(target, "user_id")
        await self._require_room(room_id, status=404)
        sender = await self._store.get_membership(room_id, requester.user_id)
        if sender is None or sender.membership != "join":
            raise forbidden("You are not joined to this room")
        current = await self._store.get_membership(room_id, target)
        current_m = current.membership if current is not None else None
        if action == "invite":
            if current_m == "join":
                raise forbidden(f"{target} is already in the room")
            if current_m == "ban":
                raise forbidden(f"{target} is banned from the room")
            membership = "invite"
        elif action == "kick":
            if current_m not in ("join", "invite", "knock"):
                raise forbidden(f"{target} is not in the room")
            membership = "leave"
        elif action == "ban":
            membership = "ban"
        elif action == "unban":
            if current_m != "ban":
                raise forbidden(f"{target} is not banned")
            membership = "leave"
        else:
            raise ValueError(action)
        content: dict[str, Any] = {"membership": membership}
        if extra:
            content.update(extra)
        if reason is not None:
            content["reason"] = reason
        countersign = None
        if membership == "invite" and not target.endswith(":" + self.server_name):
            if self.remote_invite is None:
                raise forbidden("This server cannot invite users of other servers")
            countersign = self.remote_invite
        await self.creator.create_event(room_id, requester.user_id, "m.room.member", content, state_key=target,
                                        countersign=countersign)

    async def forget(self, requester: Any, room_id: str) -> None:
        """POST /rooms/{roomId}/forget: only once left."""
        current = await self._store.get_membership(room_id, requester.user_id)
        if current is None:
            raise not_found("You have never been in this room")
        if current.membership not in ("leave", "ban"):
            raise MatrixError(400, Codes.UNKNOWN, "You must leave the room before forgetting it")
        await self._store.forget_room(room_id, requester.user_id)

    async def joined_rooms(self, requester: Any) -> list[str]:
        """GET /joined_rooms."""
        memberships = await self._store.get_memberships_for_user(requester.user_id)
        return sorted(m.room_id for m in memberships if m.membership == "join")

    # -- reads -----------------------------------------------------------------

    async def _access(self, user_id: str, room_id: str) -> tuple[RoomVersion, Optional[int]]:
        """Whether the user may read the room: (version, position cap or None for 'up to now').

        Joined users read the present; users who left or were banned read up
        to that moment; anyone reads a world-readable room. 403 otherwise
        (also for unknown rooms, which must not be distinguishable).
        """
        version = await self.loader.room_version(room_id)
        if version is None:
            raise forbidden("You are not in this room")
        membership = await self._store.get_membership(room_id, user_id)
        if membership is not None and membership.membership == "join":
            return version, None
        if membership is not None and membership.membership in ("leave", "ban"):
            history, _ = await self._store.get_visibility_history(room_id, user_id)
            if any(m == "join" for _, m in history):
                return version, membership.stream_position
        state = await self._store.get_current_state_ids(room_id)
        hv_id = state.get(("m.room.history_visibility", ""))
        if hv_id is not None:
            hv = (await self.loader.get_events(room_id, [hv_id])).get(hv_id)
            if hv is not None and hv.content.get("history_visibility") == "world_readable":
                return version, None
        raise forbidden("You are not in this room")

    async def _state_ids(self, room_id: str, cap: Optional[int]) -> dict[StateKey, str]:
        if cap is None:
            return await self._store.get_current_state_ids(room_id)
        found = await self._store.get_state_at_position(room_id, cap)
        return found[1] if found else {}

    async def get_state(self, requester: Any, room_id: str) -> list[dict[str, Any]]:
        """GET /rooms/{roomId}/state."""
        _, cap = await self._access(requester.user_id, room_id)
        state = await self._state_ids(room_id, cap)
        rows = await self._store.get_events(room_id, list(state.values()))
        return await self.loader.serialize_rows(room_id, sorted(rows.values(), key=lambda r: r.stream_position))

    async def get_state_event(self, requester: Any, room_id: str, event_type: str, state_key: str, format_: str = "content") -> dict[str, Any]:
        """GET /rooms/{roomId}/state/{eventType}/{stateKey}."""
        _, cap = await self._access(requester.user_id, room_id)
        state = await self._state_ids(room_id, cap)
        event_id = state.get((event_type, state_key))
        if event_id is None:
            raise not_found("Event not found")
        rows = await self._store.get_events(room_id, [event_id])
        serialized = await self.loader.serialize_rows(room_id, list(rows.values()))
        if not serialized:
            raise not_found("Event not found")
        return serialized[0] if format_ == "event" else serialized[0]["content"]

    async def get_members(self, requester: Any, room_id: str, membership: Optional[str] = None,
                          not_membership: Optional[str] = None, at: Optional[str] = None) -> list[dict[str, Any]]:
        """GET /rooms/{roomId}/members."""
        _, cap = await self._access(requester.user_id, room_id)
        if at is not None:
            try:
                token = StreamToken.decode(at, self._shard_counts)
            except InvalidTokenError as e:
                raise invalid_param(str(e))
            position = token.events[self.creator.shard_of(room_id)]
            cap = position if cap is None else min(cap, position)
        state = await self._state_ids(room_id, cap)
        member_ids = [e for (t, _), e in state.items() if t == "m.room.member"]
        rows = await self._store.get_events(room_id, member_ids)
        chunk = []
        for row in sorted(rows.values(), key=lambda r: r.stream_position):
            if membership is not None and row.membership != membership:
                continue
            if not_membership is not None and row.membership == not_membership:
                continue
            chunk.append(row)
        return await self.loader.serialize_rows(room_id, chunk)

    async def joined_members(self, requester: Any, room_id: str) -> dict[str, Any]:
        """GET /rooms/{roomId}/joined_members (joined users only)."""
        _, cap = await self._access(requester.user_id, room_id)
        state = await self._state_ids(room_id, cap)
        member_ids = [e for (t, _), e in state.items() if t == "m.room.member"]
        events = await self.loader.get_events(room_id, member_ids)
        joined = {}
        for event in events.values():
            if event.membership == "join":
                entry = {}
                for source, target in (("displayname", "display_name"), ("avatar_url", "avatar_url")):
                    if isinstance(event.content.get(source), str):
                        entry[target] = event.content[source]
                joined[event.state_key] = entry
        return joined

    async def get_event(self, requester: Any, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /rooms/{roomId}/event/{eventId}: 404 when missing or not visible."""
        try:
            _, cap = await self._access(requester.user_id, room_id)
        except MatrixError:
            raise not_found("Event not found")
        rows = await self._store.get_events(room_id, [event_id])
        row = rows.get(event_id)
        if row is None or (cap is not None and row.stream_position > cap):
            raise not_found("Event not found")
        visible = await self._visible_rows(requester.user_id, room_id, [row])
        if not visible:
            raise not_found("Event not found")
        return (await self.loader.serialize_rows(room_id, visible))[0]

    async def _visible_rows(self, user_id: str, room_id: str, rows: list[Any]) -> list[Any]:
        memberships, visibilities = await self._store.get_visibility_history(room_id, user_id)
        history = VisibilityHistory(tuple(memberships), tuple(visibilities))
        return [
            r for r in rows
            if history.visible(r.stream_position, is_own_membership=(r.type == "m.room.member" and r.state_key == user_id))
        ]

    async def _point(self, room_id: str, token: str, backwards: bool) -> TopoToken:
        """A pagination point from a topological token or a sync token."""
        try:
            if token.startswith("t"):
                return TopoToken.decode(token)
            stream = StreamToken.decode(token, self._shard_counts)
        except InvalidTokenError as e:
            raise invalid_param(str(e))
        position = stream.events[self.creator.shard_of(room_id)]
        found, _ = await self._store.get_room_events_in_range(room_id, 0, position, 1)
        if not found:
            return TopoToken(0, 0)
        last = found[-1]
        return TopoToken(last.depth, last.stream_position + (1 if backwards else 0))

    async def messages(self, requester: Any, room_id: str, from_token: Optional[str], to_token: Optional[str],
                       direction: str, limit: int, filter_json: Any) -> dict[str, Any]:
        """GET /rooms/{roomId}/messages."""
        if direction not in ("b", "f"):
            raise invalid_param("dir must be 'b' or 'f'")
        backwards = direction == "b"
        event_filter = EventFilter.parse(filter_json)
        _, cap = await self._access(requester.user_id, room_id)
        if from_token is None:
            point = TopoToken(2**62, 0) if backwards else TopoToken(0, 0)
        else:
            point = await self._point(room_id, from_token, backwards)
        end = None
        if to_token is not None:
            to_point = await self._point(room_id, to_token, not backwards)
            end = (to_point.depth, to_point.position)
        limit = max(0, min(limit, MAX_MESSAGES_LIMIT))
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        rows, more = await self._store.paginate(
            room_id, point.depth, point.position, backwards, limit,
            types=event_filter.types, not_types=event_filter.not_types,
            senders=event_filter.senders, not_senders=event_filter.not_senders, end=end,
        )
        if backwards and not more and self.remote_backfill is not None:
            # The page reached this server's oldest event: ask the room's
            # other servers for one bounded round of earlier history.
            if await self.remote_backfill(room_id, max(limit - len(rows), 1) + 1) > 0:
                rows, more = await self._store.paginate(
                    room_id, point.depth, point.position, backwards, limit,
                    types=event_filter.types, not_types=event_filter.not_types,
                    senders=event_filter.senders, not_senders=event_filter.not_senders, end=end,
                )
        if cap is not None:
            if not backwards and any(r.stream_position > cap for r in rows):
                more = False
            rows = [r for r in rows if r.stream_position <= cap]
        visible = await self._visible_rows(requester.user_id, room_id, rows)
        chunk = await self.loader.serialize_rows(room_id, visible, txn_ids=await self._txn_ids(requester, room_id, visible))
        chunk = [e for e in chunk if event_filter.allows(e)]
        result: dict[str, Any] = {"chunk": chunk, "start": from_token or point.encode()}
        if rows and more:
            last = rows[-1]
            result["end"] = TopoToken(last.depth, last.stream_position).encode()
        if event_filter.lazy_load_members and chunk:
            result["state"] = await self._member_state(room_id, {e["sender"] for e in chunk}, cap)
        return result

    async def _member_state(self, room_id: str, users: set[str], cap: Optional[int]) -> list[dict[str, Any]]:
        state = await self._state_ids(room_id, cap)
        wanted = [state[("m.room.member", u)] for u in sorted(users) if ("m.room.member", u) in state]
        rows = await self._store.get_events(room_id, wanted)
        return await self.loader.serialize_rows(room_id, sorted(rows.values(), key=lambda r: r.stream_position))

    async def _txn_ids(self, requester: Any, room_id: str, rows: list[Any]) -> dict[str, str]:
        own = [r.event_id for r in rows if r.sender == requester.user_id]
        if not own:
            return {}
        device = requester.device_id if requester.device_id is not None else f"token:{requester.access_token_id}"
        return await self._store.get_txn_ids_for_events(room_id, requester.user_id, device, own)

    async def context(self, requester: Any, room_id: str, event_id: str, limit: int, filter_json: Any) -> dict[str, Any]:
        """GET /rooms/{roomId}/context/{eventId}."""
        event_filter = EventFilter.parse(filter_json)
        try:
            _, cap = await self._access(requester.user_id, room_id)
        except MatrixError:
            raise not_found("Event not found")
        rows = await self._store.get_events(room_id, [event_id])
        row = rows.get(event_id)
        if row is None or (cap is not None and row.stream_position > cap) or not await self._visible_rows(requester.user_id, room_id, [row]):
            raise not_found("Event not found")
        limit = max(0, min(limit, MAX_MESSAGES_LIMIT))
        before_n = limit // 2
        after_n = limit - before_n
        kw = dict(types=event_filter.types, not_types=event_filter.not_types, senders=event_filter.senders, not_senders=event_filter.not_senders)
        before, _ = await self._store.paginate(room_id, row.depth, row.stream_position, True, before_n, **kw)
        after, _ = await self._store.paginate(room_id, row.depth, row.stream_position, False, after_n, **kw)
        if cap is not None:
            after = [r for r in after if r.stream_position <= cap]
        before = await self._visible_rows(requester.user_id, room_id, before)
        after = await self._visible_rows(requester.user_id, room_id, after)
        serialized = await self.loader.serialize_rows(room_id, [row] + before + after)
        event_json = serialized[0]
        before_json = [e for e in serialized[1:1 + len(before)] if event_filter.allows(e)]
        after_json = [e for e in serialized[1 + len(before):] if event_filter.allows(e)]
        first = before[-1] if before else row
        last = after[-1] if after else row
        state_pos = last.stream_position
        state_found = await self._store.get_state_at_position(room_id, state_pos if cap is None else min(cap, state_pos))
        state_ids = state_found[1] if state_found else {}
        if event_filter.lazy_load_members:
            senders = {e["sender"] for e in [event_json, *before_json, *after_json]}
            state_ids = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders}
        state_rows = await self._store.get_events(room_id, list(state_ids.values()))
        state = await self.loader.serialize_rows(room_id, sorted(state_rows.values(), key=lambda r: r.stream_position))
        return {
            "event": event_json,
            "events_before": before_json,
            "events_after": after_json,
            "start": TopoToken(first.depth, first.stream_position).encode(),
            "end": TopoToken(last.depth, last.stream_position).encode(),
            "state": state,
        }

    # -- helpers -------------------------------------------------------------

    async def _require_room(self, room_id: str, status: int = 404) -> RoomVersion:
        if not room_id.startswith("!"):
            raise invalid_param("Invalid room ID")
        version = await self.loader.room_version(room_id)
        if version is None:
            if status == 403:
                raise forbidden("You are not in this room")
            raise not_found("Unknown room")
        return version

    @staticmethod
    def _sender_joined(user_id: str) -> Callable[[Mapping[StateKey, Event], Event], None]:
        def check(state: Mapping[StateKey, Event], event: Event) -> None:
            member = state.get(("m.room.member", user_id))
            if member is None or member.membership != "join":
                raise forbidden(f"User {user_id} not in room")

        return check

    async def _member_content(self, user_id: str, membership: str, reason: Optional[str] = None) -> dict[str, Any]:
        content: dict[str, Any] = {"membership": membership}
        if self._profile is not None:
            try:
                profile = await self._profile(user_id)
            except MatrixError:
                profile = {}
            for key in ("displayname", "avatar_url"):
                if isinstance(profile.get(key), str):
                    content[key] = profile[key]
        if reason is not None:
            content["reason"] = reason
        return content
