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

import json
import logging
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

import secrets
from urllib.parse import quote

from homeserver.core import auth as auth_rules
from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from homeserver.core.rooms import NewRoomRow, OutboundPdu
from homeserver.core.redaction import prune_event_dict
from homeserver.core.signing import add_hashes_and_signatures, compute_event_id, sign_json
from homeserver.core.events import Event, thaw
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, not_found
from homeserver.federation.acl import server_allowed
from homeserver.handlers.rooms import restricted
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
OUTSIDE_MEMBERSHIP = "federation_outside_membership"
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
        #: The staging of received PDUs (``InboundPduProcessor`` and its
        #: ``InboundStagingStore``), wired by ``workers.federation``.
        self.inbound: Any = None
        self.inbound_store: Any = None
        #: ``DirectoryHandler.public_rooms`` (this server's published rooms), for /publicRooms.
        self.public_rooms: Optional[Callable[..., Awaitable[dict[str, Any]]]] = None
        #: ``RoomLookupStore`` (events by timestamp), for /timestamp_to_event.
        self.lookup_store: Any = None
        #: ``OpenIdHandler``, for /openid/userinfo.
        self.openid: Any = None
        #: ``SpaceHierarchyHandler``, for /hierarchy.
        self.hierarchy: Any = None

    def now_ms(self) -> int:
        """Milliseconds on the injected clock."""
        return int(self._clock.seconds() * 1000)

    def register_commands(self) -> None:
        """Register the shard-owner commands on the dispatcher."""
        self._dispatcher.register(RECEIVE_PDU, "events", self._cmd_receive_pdu)
        self._dispatcher.register(SEND_MEMBERSHIP, "events", self._cmd_send_membership)
        self._dispatcher.register(INVITE, "events", self._cmd_invite)
        self._dispatcher.register(OUTSIDE_MEMBERSHIP, "events", self._cmd_outside_membership)

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
        """``PUT /send/{txnId}``: stage the PDUs durably, process them, answer the per-PDU result map.

        After the shape checks, the transaction ID and its PDUs (those that
        parse in their room's version) are written to the staging table in
        one database transaction (:class:`homeserver.federation.inbound.InboundPduProcessor`
        then processes each room's PDUs in arrival order, one instance per
        room at a time). A retried transaction (same origin and ID) stages
        nothing again: it gets the stored answer, or, if the first attempt
        never answered, waits for the PDUs still staged. EDUs are handled
        best effort once the PDUs are; they are not staged (typing and
        receipts are ephemeral), but a retry of an unanswered transaction
        handles them again (both are idempotent).
        """
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
        if self.inbound is None:
            raise RuntimeError("FederationRooms.inbound is not wired")
        staged: list[tuple[str, str, str]] = []
        for pdu in pdus:
            parsed = await self._parse_received(origin, pdu)
            if parsed is not None:
                staged.append(parsed)
        outcome = await self.inbound_store.stage_transaction(origin, txn_id, staged, self.now_ms())
        if outcome.status == "done":
            return json.loads(outcome.response_json)
        processed = await self.inbound.wait_for([(i, room_id) for i, room_id, _ in outcome.staged])
        results: dict[str, Any] = {event_id: {} for _, event_id, _ in staged}
        for staged_id, _, event_id in outcome.staged:
            if staged_id in processed:
                results[event_id] = processed[staged_id]
        for edu in edus:
            await self._receive_edu(origin, edu)
        response = {"pdus": results}
        await self.inbound_store.store_response(origin, txn_id, json.dumps(response))
        return response

    async def _parse_received(self, origin: str, pdu: Any) -> Optional[tuple[str, str, str]]:
        """``(room_id, event_id, pdu_json)`` of a PDU worth staging; None (dropped) for an unknown room or a bad PDU."""
        room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
        if not isinstance(room_id, str):
            return None
        version = await self.loader.room_version(room_id)
        if version is None:
            return None
        try:
            event = parse_received_pdu(pdu, version)
        except PduRefused as e:
            logger.info("dropping unparseable PDU from %s: %s", origin, e)
            return None
        return room_id, event.event_id, json.dumps(thaw(pdu), ensure_ascii=False, separators=(",", ":"))

    async def process_staged_pdu(self, origin: str, room_id: str, pdu_json: str) -> dict[str, Any]:
        """Process one staged PDU (the :class:`InboundPduProcessor` callback): its per-PDU result.

        Refusals (access, auth, bad signatures) are results; a failure that
        may pass (the room's writer unreachable or answering 5xx, a
        database error) raises, and the PDU stays staged for a retry.
        """
        pdu = json.loads(pdu_json)
        version = await self.loader.room_version(room_id)
        if version is None:
            return {"error": f"unknown room {room_id}"}
        try:
            event = parse_received_pdu(pdu, version)
        except PduRefused as e:
            return {"error": str(e)}
        try:
            await self.check_access(origin, room_id)
        except MatrixError as e:
            if e.code >= 500:
                raise
            if await self._is_outside_membership(origin, event):
                try:
                    await self._dispatcher.run(OUTSIDE_MEMBERSHIP, room_id, {"origin": origin, "pdu": pdu})
                    return {}
                except MatrixError as refused:
                    if refused.code >= 500:
                        raise
                    return {"error": refused.msg}
            return {"error": e.msg if hasattr(e, "msg") else str(e)}
        try:
            return await self._dispatcher.run(RECEIVE_PDU, room_id, {"origin": origin, "pdu": pdu})
        except MatrixError as e:
            if e.code >= 500:
                raise
            logger.info("%s from %s refused: %s", event.event_id, origin, e)
            return {"error": str(e)}

    async def _is_outside_membership(self, origin: str, event: Event) -> bool:
        """A leave or ban by a user of ``origin`` of one of our users who is only invited or knocking,
        in a room we are not in: the rejection of a knock or the withdrawal of an invite (Synapse's
        "out-of-band membership"). Without the room's state we cannot run the auth rules; the
        sender's server vouches for it with its signature, and it only ends an invite or knock."""
        if (event.type != auth_rules.MEMBER or event.membership not in ("leave", "ban") or event.state_key is None
                or domain_of(event.state_key) != self.server_name or domain_of(event.sender) != origin):
            return False
        if self.server_name in await self._fed.get_joined_servers(event.room_id):
            return False
        return await self._membership_of(event.room_id, event.state_key) in ("invite", "knock")

    async def _cmd_outside_membership(self, args: dict[str, Any]) -> dict[str, Any]:
        origin, pdu = args["origin"], args["pdu"]
        room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
        version = await self.loader.room_version(room_id) if isinstance(room_id, str) else None
        if version is None:
            raise not_found("Unknown room")
        try:
            event = parse_received_pdu(pdu, version)
            await self.events.check_signatures(event)
        except PduRefused as e:
            raise forbidden(str(e))
        await self._check_acl(origin, room_id)
        # Checked again on the owner, under no race with a join being recorded.
        if not await self._is_outside_membership(origin, event):
            raise forbidden(f"{origin} is not in room {room_id}")
        if event.event_id not in await self._store.get_events(room_id, [event.event_id]):
            await self._record_outside_event(event)
        return {}

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

    async def get_public_rooms(self, origin: str, limit: Any, since: Any, search_filter: Any = None,
                               include_all_networks: Any = False, third_party_instance_id: Any = None) -> dict[str, Any]:
        """``GET/POST /publicRooms``: this server's published rooms (the client directory's rules and paging)."""
        if self.public_rooms is None:
            raise not_found("This server publishes no room directory")
        if not isinstance(include_all_networks, bool):
            raise bad_json("'include_all_networks' must be a boolean")
        if since is not None and not isinstance(since, str):
            raise bad_json("'since' must be a string")
        return await self.public_rooms(None, limit, since, search_filter, third_party_instance_id)

    async def query_public_rooms(self, server: str, limit: Optional[int], since: Optional[str], search_filter: Any = None,
                                 third_party_instance_id: Any = None) -> dict[str, Any]:
        """A remote server's published rooms, for the client ``/publicRooms?server=`` (POST when filtered)."""
        client = self.events.client
        try:
            if search_filter is None and third_party_instance_id is None:
                args: dict[str, Any] = {}
                if limit:
                    args["limit"] = str(limit)
                if since is not None:
                    args["since"] = since
                answer = await client.get_json(server, "/_matrix/federation/v1/publicRooms", args=args)
            else:
                body: dict[str, Any] = {}
                for key, value in (("limit", limit), ("since", since), ("filter", search_filter),
                                   ("third_party_instance_id", third_party_instance_id)):
                    if value is not None:
                        body[key] = value
                answer = await client.post_json(server, "/_matrix/federation/v1/publicRooms", body)
        except MatrixError:
            raise
        except Exception as e:
            raise MatrixError(502, Codes.UNKNOWN, f"Could not fetch the room directory of {server}: {e}")
        if not isinstance(answer, Mapping) or not isinstance(answer.get("chunk"), list):
            raise MatrixError(502, Codes.UNKNOWN, f"{server} sent a bad room directory")
        return dict(answer)

    async def timestamp_to_event(self, origin: str, room_id: str, ts: int, direction: str) -> dict[str, Any]:
        """``GET /timestamp_to_event/{roomId}?ts=&dir=``: the event nearest ``ts`` in that direction.

        For servers in the room (and allowed by its ACL), like the other
        room reads; events are not filtered by history visibility, which
        the room's servers share anyway.
        """
        if direction not in ("f", "b"):
            raise MatrixError(400, Codes.INVALID_PARAM, "dir must be 'f' or 'b'")
        await self.check_access(origin, room_id)
        if self.lookup_store is None:
            raise not_found("Timestamp lookups are not available here")
        rows = await self.lookup_store.get_events_by_timestamp(room_id, ts, direction == "f", 1)
        if not rows:
            raise not_found(f"Unable to find event from {ts} in {'forward' if direction == 'f' else 'backward'} direction")
        return {"event_id": rows[0].event_id, "origin_server_ts": rows[0].origin_server_ts}

    async def openid_userinfo(self, token: Optional[str]) -> dict[str, Any]:
        """``GET /openid/userinfo?access_token=`` (not X-Matrix authenticated: the token is the credential)."""
        if self.openid is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token unknown or expired")
        return await self.openid.userinfo(token)

    async def get_hierarchy(self, origin: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        """``GET /hierarchy/{roomId}``: a local space and the children ``origin`` may see (ACLs apply)."""
        if self.hierarchy is None:
            raise not_found("Unknown room")
        return await self.hierarchy.federation_hierarchy(origin, room_id, suggested_only, self._acl_allows)

    async def _acl_allows(self, origin: str, room_id: str) -> bool:
        try:
            await self._check_acl(origin, room_id)
        except MatrixError:
            return False
        return True

    async def fetch_hierarchy(self, servers: Sequence[str], room_id: str, suggested_only: bool) -> Optional[dict[str, Any]]:
        """A remote space's ``/hierarchy`` answer from the first of ``servers`` that gives one (None if none)."""
        client = self.events.client
        for server in dict.fromkeys(servers):
            if server == self.server_name:
                continue
            try:
                answer = await client.get_json(server, f"/_matrix/federation/v1/hierarchy/{_q(room_id)}",
                                               args={"suggested_only": "true" if suggested_only else "false"})
            except Exception as e:
                logger.info("hierarchy of %s from %s failed: %s", room_id, server, e)
                continue
            if isinstance(answer, Mapping):
                return dict(answer)
        return None

    # -- joins and leaves as the resident server -----------------------------------

    async def make_membership(self, origin: str, room_id: str, user_id: str, membership: str,
                              supported_versions: Optional[list[str]]) -> dict[str, Any]:
        """``GET /make_join``, ``/make_knock`` and ``/make_leave``: an event template for ``user_id`` to sign.

        Joins of a restricted room the user is not invited to name one of our
        members able to invite in ``join_authorised_via_users_server``
        (:func:`restricted.choose_authoriser`; its refusals are the spec's
        403 / ``M_UNABLE_TO_AUTHORISE_JOIN`` / ``M_UNABLE_TO_GRANT_JOIN``).
        """
        if domain_of(user_id) != origin:
            raise forbidden("The user is not of the requesting server")
        version = await self.loader.room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        await self._check_acl(origin, room_id)
        if membership in ("join", "knock") and version.identifier not in (supported_versions or ["1"]):
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION, f"Room version {version.identifier} is not supported",
                              room_version=version.identifier)
        if membership == "knock" and not version.knock_join_rule:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"Room version {version.identifier} does not support knocking", room_version=version.identifier)
        snapshot = await self._store.get_room_snapshot(room_id)
        if snapshot is None or not snapshot.extremities:
            raise not_found("Unknown room")
        state = dict(snapshot.current_state)
        state_events = await self.loader.state_events(room_id, state)
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await restricted.choose_authoriser(version, state_events, user_id, self.server_name,
                                                           self._membership_of, self._server_in)
            if authoriser is not None:
                content[restricted.AUTHORISING_USER] = authoriser
        pdu: dict[str, Any] = {
            "room_id": room_id,
            "type": auth_rules.MEMBER,
            "state_key": user_id,
            "sender": user_id,
            "content": content,
            "origin": origin,
            "origin_server_ts": self.now_ms(),
            "depth": snapshot.max_depth + 1,
            "prev_events": list(snapshot.extremities),
            "auth_events": [],
        }
        v1_format = version.event_format.name == "V1"
        if v1_format:
            # Rooms v1/v2 reference events as [event_id, hashes] pairs.
            prev = await self.loader.get_events(room_id, snapshot.extremities)
            pdu["prev_events"] = [[e, dict(thaw(prev[e].hashes))] for e in snapshot.extremities if e in prev]
            pdu["event_id"] = f"$template:{self.server_name}"
        provisional = Event.from_pdu(pdu, version)
        wanted = auth_rules.auth_types_for_event(version, provisional)
        auth_ids = sorted(state[k] for k in wanted if k in state)
        try:
            auth_rules.check_auth_rules(version, provisional, {k: v for k, v in state_events.items() if k in wanted or k == (auth_rules.CREATE, "")})
        except auth_rules.AuthError as e:
            raise forbidden(f"You are not allowed to {membership} this room: {getattr(e, 'reason', e)}")
        if v1_format:
            pdu.pop("event_id")
            auth = await self.loader.get_events(room_id, auth_ids)
            pdu["auth_events"] = [[e, dict(thaw(auth[e].hashes))] for e in auth_ids if e in auth]
        else:
            pdu["auth_events"] = auth_ids
        return {"room_version": version.identifier, "event": pdu}

    async def _membership_of(self, room_id: str, user_id: str) -> Optional[str]:
        row = await self._store.get_membership(room_id, user_id)
        return row.membership if row is not None else None

    async def _server_in(self, room_id: str) -> bool:
        return self.server_name in await self._fed.get_joined_servers(room_id)

    async def send_membership(self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str) -> dict[str, Any]:
        """``PUT /send_join``, ``/send_knock`` and ``/send_leave`` (v2 bodies): accept the signed event,
        answer the room state (joins) or its stripped state (knocks)."""
        if not isinstance(pdu, Mapping):
            raise bad_json("body must be a PDU")
        if await self.loader.room_version(room_id) is None:
            raise not_found("Unknown room")
        await self._check_acl(origin, room_id)
        return await self._dispatcher.run(
            SEND_MEMBERSHIP, room_id,
            {"origin": origin, "room_id": room_id, "event_id": event_id, "pdu": thaw(pdu), "membership": membership},
        )

    async def _countersign_restricted_join(self, version: RoomVersion, room_id: str, pdu: dict[str, Any]) -> None:
        """Add our signature to a join naming one of our users as its authoriser, after checking
        again (the state may have changed since make_join) that the joiner meets a condition
        and that user may still invite."""
        content = pdu.get("content")
        authoriser = content.get(restricted.AUTHORISING_USER) if isinstance(content, Mapping) else None
        sender = pdu.get("sender")
        if not version.restricted_join_rule or not isinstance(authoriser, str) or domain_of(authoriser) != self.server_name:
            return
        if not isinstance(sender, str):
            raise bad_json("join without a sender")
        state_events = await self.loader.state_events(room_id, await self._store.get_current_state_ids(room_id))
        if restricted.needs_authoriser(version, state_events, sender):
            await restricted.user_satisfies_conditions(state_events, sender, self._membership_of, self._server_in)
        if authoriser not in restricted.local_authorisers(version, state_events, self.server_name):
            raise restricted.unable_to_grant(f"{authoriser} cannot authorise joins any more")
        ours = sign_json(prune_event_dict(version, pdu), self.server_name, self.events.creator.signing_key)
        pdu.setdefault("signatures", {})[self.server_name] = ours["signatures"][self.server_name]

    async def _cmd_send_membership(self, args: dict[str, Any]) -> dict[str, Any]:
        origin, pdu, membership = args["origin"], args["pdu"], args["membership"]
        room_id = pdu.get("room_id")
        if room_id != args.get("room_id", room_id):
            raise bad_json("room ID does not match the path")
        version = await self.loader.room_version(room_id) if isinstance(room_id, str) else None
        if version is None:
            raise not_found("Unknown room")
        # send_knock (like invites) SHOULD answer M_INVALID_PARAM for a bad event.
        refuse = invalid_param if membership == "knock" else bad_json
        if membership == "join" and isinstance(pdu.get("signatures"), Mapping):
            pdu["signatures"] = {k: v for k, v in pdu["signatures"].items() if k != self.server_name}
        if membership == "join":
            await self._countersign_restricted_join(version, room_id, pdu)
        try:
            event = parse_received_pdu(pdu, version)
        except PduRefused as e:
            raise refuse(str(e))
        if event.event_id != args["event_id"]:
            raise refuse("event ID does not match the path")
        if (event.type != auth_rules.MEMBER or event.membership != membership or event.state_key != event.sender
                or domain_of(event.sender) != origin):
            raise refuse(f"not a {membership} event of a user of {origin}")
        try:
            await self.events.check_signatures(event)
        except PduRefused as e:
            raise (invalid_param if membership == "knock" else forbidden)(str(e))
        # Every other server of the room learns of the membership from us:
        # queued in the transaction that persists it.
        relay = OutboundPdu(encode_canonical_json(federation_pdu(event), allow_floats=True).decode("utf-8"),
                            self.now_ms(), exclude=(self.server_name, origin))
        result = await self.events.receive_validated(origin, event, fetch_missing=False, outbound=relay)
        if result.get("error"):
            raise forbidden(str(result["error"]))
        stored = await self._event_in_room(room_id, event.event_id)
        self._queue.notify((await self._fed.get_joined_servers(room_id)) - {origin, self.server_name})
        if membership == "knock":
            return {"knock_room_state": await self._stripped_state_pdus(room_id)}
        if membership != "join":
            return {}
        state = await self.state_before(stored)
        answer = await self._state_and_chain(room_id, list(state.values()))
        answer["origin"] = self.server_name
        answer["state"] = answer.pop("pdus")
        answer["event"] = federation_pdu(stored)
        answer["members_omitted"] = False
        return answer

    async def _stripped_state_pdus(self, room_id: str) -> list[dict[str, Any]]:
        """The room's current create, name, join rules... events, as PDUs (spec v1.16: ``knock_room_state``
        entries are formatted per the room version and include ``m.room.create``)."""
        state = await self._store.get_current_state_ids(room_id)
        wanted = [state[(t, "")] for t in INVITE_STATE_TYPES if (t, "") in state]
        events = await self.loader.get_events(room_id, wanted)
        return [federation_pdu(events[e]) for e in wanted if e in events]

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
        await self._through_servers(
            servers, lambda server: self._join_via(server, user_id, room_id, content),
            lambda problems: MatrixError(404, Codes.UNKNOWN, "Could not join the room through any server: " + problems),
        )

    async def _through_servers(self, servers: Sequence[str], attempt: Callable[[str], Awaitable[None]],
                               exhausted: Callable[[str], MatrixError]) -> None:
        """``attempt(server)`` with each other server in turn until one succeeds.

        A 403 ends the search (the room refuses the user). An
        M_UNABLE_TO_AUTHORISE_JOIN / M_UNABLE_TO_GRANT_JOIN (restricted rooms:
        that server cannot vouch for the user) moves on, and is what the
        caller gets if no server succeeds; otherwise ``exhausted(problems)``.
        """
        problems = []
        refusal: Optional[MatrixError] = None
        for server in dict.fromkeys(servers):
            if server == self.server_name:
                continue
            try:
                await attempt(server)
                return
            except MatrixError as e:
                problems.append(f"{server}: {e}")
                if e.code == 403:
                    raise
                if e.errcode in _PASSED_THROUGH and refusal is None:
                    refusal = e
            except Exception as e:
                problems.append(f"{server}: {e}")
        if refusal is not None:
            raise MatrixError(refusal.code, refusal.errcode, "; ".join(problems), **refusal.extra)
        raise exhausted("; ".join(problems))

    async def join_authorised_remotely(self, user_id: str, room_id: str, servers: Sequence[str],
                                       content: Mapping[str, Any]) -> None:
        """Join a local user to a restricted room this server is in but where none of its users may
        authorise joins: make_join/send_join through another resident server (whose user
        authorises and countersigns), then take the join in like any received event."""
        async def attempt(server: str) -> None:
            join, _, _ = await self._handshake_join(server, user_id, room_id, content)
            result = await self.events.receive_validated(server, join, fetch_missing=True)
            if result.get("error"):
                raise forbidden(f"the join was not accepted here: {result['error']}")

        await self._through_servers(
            servers, attempt, lambda problems: forbidden("No server of the room could authorise the join: " + problems),
        )

    async def _join_via(self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]) -> None:
        join, version, response = await self._handshake_join(server, user_id, room_id, content)
        self._check_join_response(server, response)
        state_pdus, chain_pdus = response.get("state"), response.get("auth_chain")
        await self._finish_join(server, user_id, room_id, join, version, state_pdus, chain_pdus)

    @staticmethod
    def _check_join_response(server: str, response: Any) -> None:
        if not isinstance(response.get("state"), list) or not isinstance(response.get("auth_chain"), list):
            raise bad_json(f"{server} sent no state or auth chain")

    async def _handshake_join(self, server: str, user_id: str, room_id: str,
                              content: Mapping[str, Any]) -> tuple[Event, RoomVersion, Mapping[str, Any]]:
        """make_join, sign, send_join (v2) through ``server``: our join (countersigned for restricted
        rooms), the room version and the send_join answer."""
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
        template_content = pdu.get("content") if isinstance(pdu.get("content"), Mapping) else {}
        pdu["content"] = {**thaw(content), "membership": "join"}
        authoriser = template_content.get(restricted.AUTHORISING_USER)
        if isinstance(authoriser, str) and version.restricted_join_rule:
            # A restricted room: the resident server named who authorises the
            # join; it countersigns in send_join.
            pdu["content"][restricted.AUTHORISING_USER] = authoriser
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
        if isinstance(authoriser, str):
            join = await self._countersigned_join(server, join, response.get("event"), authoriser)
        return join, version, response

    async def _finish_join(self, server: str, user_id: str, room_id: str, join: Event, version: RoomVersion,
                           state_pdus: list[Any], chain_pdus: list[Any]) -> None:
        """Verify the room state of a send_join answer and persist our join with it."""
        creator = self.events.creator
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

    async def _countersigned_join(self, server: str, join: Event, returned: Any, authoriser: str) -> Event:
        """Our join with the authorising server's signature from the send_join answer (verified)."""
        if not isinstance(returned, Mapping):
            raise bad_json(f"{server} did not return the countersigned join")
        try:
            theirs = Event.from_pdu(returned, join.room_version)
        except Exception as e:
            raise bad_json(f"{server} returned a bad join event: {e}")
        signer = domain_of(authoriser)
        if theirs.event_id != join.event_id or not theirs.signatures.get(signer):
            raise bad_json(f"{server} did not countersign the join as {signer}")
        pdu = join.get_pdu_json()
        pdu["signatures"] = {**thaw(join.signatures), signer: thaw(theirs.signatures[signer])}
        countersigned = Event.from_pdu(pdu, join.room_version)
        try:
            await self.events.check_signatures(countersigned)
        except PduRefused as e:
            raise bad_json(f"{server}'s countersignature on the join is not valid: {e}")
        return countersigned

    # -- knocking on a remote room ----------------------------------------------------------

    async def knock_remote(self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]) -> None:
        """Knock on a room this server is not in, through the first of ``servers`` that accepts.

        Runs on the room's events shard owner: make_knock, sign, send_knock,
        then record the knock locally with the room's stripped state
        (``unsigned.knock_room_state``) for the user's /sync ``knock`` section.
        A refusal of the resident server (403, ``M_INCOMPATIBLE_ROOM_VERSION``)
        reaches the client; 404 when no server answered.
        """
        self.events.creator.allocator_for(room_id)
        problems = []
        refusal: Optional[MatrixError] = None
        for server in dict.fromkeys(servers):
            if server == self.server_name:
                continue
            try:
                await self._knock_via(server, user_id, room_id, content)
                return
            except MatrixError as e:
                problems.append(f"{server}: {e}")
                if e.code in (400, 403) and refusal is None:
                    refusal = e
            except Exception as e:
                problems.append(f"{server}: {e}")
        if refusal is not None:
            raise refusal
        raise MatrixError(404, Codes.NOT_FOUND, "Could not knock through any server: " + "; ".join(problems))

    async def _knock_via(self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]) -> None:
        creator = self.events.creator
        client = self.events.client
        knock_versions = sorted(v for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.knock_join_rule)
        template = await _remote(client.get_json(
            server, f"/_matrix/federation/v1/make_knock/{_q(room_id)}/{_q(user_id)}", args={"ver": knock_versions}
        ))
        if not isinstance(template, Mapping) or not isinstance(template.get("event"), Mapping):
            raise bad_json(f"{server} sent no knock template")
        version_id = template.get("room_version")
        if version_id not in knock_versions:
            raise bad_json(f"{server} sent a knock template for room version {version_id!r}")
        version = get_room_version(version_id)
        pdu = thaw(template["event"])
        template_content = pdu.get("content")
        if (pdu.get("room_id") != room_id or pdu.get("type") != auth_rules.MEMBER or pdu.get("sender") != user_id
                or pdu.get("state_key") != user_id or not isinstance(template_content, Mapping)
                or template_content.get("membership") != "knock"):
            raise bad_json(f"{server} sent a knock template for something else")
        pdu["content"] = {**thaw(content), "membership": "knock"}
        pdu["origin"] = self.server_name
        pdu["origin_server_ts"] = self.now_ms()
        for key in ("signatures", "hashes", "unsigned"):
            pdu.pop(key, None)
        knock = Event.from_pdu(add_hashes_and_signatures(version, pdu, self.server_name, creator.signing_key), version)
        response = await _remote(client.put_json(
            server, f"/_matrix/federation/v1/send_knock/{_q(room_id)}/{_q(knock.event_id)}", federation_pdu(knock)
        ))
        entries = response.get("knock_room_state") if isinstance(response, Mapping) else None
        if not isinstance(entries, list):
            raise bad_json(f"{server} sent no knock_room_state")
        stripped = await self._verified_stripped_state(room_id, version, entries)
        pdu = knock.get_pdu_json()
        pdu["unsigned"] = {"knock_room_state": stripped}
        stored = Event.from_pdu(pdu, version)
        creator_id = next((s["sender"] for s in stripped if s["type"] == auth_rules.CREATE), knock.sender)
        self.loader.remember_version(room_id, version)
        await self._record_outside_event(stored, NewRoomRow(room_id, version.identifier, creator_id, False, self.now_ms()))

    async def _verified_stripped_state(self, room_id: str, version: RoomVersion, entries: list[Any]) -> list[dict[str, Any]]:
        """Stripped state from a ``knock_room_state`` answer: full PDUs (spec v1.16) must be of this room
        and correctly signed, or are dropped; plain stripped events (what servers
        sent before v1.16, Synapse among them) are kept as they are."""
        out = []
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str) or not isinstance(entry.get("state_key"), str):
                continue
            if "signatures" in entry:
                try:
                    event = parse_received_pdu(entry, version)
                    if event.room_id != room_id:
                        continue
                    await self.events.check_signatures(event)
                except PduRefused as e:
                    logger.info("knock on %s: dropping a state event: %s", room_id, e)
                    continue
                out.append({"type": event.type, "state_key": event.state_key, "sender": event.sender,
                            "content": thaw(event.content)})
            elif isinstance(entry.get("content"), Mapping) and isinstance(entry.get("sender"), str):
                out.append({"type": entry["type"], "state_key": entry["state_key"], "sender": entry["sender"],
                            "content": thaw(entry["content"])})
        return out

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

    async def _record_outside_event(self, event: Event, new_room: Optional[NewRoomRow] = None) -> None:
        """Persist a membership event of ours in a room we are not in (it is not in our DAG's continuation);
        ``new_room`` when the room may be unknown here (a knock)."""
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
                state_group=None, state_to_store=state, current_state=state, new_room=new_room,
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

    async def on_invite_v1(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]:
        """``PUT /v1/invite/{roomId}/{eventId}``: the body is the invite itself, its stripped room state in
        ``unsigned.invite_room_state``; the room version is not sent and the spec says to assume
        "1" or "2" (one event format: we use the version we know the room by, else "1")."""
        if not isinstance(body, Mapping):
            raise bad_json("body must be the invite event")
        known = await self.loader.room_version(room_id)
        version_id = known.identifier if known is not None else "1"
        if version_id not in ("1", "2"):
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"Room version {version_id} needs the v2 invite API", room_version=version_id)
        unsigned = body.get("unsigned") if isinstance(body.get("unsigned"), Mapping) else {}
        stripped = unsigned.get("invite_room_state") if isinstance(unsigned.get("invite_room_state"), list) else []
        event = {k: v for k, v in thaw(body).items() if k != "unsigned"}
        return await self.on_invite(origin, room_id, event_id,
                                    {"event": event, "room_version": version_id, "invite_room_state": thaw(stripped)})

    async def _cmd_invite(self, args: dict[str, Any]) -> dict[str, Any]:
        origin, room_id = args["origin"], args["room_id"]
        version = get_room_version(args["room_version"])
        try:
            event = parse_received_pdu(args["event"], version)
        except PduRefused as e:
            raise invalid_param(str(e))
        if event.event_id != args["event_id"] or event.room_id != room_id:
            raise invalid_param("event ID or room does not match the path")
        if (event.type != auth_rules.MEMBER or event.membership != "invite" or event.state_key is None
                or domain_of(event.state_key) != self.server_name or domain_of(event.sender) != origin):
            raise invalid_param(f"not an invite of a user of {self.server_name} by a user of {origin}")
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

    def attach_presence(self, writer: Any, store: Any) -> None:
        """Exchange presence with the servers sharing rooms with each user (``m.presence`` EDUs).

        ``writer`` is the instance's ``PresenceWriter``: its stored changes
        (only shard owners store any) of local users are queued, one
        coalesced EDU per user and destination, for every server sharing a
        room with the user. Received updates run on the owner of the user's
        presence shard (``presence.remote``); they are taken only for users
        of the origin server who are joined to a room here.
        """
        from homeserver.core.presence import to_federation

        self._presence_store = store

        def on_change(presence: Any) -> None:
            if domain_of(presence.user_id) != self.server_name:
                return
            entry = to_federation(presence, self.now_ms())
            self._background("m.presence", self._send_presence(presence.user_id, entry))

        writer.observers.append(on_change)
        self.edu_handlers["m.presence"] = self._on_presence_edu

    async def _send_presence(self, user_id: str, entry: dict[str, Any]) -> None:
        servers = await self._presence_store.get_servers_sharing_rooms(user_id)
        for server in sorted(servers - {self.server_name, ""}):
            await self._queue.enqueue_edu(server, {"edu_type": "m.presence", "content": {"push": [entry]}},
                                          coalesce_key=f"m.presence:{user_id}")

    async def _on_presence_edu(self, origin: str, content: Any) -> None:
        push = content.get("push") if isinstance(content, Mapping) else None
        if not isinstance(push, list):
            raise bad_json("m.presence content must have a 'push' list")
        for entry in push:
            user_id = entry.get("user_id") if isinstance(entry, Mapping) else None
            if not isinstance(user_id, str) or domain_of(user_id) != origin:
                continue
            if not await self._presence_store.is_joined_anywhere(user_id):
                continue
            try:
                await self._dispatcher.run("presence.remote", user_id, {"entry": thaw(entry)})
            except MatrixError as e:
                logger.info("presence of %s from %s refused: %s", user_id, origin, e)

    def attach_to_device(self, commands: Any) -> None:
        """Exchange send-to-device messages with other servers (``m.direct_to_device`` EDUs).

        ``commands`` is the instance's ``ToDeviceCommands``: messages for remote
        users are queued for their server; received ones are delivered by the
        owner of each recipient's ``to_device`` shard.
        """
        from homeserver.handlers.to_device import DIRECT_TO_DEVICE

        async def send_remote(destination: str, edu: dict[str, Any]) -> None:
            await self._queue.enqueue_edu(destination, edu)

        commands.send_remote = send_remote
        self.edu_handlers[DIRECT_TO_DEVICE] = commands.receive_remote

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

    def outbound_pdu(self, event: Event) -> OutboundPdu:
        """``EventCreator.outbound_for``: queue a local event for the room's other servers in its own transaction.

        The destinations are the servers with joined members after the event
        (read by the store in that transaction) and the target's server of a
        kick or ban; never this server. Queuing in the transaction that
        persists the event (rather than after its commit) means a crash right
        after the commit cannot leave an event that clients see but the
        other servers never get: the sender finds the queue rows on its next
        poll whatever happened to this process.
        """
        also: tuple[str, ...] = ()
        if event.type == auth_rules.MEMBER and event.state_key is not None and event.membership in ("leave", "ban"):
            also = (domain_of(event.state_key),)
        payload = encode_canonical_json(federation_pdu(event), allow_floats=True).decode("utf-8")
        return OutboundPdu(payload, self.now_ms(), exclude=(self.server_name,), also=also)

    def on_local_event(self, created: Any) -> None:
        """``EventCreator`` observer: start sending at once to the servers the event was queued for.

        Only a shortcut: without it (another process, a crash) the sender
        finds the queued rows on its next poll.
        """
        self._queue.notify(getattr(created, "queued_destinations", ()))

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
        errcode = getattr(e, "errcode", None)
        if isinstance(code, int) and code == 400 and errcode in _PASSED_THROUGH:
            # Errors the spec says reach the client (make_join / make_knock ver
            # mismatch) or tell the joining server to try another one.
            error = body.get("error") if isinstance(body, Mapping) else None
            extra = {"room_version": body["room_version"]} if isinstance(body, Mapping) and isinstance(body.get("room_version"), str) else {}
            raise MatrixError(400, errcode, f"the resident server refused: {error or errcode}", **extra)
        raise


_PASSED_THROUGH = (Codes.INCOMPATIBLE_ROOM_VERSION, Codes.UNABLE_TO_AUTHORISE_JOIN, Codes.UNABLE_TO_GRANT_JOIN)


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
