"""The server-server room API: transactions, room reads, joins and leaves as resident server,
and the outbound side (local events and EDUs to the other servers of a room).

:class:`FederationRooms` holds the logic of each endpoint on plain values
(the HTTP edge is ``homeserver/rest/federation/rooms.py``). Writes run on
the room's events shard owner through the command dispatcher
(``homeserver.replication``): :data:`RECEIVE_PDU` and :data:`SEND_MEMBERSHIP`
are the commands; reads are served by any instance from PostgreSQL.

Access: every room read and every PDU of a transaction requires the origin
to be allowed by the room's ``m.room.server_acl`` and to have a joined
member in the room (M_FORBIDDEN otherwise).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

import secrets
from urllib.parse import quote

from homeserver.core import auth as auth_rules
from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from homeserver.core.rooms import NewRoomRow
from homeserver.core.redaction import prune_event_dict
from homeserver.core.signing import add_hashes_and_signatures, compute_event_id, sign_json
from homeserver.core.events import Event, thaw
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, not_found
from homeserver.federation.acl import server_allowed
from homeserver.federation.events import (
    FederationEventHandler,
    PduRefused,
    auth_state_for,
    federation_pdu,
    parse_received_pdu,
)
from homeserver.federation.events import check_auth_chain as _auth_chain_accepted

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]

#: Dispatcher commands (run on the room's events shard owner).
RECEIVE_PDU = "federation_receive_pdu"
SEND_MEMBERSHIP = "federation_send_membership"
INVITE = "federation_invite"
TYPING = "federation_typing"
RECEIPT = "federation_receipt"

#: How long a remote user's typing notification lasts without a refresh (servers send no timeout).
REMOTE_TYPING_TIMEOUT_MS = 30_000

#: Stripped state sent with invites (spec: client-server "Stripped state").
INVITE_STATE_TYPES = ("m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules",
                      "m.room.canonical_alias", "m.room.encryption")

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
MAX_BACKFILL = 100
MAX_MISSING = 20


def domain_of(user_id: str) -> str:
    """The server name part of a user ID (``""`` if malformed)."""
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class FederationRooms:
    """Room-level federation on one instance.

    ``events`` is the :class:`FederationEventHandler` (used when this
    instance owns the room's shard), ``dispatcher`` runs commands on the
    owner, ``store`` / ``fed_store`` / ``loader`` read rooms and events,
    ``queue`` is the outbound ``FederationQueue``, ``signing`` the
    ``(server_name, signing_key)`` pair.
    """

    def __init__(
        self,
        clock: Any,
        server_name: str,
        events: FederationEventHandler,
        dispatcher: Any,
        store: Any,
        fed_store: Any,
        queue: Any,
    ) -> None:
        self._clock = clock
        self.server_name = server_name
        self.events = events
        self._dispatcher = dispatcher
        self._store = store
        self._fed = fed_store
        self.loader = events.loader
        self._queue = queue
        #: ``user_id -> profile dict`` of local users (``ProfileStore.get_profile``), for /query/profile.
        self.profile_lookup: Optional[Callable[[str], Awaitable[Mapping[str, Any]]]] = None
        #: ``edu_type -> handler(origin, content)`` for inbound EDUs.
        self.edu_handlers: dict[str, Callable[[str, Any], Awaitable[None]]] = {}

    def now_ms(self) -> int:
        """Milliseconds on the injected clock."""
        return int(self._clock.seconds() * 1000)

    def register_commands(self) -> None:
        """Register the shard-owner commands on the dispatcher."""
        self._dispatcher.register(RECEIVE_PDU, "events", self._cmd_receive_pdu)
        self._dispatcher.register(SEND_MEMBERSHIP, "events", self._cmd_send_membership)
        self._dispatcher.register(INVITE, "events", self._cmd_invite)

    # -- access ---------------------------------------------------------------

    async def check_access(self, origin: str, room_id: str) -> None:
        """M_FORBIDDEN unless ``origin`` passes the room's ACL and has a joined member; 404 for unknown rooms."""
        if await self.loader.room_version(room_id) is None:
            raise not_found("Unknown room")
        await self._check_acl(origin, room_id)
        if origin not in await self._fed.get_joined_servers(room_id):
            raise forbidden(f"{origin} is not in room {room_id}")

    async def _check_acl(self, origin: str, room_id: str) -> None:
        # Runs for every received PDU: read the one state entry, not the room's whole state.
        acl_id = await self._store.get_current_state_id(room_id, "m.room.server_acl", "")
        if acl_id is None:
            return
        acl = await self.loader.get_events(room_id, [acl_id])
        if acl_id in acl and not server_allowed(thaw(acl[acl_id].content), origin):
            raise forbidden(f"{origin} is denied by the room's server ACL")

    # -- transactions ----------------------------------------------------------

    async def on_transaction(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]:
        """``PUT /send/{txnId}``: the per-PDU result map; EDUs handled best effort."""
        if not isinstance(body, Mapping):
            raise bad_json("transaction must be an object")
        if body.get("origin", origin) != origin:
            raise forbidden("transaction origin does not match the request's")
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise bad_json("pdus and edus must be arrays")
        if len(pdus) > MAX_PDUS_PER_TXN or len(edus) > MAX_EDUS_PER_TXN:
            raise bad_json("too many PDUs or EDUs in one transaction")
        results: dict[str, Any] = {}
        for pdu in pdus:
            event_id, result = await self._receive_one(origin, pdu)
            if event_id is not None:
                results[event_id] = result
        for edu in edus:
            await self._receive_edu(origin, edu)
        return {"pdus": results}

    async def _receive_one(self, origin: str, pdu: Any) -> tuple[Optional[str], dict[str, Any]]:
        room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
        if not isinstance(room_id, str):
            return None, {}
        version = await self.loader.room_version(room_id)
        if version is None:
            return None, {}
        try:
            event = parse_received_pdu(pdu, version)
        except PduRefused as e:
            logger.info("dropping unparseable PDU from %s: %s", origin, e)
            return None, {}
        try:
            await self.check_access(origin, room_id)
        except MatrixError as e:
            return event.event_id, {"error": e.msg if hasattr(e, "msg") else str(e)}
        try:
            result = await self._dispatcher.run(RECEIVE_PDU, room_id, {"origin": origin, "pdu": thaw(pdu)})
        except MatrixError as e:
            result = {"error": str(e)}
        except Exception as e:  # one bad PDU must not fail the whole transaction
            logger.exception("processing %s from %s failed", event.event_id, origin)
            result = {"error": f"internal error: {type(e).__name__}"}
        return event.event_id, result

    async def _cmd_receive_pdu(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.events.receive_pdu(args["origin"], args["pdu"])

    async def _receive_edu(self, origin: str, edu: Any) -> None:
        if not isinstance(edu, Mapping) or not isinstance(edu.get("edu_type"), str):
            return
        handler = self.edu_handlers.get(edu["edu_type"])
        if handler is None:
            logger.info("dropping %s EDU from %s: not handled here", edu["edu_type"], origin)
            return
        try:
            await handler(origin, edu.get("content"))
        except MatrixError as e:
            logger.info("refused %s EDU from %s: %s", edu["edu_type"], origin, e)
        except Exception:
            logger.exception("%s EDU from %s failed", edu["edu_type"], origin)

    # -- reads -------------------------------------------------------------------

    def _envelope(self, pdus: list[dict[str, Any]]) -> dict[str, Any]:
        return {"origin": self.server_name, "origin_server_ts": self.now_ms(), "pdus": pdus}

    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]:
        """``GET /event/{eventId}``."""
        room_id = await self._fed.find_event_room(event_id)
        if room_id is None:
            raise not_found("Event not found")
        await self.check_access(origin, room_id)
        event = await self.loader.get_event(room_id, event_id)
        return self._envelope([federation_pdu(event)])

    async def _event_in_room(self, room_id: str, event_id: str) -> Event:
        events = await self.loader.get_events(room_id, [event_id])
        if event_id not in events:
            raise not_found(f"Could not find event {event_id}")
        return events[event_id]

    async def state_before(self, event: Event) -> dict[StateKey, str]:
        """The resolved state before ``event`` (from the states after its prev events)."""
        rows = await self._store.get_events(event.room_id, list(event.prev_event_ids))
        groups = sorted({r.state_group for r in rows.values()})
        states = await self._store.get_state_ids_for_groups(event.room_id, groups)
        return await self.events.resolve(event.room_version, event.room_id, [states[g] for g in groups])

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /state_ids/{roomId}?event_id=``: state before the event and its auth chain, as IDs."""
        await self.check_access(origin, room_id)
        event = await self._event_in_room(room_id, event_id)
        state = await self.state_before(event)
        chain = await self.events.auth_closure(room_id, [a for e in (await self.loader.get_events(room_id, state.values())).values()
                                                           for a in e.auth_event_ids_with_create])
        return {"pdu_ids": sorted(state.values()), "auth_chain_ids": sorted(chain)}

    async def get_state(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /state/{roomId}?event_id=``: as :meth:`get_state_ids` with the PDUs."""
        await self.check_access(origin, room_id)
        event = await self._event_in_room(room_id, event_id)
        state = await self.state_before(event)
        return await self._state_and_chain(room_id, list(state.values()))

    async def _state_and_chain(self, room_id: str, state_ids: list[str]) -> dict[str, Any]:
        events = await self.loader.get_events(room_id, state_ids)
        chain = await self.events.auth_closure(room_id, [a for e in events.values() for a in e.auth_event_ids_with_create])
        return {
            "pdus": [federation_pdu(events[e]) for e in sorted(events)],
            "auth_chain": [federation_pdu(chain[e]) for e in sorted(chain)],
        }

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /event_auth/{roomId}/{eventId}``: the event's full auth chain."""
        await self.check_access(origin, room_id)
        event = await self._event_in_room(room_id, event_id)
        chain = await self.events.auth_closure(room_id, event.auth_event_ids_with_create)
        return {"auth_chain": [federation_pdu(chain[e]) for e in sorted(chain)]}

    async def backfill(self, origin: str, room_id: str, from_ids: list[str], limit: int) -> dict[str, Any]:
        """``GET /backfill/{roomId}?v=...&limit=``: the given events and their ancestors, newest first."""
        await self.check_access(origin, room_id)
        limit = max(0, min(limit, MAX_BACKFILL))
        found = await self._walk_back(room_id, from_ids, limit, stop=set(), include_start=True)
        return self._envelope([federation_pdu(e) for e in found])

    async def get_missing_events(self, origin: str, room_id: str, body: Any) -> dict[str, Any]:
        """``POST /get_missing_events/{roomId}``: ancestors of ``latest_events`` not reachable past ``earliest_events``."""
        await self.check_access(origin, room_id)
        if not isinstance(body, Mapping):
            raise bad_json("body must be an object")
        latest = body.get("latest_events")
        earliest = body.get("earliest_events", [])
        limit = body.get("limit", 10)
        min_depth = body.get("min_depth", 0)
        if not isinstance(latest, list) or not isinstance(earliest, list) or not isinstance(limit, int) or not isinstance(min_depth, int):
            raise bad_json("latest_events, earliest_events, limit and min_depth are required with their types")
        limit = max(0, min(limit, MAX_MISSING))
        found = await self._walk_back(room_id, [e for e in latest if isinstance(e, str)], limit,
                                      stop={e for e in earliest if isinstance(e, str)}, include_start=False,
                                      min_depth=min_depth)
        found.sort(key=lambda e: (e.depth, e.origin_server_ts))
        return {"events": [federation_pdu(e) for e in found]}

    async def _walk_back(self, room_id: str, start: list[str], limit: int, stop: set[str], include_start: bool,
                         min_depth: int = 0) -> list[Event]:
        """Breadth-first over prev_events from ``start``, newest (deepest) first, not crossing ``stop``."""
        out: list[Event] = []
        seen = set(stop)
        frontier = list(dict.fromkeys(start))
        if not include_start:
            starts = await self.loader.get_events(room_id, frontier)
            seen.update(frontier)
            frontier = [p for e in starts.values() for p in e.prev_event_ids]
        while frontier and len(out) < limit:
            frontier = [e for e in dict.fromkeys(frontier) if e not in seen]
            seen.update(frontier)
            events = await self.loader.get_events(room_id, frontier)
            ordered = sorted(events.values(), key=lambda e: (-e.depth, e.event_id))
            nxt: list[str] = []
            for event in ordered:
                if event.depth < min_depth:
                    continue
                if len(out) >= limit:
                    break
                out.append(event)
                nxt.extend(event.prev_event_ids)
            frontier = nxt
        return out

    # -- queries -------------------------------------------------------------------------

    async def query_directory(self, origin: str, room_alias: str) -> dict[str, Any]:
        """``GET /query/directory?room_alias=``: one of our aliases, with servers to join through."""
        if not isinstance(room_alias, str) or not room_alias.endswith(":" + self.server_name):
            raise not_found("Room alias not found")
        room_id = await self._store.get_alias(room_alias)
        if room_id is None:
            raise not_found("Room alias not found")
        servers = await self._fed.get_joined_servers(room_id)
        ordered = [self.server_name] + sorted(servers - {self.server_name})
        return {"room_id": room_id, "servers": ordered}

    async def query_profile(self, origin: str, user_id: str, field: Optional[str]) -> dict[str, Any]:
        """``GET /query/profile?user_id=&field=``: a local user's public profile (or one field of it)."""
        if self.profile_lookup is None or domain_of(user_id) != self.server_name:
            raise not_found("Profile not found")
        profile = await self.profile_lookup(user_id)
        if not profile:
            raise not_found("Profile not found")
        if field is not None:
            if field not in profile:
                raise not_found(f"Profile has no {field}")
            return {field: profile[field]}
        return dict(profile)

    # -- joins and leaves as the resident server -----------------------------------

    async def make_membership(self, origin: str, room_id: str, user_id: str, membership: str,
                              supported_versions: Optional[list[str]]) -> dict[str, Any]:
        """``GET /make_join`` and ``/make_leave``: an event template for ``user_id`` to sign."""
        if domain_of(user_id) != origin:
            raise forbidden("The user is not of the requesting server")
        version = await self.loader.room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        await self._check_acl(origin, room_id)
        if membership == "join" and version.identifier not in (supported_versions or ["1"]):
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION, f"Room version {version.identifier} is not supported",
                              room_version=version.identifier)
        snapshot = await self._store.get_room_snapshot(room_id)
        if snapshot is None or not snapshot.extremities:
            raise not_found("Unknown room")
        state = dict(snapshot.current_state)
        pdu: dict[str, Any] = {
            "room_id": room_id,
            "type": auth_rules.MEMBER,
            "state_key": user_id,
            "sender": user_id,
            "content": {"membership": membership},
            "origin": origin,
            "origin_server_ts": self.now_ms(),
            "depth": snapshot.max_depth + 1,
            "prev_events": list(snapshot.extremities),
            "auth_events": [],
        }
        if version.event_format.name == "V1":
            pdu["event_id"] = f"$template:{self.server_name}"
        provisional = Event.from_pdu(pdu, version)
        wanted = auth_rules.auth_types_for_event(version, provisional)
        auth_ids = sorted(state[k] for k in wanted if k in state)
        state_events = await self.loader.state_events(room_id, state)
        try:
            auth_rules.check_auth_rules(version, provisional, {k: v for k, v in state_events.items() if k in wanted or k == (auth_rules.CREATE, "")})
        except auth_rules.AuthError as e:
            raise forbidden(f"You are not allowed to {membership} this room: {getattr(e, 'reason', e)}")
        if version.event_format.name == "V1":
            pdu.pop("event_id")
            prev = await self.loader.get_events(room_id, snapshot.extremities)
            auth = await self.loader.get_events(room_id, auth_ids)
            pdu["prev_events"] = [[e, dict(thaw(prev[e].hashes))] for e in snapshot.extremities if e in prev]
            pdu["auth_events"] = [[e, dict(thaw(auth[e].hashes))] for e in auth_ids if e in auth]
        else:
            pdu["auth_events"] = auth_ids
        return {"room_version": version.identifier, "event": pdu}

    async def send_membership(self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str) -> dict[str, Any]:
        """``PUT /send_join`` and ``/send_leave`` (v2 bodies): accept the signed event, answer the room state."""
        if not isinstance(pdu, Mapping):
            raise bad_json("body must be a PDU")
        await self._check_acl(origin, room_id)
        return await self._dispatcher.run(
            SEND_MEMBERSHIP, room_id, {"origin": origin, "event_id": event_id, "pdu": thaw(pdu), "membership": membership}
        )

    async def _cmd_send_membership(self, args: dict[str, Any]) -> dict[str, Any]:
        origin, pdu, membership = args["origin"], args["pdu"], args["membership"]
        room_id = pdu.get("room_id")
        version = await self.loader.room_version(room_id) if isinstance(room_id, str) else None
        if version is None:
            raise not_found("Unknown room")
        try:
            event = parse_received_pdu(pdu, version)
        except PduRefused as e:
            raise bad_json(str(e))
        if event.event_id != args["event_id"]:
            raise bad_json("event ID does not match the path")
        if (event.type != auth_rules.MEMBER or event.membership != membership or event.state_key != event.sender
                or domain_of(event.sender) != origin):
            raise bad_json(f"not a {membership} event of a user of {origin}")
        try:
            await self.events.check_signatures(event)
        except PduRefused as e:
            raise forbidden(str(e))
        result = await self.events.receive_validated(origin, event, fetch_missing=False)
        if result.get("error"):
            raise forbidden(str(result["error"]))
        stored = await self._event_in_room(room_id, event.event_id)
        # Every other server of the room learns of the membership from us.
        servers = await self._fed.get_joined_servers(room_id)
        await self._queue.enqueue_pdu(servers - {origin, self.server_name}, stored.event_id, federation_pdu(stored))
        if membership != "join":
            return {}
        state = await self.state_before(stored)
        answer = await self._state_and_chain(room_id, list(state.values()))
        answer["origin"] = self.server_name
        answer["state"] = answer.pop("pdus")
        answer["event"] = federation_pdu(stored)
        answer["members_omitted"] = False
        return answer

    # -- joining a remote room ------------------------------------------------------------

    async def join_remote(self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]) -> None:
        """Join ``user_id`` to a room this server does not know, through the first of ``servers`` that works.

        Runs on the room's events shard owner (``NotShardOwnerError`` otherwise,
        which the client edge turns into forwarding): make_join, sign, send_join
        (v2), verify the returned state and auth chain (signatures, hashes,
        auth rules in depth order), keep them as outliers, then persist the
        join with that state. 404 ``M_UNKNOWN`` when no server let us in.
        """
        creator = self.events.creator
        creator.allocator_for(room_id)
        problems = []
        for server in dict.fromkeys(servers):
            if server == self.server_name:
                continue
            try:
                await self._join_via(server, user_id, room_id, content)
                return
            except MatrixError as e:
                problems.append(f"{server}: {e}")
                if e.code == 403:
                    raise
            except Exception as e:
                problems.append(f"{server}: {e}")
        raise MatrixError(404, Codes.UNKNOWN, "Could not join the room through any server: " + "; ".join(problems))

    async def _join_via(self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]) -> None:
        creator = self.events.creator
        client = self.events.client
        path = f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(user_id)}"
        template_resp = await _remote(client.get_json(server, path, args={"ver": sorted(KNOWN_ROOM_VERSIONS)}))
        if not isinstance(template_resp, Mapping) or not isinstance(template_resp.get("event"), Mapping):
            raise bad_json(f"{server} sent no join template")
        version = get_room_version(str(template_resp.get("room_version", "1")))
        pdu = thaw(template_resp["event"])
        if (pdu.get("room_id") != room_id or pdu.get("type") != auth_rules.MEMBER or pdu.get("sender") != user_id
                or pdu.get("state_key") != user_id):
            raise bad_json(f"{server} sent a join template for something else")
        pdu["content"] = {**thaw(content), "membership": "join"}
        pdu["origin"] = self.server_name
        pdu["origin_server_ts"] = self.now_ms()
        pdu.pop("signatures", None)
        pdu.pop("hashes", None)
        pdu.pop("unsigned", None)
        if version.event_format.name == "V1":
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        signed = add_hashes_and_signatures(version, pdu, self.server_name, creator.signing_key)
        join = Event.from_pdu(signed, version)
        response = await _remote(client.put_json(
            server, f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(join.event_id)}", federation_pdu(join)
        ))
        if not isinstance(response, Mapping):
            raise bad_json(f"{server} sent a bad send_join response")
        state_pdus, chain_pdus = response.get("state"), response.get("auth_chain")
        if not isinstance(state_pdus, list) or not isinstance(chain_pdus, list):
            raise bad_json(f"{server} sent no state or auth chain")
        events: dict[str, Event] = {}
        for raw in list(chain_pdus) + list(state_pdus):
            try:
                event = parse_received_pdu(raw, version)
            except PduRefused as e:
                logger.info("join via %s: dropping a state event: %s", server, e)
                continue
            if event.room_id != room_id or event.event_id in events:
                continue
            await self.events.check_signatures(event)
            events[event.event_id] = event
        accepted = _auth_chain_accepted(version, events)
        state = {}
        for raw in state_pdus:
            eid = _event_id_of(raw, version)
            if eid in accepted and accepted[eid].state_key is not None:
                state[(accepted[eid].type, accepted[eid].state_key)] = eid
        create = state.get((auth_rules.CREATE, ""))
        if create is None:
            raise bad_json(f"{server} sent a room state without a create event")
        state_events = {k: accepted[e] for k, e in state.items()}
        try:
            auth_rules.check_auth_rules(version, join, auth_state_for(version, join, state_events))
        except auth_rules.AuthError as e:
            raise forbidden(f"The join is not allowed by the room state: {getattr(e, 'reason', e)}")
        await self._fed.store_outliers(room_id, [
            (e.event_id, encode_canonical_json(e.get_pdu_json(), allow_floats=True).decode("utf-8")) for e in accepted.values()
        ])
        state_after = dict(state)
        state_after[(auth_rules.MEMBER, user_id)] = join.event_id
        allocator = creator.allocator_for(room_id)
        payload = creator.stream_payload(join)
        self.loader.remember_version(room_id, version)
        async with creator.linearizer.lock(room_id):
            # A room known only from an invite has that invite as its one extremity.
            snapshot = await self._store.get_room_snapshot(room_id)
            await self._fed.persist_received_event(
                allocator, join, encode_canonical_json(join.get_pdu_json(), allow_floats=True).decode("utf-8"),
                expected_extremities=snapshot.extremities if snapshot else (), new_extremities=(join.event_id,), state_group=None, state_to_store=state_after,
                current_state=state_after,
                new_room=NewRoomRow(room_id, version.identifier, accepted[create].sender, False, self.now_ms()),
                on_position=lambda position: allocator.attach(position, payload),
            )
            creator.forget_head(room_id)
        self.loader.remember(join)

    async def leave_remote(self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]) -> None:
        """Reject an invite (or rescind a knock) to a room we are not in: make_leave/send_leave
        through ``servers``, then record the leave locally."""
        creator = self.events.creator
        creator.allocator_for(room_id)
        client = self.events.client
        problems = []
        for server in dict.fromkeys(servers):
            if server == self.server_name:
                continue
            try:
                template = await _remote(client.get_json(server, f"/_matrix/federation/v1/make_leave/{_q(room_id)}/{_q(user_id)}"))
                version = get_room_version(str(template.get("room_version", "1")))
                pdu = thaw(template["event"])
                if (pdu.get("room_id") != room_id or pdu.get("type") != auth_rules.MEMBER or pdu.get("sender") != user_id
                        or pdu.get("state_key") != user_id):
                    raise bad_json(f"{server} sent a leave template for something else")
                pdu["content"] = {**thaw(content), "membership": "leave"}
                pdu["origin"] = self.server_name
                pdu["origin_server_ts"] = self.now_ms()
                for key in ("signatures", "hashes", "unsigned"):
                    pdu.pop(key, None)
                if version.event_format.name == "V1":
                    pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
                leave = Event.from_pdu(add_hashes_and_signatures(version, pdu, self.server_name, creator.signing_key), version)
                await _remote(client.put_json(
                    server, f"/_matrix/federation/v2/send_leave/{_q(room_id)}/{_q(leave.event_id)}", federation_pdu(leave)
                ))
            except Exception as e:
                problems.append(f"{server}: {e}")
                continue
            await self._record_outside_event(leave)
            return
        raise MatrixError(502, Codes.UNKNOWN, "Could not leave through any server: " + "; ".join(problems))

    async def _record_outside_event(self, event: Event) -> None:
        """Persist a membership event of ours in a room we are not in (it is not in our DAG's continuation)."""
        creator = self.events.creator
        room_id = event.room_id
        allocator = creator.allocator_for(room_id)
        payload = creator.stream_payload(event)
        async with creator.linearizer.lock(room_id):
            snapshot = await self._store.get_room_snapshot(room_id)
            state = dict(snapshot.current_state) if snapshot else {}
            state[(event.type, event.state_key or "")] = event.event_id
            await self._fed.persist_received_event(
                allocator, event, encode_canonical_json(event.get_pdu_json(), allow_floats=True).decode("utf-8"),
                expected_extremities=snapshot.extremities if snapshot else (), new_extremities=(event.event_id,),
                state_group=None, state_to_store=state, current_state=state,
                on_position=lambda position: allocator.attach(position, payload),
            )
            creator.forget_head(room_id)

    # -- invites -------------------------------------------------------------------------

    async def invite_remote(self, event: Event) -> Event:
        """``RoomHandler.remote_invite``: have the invitee's server countersign ``event`` (invite v2)."""
        target = domain_of(event.state_key or "")
        room_id = event.room_id
        state = await self._store.get_current_state_ids(room_id)
        wanted = [state[(t, "")] for t in INVITE_STATE_TYPES if (t, "") in state]
        sender_member = state.get((auth_rules.MEMBER, event.sender))
        if sender_member:
            wanted.append(sender_member)
        events = await self.loader.get_events(room_id, wanted)
        stripped = [{"type": e.type, "state_key": e.state_key, "sender": e.sender, "content": thaw(e.content)}
                    for e in (events[i] for i in wanted if i in events)]
        body = {"event": federation_pdu(event), "room_version": event.room_version.identifier, "invite_room_state": stripped}
        try:
            response = await _remote(self.events.client.put_json(
                target, f"/_matrix/federation/v2/invite/{_q(room_id)}/{_q(event.event_id)}", body
            ))
        except MatrixError:
            raise
        except Exception as e:
            raise MatrixError(502, Codes.UNKNOWN, f"Could not reach {target} to invite: {e}")
        returned = response.get("event") if isinstance(response, Mapping) else None
        if not isinstance(returned, Mapping):
            raise MatrixError(502, Codes.UNKNOWN, f"{target} sent no signed invite")
        try:
            signed = Event.from_pdu(returned, event.room_version)
        except Exception as e:
            raise MatrixError(502, Codes.UNKNOWN, f"{target} sent a bad invite: {e}")
        if signed.event_id != event.event_id or target not in signed.signatures:
            raise MatrixError(502, Codes.UNKNOWN, f"{target} did not countersign the invite")
        try:
            await self.events.keyring.verify_json_for_server(
                target, prune_event_dict(event.room_version, signed.get_pdu_json()), 0
            )
        except Exception as e:
            raise MatrixError(502, Codes.UNKNOWN, f"{target}'s signature on the invite is not valid: {e}")
        pdu = event.get_pdu_json()
        pdu["signatures"] = thaw(signed.signatures)
        return Event.from_pdu(pdu, event.room_version)

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]:
        """``PUT /v2/invite/{roomId}/{eventId}``: countersign an invite of one of our users and record it."""
        if not isinstance(body, Mapping) or not isinstance(body.get("event"), Mapping):
            raise bad_json("body must hold the invite event")
        version_id = body.get("room_version", "1")
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION, f"Room version {version_id!r} is not supported",
                              room_version=version_id)
        args = {"origin": origin, "room_id": room_id, "event_id": event_id, "event": thaw(body["event"]),
                "room_version": version_id, "invite_room_state": thaw(body.get("invite_room_state") or [])}
        return await self._dispatcher.run(INVITE, room_id, args)

    async def _cmd_invite(self, args: dict[str, Any]) -> dict[str, Any]:
        origin, room_id = args["origin"], args["room_id"]
        version = get_room_version(args["room_version"])
        try:
            event = parse_received_pdu(args["event"], version)
        except PduRefused as e:
            raise bad_json(str(e))
        if event.event_id != args["event_id"] or event.room_id != room_id:
            raise bad_json("event ID or room does not match the path")
        if (event.type != auth_rules.MEMBER or event.membership != "invite" or event.state_key is None
                or domain_of(event.state_key) != self.server_name or domain_of(event.sender) != origin):
            raise bad_json(f"not an invite of a user of {self.server_name} by a user of {origin}")
        await self.events.check_signatures(event)
        known = await self.loader.room_version(room_id)
        if known is not None:
            await self._check_acl(origin, room_id)
        creator = self.events.creator
        pdu = event.get_pdu_json()
        redacted = prune_event_dict(version, pdu)
        ours = sign_json(redacted, self.server_name, creator.signing_key)["signatures"][self.server_name]
        pdu.setdefault("signatures", {})[self.server_name] = ours
        signed = Event.from_pdu(pdu, version)
        in_room = self.server_name in await self._fed.get_joined_servers(room_id) if known is not None else False
        if not in_room:
            # The event reaches us through /send only if we are in the room:
            # record it now so the invitee sees it in /sync.
            stored_pdu = dict(pdu)
            stored_pdu["unsigned"] = {"invite_room_state": [s for s in args["invite_room_state"] if isinstance(s, Mapping)]}
            stored = Event.from_pdu(stored_pdu, version)
            allocator = creator.allocator_for(room_id)
            payload = creator.stream_payload(stored)
            self.loader.remember_version(room_id, version)
            async with creator.linearizer.lock(room_id):
                snapshot = await self._store.get_room_snapshot(room_id)
                state = dict(snapshot.current_state) if snapshot else {}
                state[(auth_rules.MEMBER, event.state_key)] = event.event_id
                existing = await self._store.get_events(room_id, [event.event_id])
                if event.event_id not in existing:
                    await self._fed.persist_received_event(
                        allocator, stored, encode_canonical_json(stored.get_pdu_json(), allow_floats=True).decode("utf-8"),
                        expected_extremities=snapshot.extremities if snapshot else (),
                        new_extremities=snapshot.extremities if snapshot and snapshot.extremities else (event.event_id,),
                        state_group=None, state_to_store=state, current_state=state,
                        new_room=NewRoomRow(room_id, version.identifier, event.sender, False, self.now_ms()),
                        on_position=lambda position: allocator.attach(position, payload),
                    )
                    creator.forget_head(room_id)
        return {"event": federation_pdu(signed)}

    # -- typing and receipts (EDUs) ------------------------------------------------------

    def attach_ephemeral(self, typing: Any, receipts: Any) -> None:
        """Exchange typing notifications and read receipts with the other servers of each room.

        ``typing`` / ``receipts`` are the instance's ``TypingHandler`` and
        ``ReceiptHandler``: local changes are queued as ``m.typing`` /
        ``m.receipt`` EDUs; received ones run on the owner of the room's
        typing / receipts shard through the dispatcher.
        """
        self._typing = typing
        self._receipts = receipts
        self._dispatcher.register(TYPING, "typing", self._cmd_typing)
        self._dispatcher.register(RECEIPT, "receipts", self._cmd_receipt)
        typing.observers.append(self._on_local_typing)
        receipts.observers.append(self._on_local_receipt)
        self.edu_handlers["m.typing"] = self._on_typing_edu
        self.edu_handlers["m.receipt"] = self._on_receipt_edu

    def _background(self, what: str, coro: Awaitable[Any]) -> None:
        from twisted.internet import defer

        d = defer.ensureDeferred(coro)
        d.addErrback(lambda f: logger.warning("could not queue %s: %s", what, f.getErrorMessage()))

    def _on_local_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        if domain_of(user_id) != self.server_name:
            return
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        self._background("m.typing", self.send_edu_to_room(room_id, "m.typing", content, coalesce_key=f"m.typing:{room_id}:{user_id}"))

    def _on_local_receipt(self, room_id: str, receipt_type: str, user_id: str, event_id: str, data: dict) -> None:
        if domain_of(user_id) != self.server_name or receipt_type != "m.read":
            return
        content = {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": dict(data)}}}}
        self._background("m.receipt", self.send_edu_to_room(room_id, "m.receipt", content))

    async def _on_typing_edu(self, origin: str, content: Any) -> None:
        if not isinstance(content, Mapping):
            return
        room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
        if not isinstance(room_id, str) or not isinstance(user_id, str) or not isinstance(typing, bool):
            return
        if domain_of(user_id) != origin:
            raise forbidden(f"{origin} cannot send typing for {user_id}")
        await self.check_access(origin, room_id)
        await self._dispatcher.run(TYPING, room_id, {"room_id": room_id, "user_id": user_id, "typing": typing})

    async def _cmd_typing(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args["user_id"]
        await self._typing.set_typing(_Remote(user_id), args["room_id"], user_id, args["typing"], REMOTE_TYPING_TIMEOUT_MS)
        return {}

    async def _on_receipt_edu(self, origin: str, content: Any) -> None:
        if not isinstance(content, Mapping):
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, Mapping) or not isinstance(room_id, str):
                continue
            await self.check_access(origin, room_id)
            for user_id, receipt in (by_type.get("m.read") or {}).items():
                if not isinstance(receipt, Mapping) or domain_of(user_id) != origin:
                    continue
                event_ids = receipt.get("event_ids")
                if not isinstance(event_ids, list) or not event_ids or not isinstance(event_ids[-1], str):
                    continue
                data = receipt.get("data") if isinstance(receipt.get("data"), Mapping) else {}
                thread_id = data.get("thread_id") if isinstance(data.get("thread_id"), str) else None
                try:
                    await self._dispatcher.run(RECEIPT, room_id, {"room_id": room_id, "user_id": user_id,
                                                                  "event_id": event_ids[-1], "thread_id": thread_id})
                except MatrixError as e:
                    logger.info("receipt of %s in %s refused: %s", user_id, room_id, e)

    async def _cmd_receipt(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._receipts.send_receipt(_Remote(args["user_id"]), args["room_id"], "m.read", args["event_id"], args["thread_id"])
        return {}

    # -- outbound ----------------------------------------------------------------------

    def on_local_event(self, created: Any) -> None:
        """``EventCreator`` observer: queue the new local event for every other server of its room."""
        from twisted.internet import defer

        d = defer.ensureDeferred(self.send_local_event(created.event))
        d.addErrback(lambda f: logger.warning("could not queue %s for federation: %s", created.event.event_id, f.getErrorMessage()))

    async def send_local_event(self, event: Event) -> None:
        """Queue ``event`` for the servers with joined members (and the target's server of a membership change)."""
        servers = await self._fed.get_joined_servers(event.room_id)
        if event.type == auth_rules.MEMBER and event.state_key is not None and event.membership in ("leave", "ban"):
            servers.add(domain_of(event.state_key))
        servers.discard(self.server_name)
        servers.discard("")
        if servers:
            await self._queue.enqueue_pdu(servers, event.event_id, federation_pdu(event))

    async def send_edu_to_room(self, room_id: str, edu_type: str, content: Mapping[str, Any], coalesce_key: Optional[str] = None) -> None:
        """Queue an EDU for every other server with joined members in ``room_id``."""
        servers = await self._fed.get_joined_servers(room_id)
        for server in sorted(servers - {self.server_name, ""}):
            await self._queue.enqueue_edu(server, {"edu_type": edu_type, "content": dict(content)}, coalesce_key=coalesce_key)


def _q(value: str) -> str:
    return quote(value, safe="")


async def _remote(call: Awaitable[Any]) -> Any:
    """Await a federation request; a Matrix error answered by the remote is re-raised with its status."""
    try:
        return await call
    except MatrixError:
        raise
    except Exception as e:
        code = getattr(e, "code", None)
        body = getattr(e, "response_body", None) or getattr(e, "body", None)
        if isinstance(code, int) and code == 403:
            raise forbidden(f"the resident server refused: {body or e}")
        raise


def _event_id_of(pdu: Any, version: RoomVersion) -> Optional[str]:
    if not isinstance(pdu, Mapping):
        return None
    if version.event_format.name == "V1":
        event_id = pdu.get("event_id")
        return event_id if isinstance(event_id, str) else None
    try:
        return compute_event_id(version, pdu)
    except Exception:
        return None


class _Remote:
    """A remote user acting through an EDU (what the typing / receipt handlers read of a requester)."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
