"""Receiving PDUs from other servers (server-server API "Checks performed on receipt of a PDU").

:class:`FederationEventHandler` runs on the owner of the room's events
shard (the inbound HTTP edge reaches it through the command dispatcher), so
received events and locally created ones are appended to a room by one
writer, one at a time: both take the room's turn on the event creator's
:class:`Linearizer`. The order in which a room's received PDUs reach the
writer is their arrival order: ``federation_inbound`` instances stage them
in PostgreSQL and one instance at a time (holding the room's lease) hands
them over, oldest first (:mod:`homeserver.federation.inbound`).

For each PDU, in order:

1. it parses in the room's version format, is within the size limits, and
   carries valid signatures of every server that must sign it (keyring);
   failures drop it (the per-PDU result says why);
2. a content hash mismatch replaces it by its redacted form;
3. missing ``prev_events`` are fetched with ``/get_missing_events`` from
   the origin (bounded, once, each fetched event handled by these same
   steps); if prev events stay unknown, the state before the PDU is asked
   of the origin (``/state_ids``, missing events fetched with ``/event``,
   each checked against its auth events and kept as an outlier); a PDU with
   neither is refused;
4. it must pass the auth rules against its own auth events, and against the
   state before it (the states after its prev events, resolved with
   :mod:`homeserver.state` when they differ); else it is *rejected*;
5. if it passes those but not against the room's current state it is
   *soft-failed*; rejected and soft-failed events are recorded in
   ``federation_rejected_events`` and never reach clients;
6. accepted events are persisted with their position on the room's events
   shard, updating forward extremities and the (resolved) current state,
   and published on the bus like local events.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable, Mapping, Optional

from homeserver.core import auth as auth_rules
from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import AuthError, InvalidEventError, SignatureVerifyError
from homeserver.core.events import Event, thaw
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import RoomVersion
from homeserver.core.rooms import ExtremitiesChangedError
from homeserver.core.signing import check_content_hash
from homeserver.state import RoomGraph

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]

#: How many missing events one ``/get_missing_events`` call may return.
MISSING_EVENTS_LIMIT = 10
#: How many state events one ``/state_ids`` fallback may fetch with ``/event``.
MAX_STATE_FETCH = 200
#: How many times a persist is retried when the room moved under it.
MAX_PERSIST_ATTEMPTS = 5


class PduRefused(Exception):
    """A PDU that is dropped without being stored (bad format, size, signature)."""


def federation_pdu(event: Event) -> dict[str, Any]:
    """The PDU of ``event`` as sent to other servers: without the local ``unsigned`` data."""
    pdu = event.get_pdu_json()
    pdu.pop("unsigned", None)
    return pdu


def parse_received_pdu(pdu: Mapping[str, Any], version: RoomVersion) -> Event:
    """Parse and size-check a received PDU; its redacted form if its content hash is wrong.

    Raises :class:`PduRefused` (drop it). Signatures are checked separately
    (they need the keyring).
    """
    if not isinstance(pdu, Mapping):
        raise PduRefused("PDU is not an object")
    try:
        event = Event.from_pdu(pdu, version)
        auth_rules.check_size_limits(event)
        auth_rules.check_received_event_limits(event)
    except InvalidEventError as e:
        raise PduRefused(f"invalid event: {e}")
    except AuthError as e:
        raise PduRefused(e.reason if hasattr(e, "reason") else str(e))
    if not check_content_hash(event.get_pdu_json()):
        logger.info("content hash mismatch on %s: using its redacted form", event.event_id)
        try:
            event = Event.from_pdu(prune_event_dict(version, event.get_pdu_json()), version)
        except InvalidEventError as e:
            raise PduRefused(f"invalid redacted event: {e}")
    return event


def auth_state_for(version: RoomVersion, event: Event, state: Mapping[StateKey, Event]) -> dict[StateKey, Event]:
    """The entries of ``state`` the auth rules read for ``event`` (plus the create event)."""
    wanted = auth_rules.auth_types_for_event(version, event) | {(auth_rules.CREATE, "")}
    return {k: state[k] for k in wanted if k in state}


class FederationEventHandler:
    """Validates, authorises and persists received PDUs of the rooms this instance writes.

    ``creator`` is the instance's ``EventCreator`` (its linearizer, loader,
    allocators and cached room heads), ``store`` the ``EventStore``,
    ``fed_store`` the ``FederationEventStore``, ``keyring`` verifies event
    signatures, ``client`` is the ``FederationClient`` used to fetch missing
    events. ``on_persisted(event, origin)`` hooks run after each commit.
    """

    def __init__(self, clock: Any, creator: Any, store: Any, fed_store: Any, keyring: Any, client: Any) -> None:
        self._clock = clock
        self._creator = creator
        self.creator = creator
        self._store = store
        self._fed = fed_store
        self._keyring = keyring
        self.keyring = keyring
        self._client = client
        self.client = client
        self.loader = creator.loader
        self.on_persisted: list[Callable[[Event, str], Any]] = []

    def now_ms(self) -> int:
        """Milliseconds on the injected clock."""
        return int(self._clock.seconds() * 1000)

    async def receive_pdu(self, origin: str, pdu: Mapping[str, Any]) -> dict[str, Any]:
        """Handle one PDU of a transaction from ``origin``: ``{}`` or ``{"error": reason}``."""
        room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
        if not isinstance(room_id, str):
            return {"error": "PDU has no room_id"}
        version = await self.loader.room_version(room_id)
        if version is None:
            return {"error": f"unknown room {room_id}"}
        try:
            event = parse_received_pdu(pdu, version)
            await self.check_signatures(event)
        except PduRefused as e:
            return {"error": str(e)}
        async with self._creator.linearizer.lock(room_id):
            return await self._process(origin, event, fetch_missing=True)

    async def receive_validated(self, origin: str, event: Event, fetch_missing: bool = False,
                                outbound: Any = None) -> dict[str, Any]:
        """Process an already parsed and signature-checked event under the room's turn (``send_join``).

        ``outbound`` (an ``OutboundPdu``) relays the event to the room's
        other servers, queued in the transaction that persists it.
        """
        async with self._creator.linearizer.lock(event.room_id):
            return await self._process(origin, event, fetch_missing=fetch_missing, outbound=outbound)

    async def check_signatures(self, event: Event) -> None:
        """Verify the signatures ``event`` must carry; :class:`PduRefused` if not."""
        try:
            await self._keyring.verify_event_signatures(event)
        except SignatureVerifyError as e:
            raise PduRefused(f"signature check failed: {e}")
        except Exception as e:  # key fetch failures (network, bad key responses)
            raise PduRefused(f"could not verify signatures: {e}")

    # -- the per-event pipeline (caller holds the room's turn) ------------------

    async def backfill(self, room_id: str, server_name: str, limit: int) -> int:
        """Fetch history before the room's oldest event from one server in the room (one round).

        Asks the joined servers (other than ``server_name``) in turn for
        ``GET /backfill`` from the oldest event's missing prev events, keeps
        PDUs of this room whose content hash and signatures verify and that
        are older than that event, and stores them as backfilled history.
        Returns how many events were stored (0: nothing missing or no server
        answered).
        """
        oldest = await self._fed.oldest_event(room_id)
        if oldest is None:
            return 0
        oldest_pdu = json.loads(oldest[1])
        prevs = [e for e in oldest_pdu.get("prev_events", []) if isinstance(e, str)]
        if not prevs:
            return 0
        known, _ = await self._known(room_id, prevs)
        if set(prevs) <= known:
            return 0
        version = await self.loader.room_version(room_id)
        if version is None:
            return 0
        servers = sorted((await self._fed.get_joined_servers(room_id)) - {server_name})
        path = "/_matrix/federation/v1/backfill/" + _quote(room_id)
        for server in servers:
            try:
                response = await self._client.get_json(server, path, args={"v": prevs, "limit": [str(limit)]})
            except Exception as e:
                logger.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = response.get("pdus") if isinstance(response, Mapping) else None
            if not isinstance(pdus, list):
                continue
            accepted: list[tuple[Event, str]] = []
            for pdu in pdus[:limit]:
                try:
                    event = parse_received_pdu(pdu, version)
                    if event.room_id != room_id:
                        raise PduRefused("event of another room")
                    if event.depth >= oldest_pdu.get("depth", 0):
                        raise PduRefused("not older than the room's oldest event")
                    await self.check_signatures(event)
                except PduRefused as e:
                    logger.info("backfill from %s: dropping a PDU: %s", server, e)
                    continue
                body = event.get_pdu_json()
                body.pop("unsigned", None)
                accepted.append((event, encode_canonical_json(body, allow_floats=True).decode("utf-8")))
            if accepted:
                # Auth rules: each event against its own auth events (from this
                # batch or held here), auth events checked first.
                batch = {e.event_id: e for e, _ in accepted}
                chain = await self.auth_closure(room_id, [a for e in batch.values() for a in e.auth_event_ids_with_create],
                                                extra_events=batch)
                passing = check_auth_chain(version, {**chain, **batch})
                accepted = [(e, j) for e, j in accepted if e.event_id in passing]
            if accepted:
                placed = await self._backfill_states(server, version, room_id, [e for e, _ in accepted])
                rows = [(e, j, placed[e.event_id]) for e, j in accepted if e.event_id in placed]
                if rows:
                    return await self._fed.persist_backfilled(room_id, rows)
        return 0

    async def _backfill_states(self, server: str, version: RoomVersion, room_id: str,
                               events: list[Event]) -> dict[str, dict[StateKey, str]]:
        """The state after each backfilled event (those whose state cannot be known are left out).

        In depth order: the state before an event is the state after its prev
        events (from this batch or held here), resolved when they differ; when
        a prev event is neither, ``server`` is asked for the state before the
        event (``/state_ids``, usually once per batch: for its oldest events).
        A message shares its predecessor's state mapping, so it shares its
        state group too.
        """
        batch = {e.event_id: e for e in events}
        outside = {p for e in events for p in e.prev_event_ids if p not in batch}
        held = await self._fed.get_state_after(room_id, sorted(outside)) if outside else {}
        after: dict[str, dict[StateKey, str]] = {}
        for event in sorted(events, key=lambda e: (e.depth, e.event_id)):
            prev_states = []
            complete = True
            for prev in event.prev_event_ids:
                state = after.get(prev, held.get(prev))
                if state is None:
                    complete = False
                    break
                prev_states.append(state)
            before: Optional[Mapping[StateKey, str]]
            if not event.prev_event_ids:
                before = {}  # the create event: nothing before it
            elif not complete:
                before = await self._state_from_remote(server, event)
            elif len(prev_states) == 1 or all(s is prev_states[0] for s in prev_states):
                before = prev_states[0]
            else:
                try:
                    before = await self.resolve(version, room_id, prev_states, extra_events=batch)
                except ValueError as e:
                    logger.info("backfill: state before %s unresolvable: %s", event.event_id, e)
                    before = await self._state_from_remote(server, event)
            if before is None:
                logger.info("backfill: no state for %s from %s; not stored", event.event_id, server)
                continue
            if event.state_key is not None:
                state_after = dict(before)
                state_after[(event.type, event.state_key)] = event.event_id
            else:
                state_after = before  # type: ignore[assignment]
            after[event.event_id] = state_after  # type: ignore[assignment]
        return after

    async def _known(self, room_id: str, event_ids: Iterable[str]) -> tuple[set[str], dict[str, tuple[str, str]]]:
        accepted, rejected = await self._known_rows(room_id, event_ids)
        return set(accepted), rejected

    async def _known_rows(self, room_id: str, event_ids: Iterable[str]) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
        """The stored rows of the accepted ones of ``event_ids``, and ``event_id -> (kind, reason)`` of the rejected ones."""
        ids = list(event_ids)
        rows = await self._store.get_events(room_id, ids)
        # Outliers (stream_shard -1) have no place in the DAG yet: not "known" here.
        accepted = {e: row for e, row in rows.items() if row.stream_shard >= 0}
        rejected = await self._fed.get_rejected(room_id, [e for e in ids if e not in accepted])
        return accepted, rejected

    async def _process(self, origin: str, event: Event, fetch_missing: bool, outbound: Any = None) -> dict[str, Any]:
        room_id = event.room_id
        version = event.room_version
        prev_ids = list(event.prev_event_ids)
        # The event itself and its prev events (their rows, for their state groups) in
        # one lookup: this runs for every received PDU.
        accepted, rejected = await self._known_rows(room_id, [event.event_id] + prev_ids)
        if event.event_id in accepted:
            return {}
        if event.event_id in rejected:
            kind, reason = rejected[event.event_id]
            return {} if kind == "soft_failed" else {"error": f"rejected: {reason}"}

        prev_rows = {e: row for e, row in accepted.items() if e in prev_ids}
        bad = {e: r for e, r in rejected.items() if e in prev_ids}
        missing = [e for e in prev_ids if e not in prev_rows and e not in bad]
        if missing and fetch_missing:
            await self._fetch_missing(origin, event)
            prev_rows, bad = await self._known_rows(room_id, prev_ids)
            missing = [e for e in prev_ids if e not in prev_rows and e not in bad]
        have = set(prev_rows)
        remote_state: Optional[dict[StateKey, str]] = None
        if missing:
            if not fetch_missing:
                return {"error": f"missing prev events {missing[:5]}"}
            # The gap is too large: take the state before the event from the origin.
            remote_state = await self._state_from_remote(origin, event)
            if remote_state is None:
                return {"error": f"missing prev events {missing[:5]} and no usable state from {origin}"}
        if not have and remote_state is None and event.type != auth_rules.CREATE:
            return await self._reject(origin, event, "rejected", "all prev events were rejected")

        # Auth events: known, none rejected, and the event passes against them.
        auth_ids = list(event.auth_event_ids)
        auth_events = await self.loader.get_events(room_id, auth_ids)
        _, auth_rejected = await self._known(room_id, [e for e in auth_ids if e not in auth_events])
        try:
            auth_rules.check_state_independent_auth_rules(
                version, event, list(auth_events.values()), rejected_event_ids=frozenset(auth_rejected)
            )
            by_key = {(e.type, e.state_key): e for e in auth_events.values() if e.state_key is not None}
            create_id = next((e for e in event.auth_event_ids_with_create if e not in auth_ids), None)
            if create_id is not None:
                create = await self.loader.get_events(room_id, [create_id])
                by_key.update({(auth_rules.CREATE, ""): ev for ev in create.values()})
            auth_rules.check_auth_rules(version, event, by_key)
        except AuthError as e:
            return await self._reject(origin, event, "rejected", f"auth events: {_reason(e)}")

        # The state before the event.
        if remote_state is not None:
            groups: list[int] = []
            group_states: dict[int, Any] = {}
            state_before = remote_state
        else:
            groups = sorted({row.state_group for row in prev_rows.values()})
            group_states = await self._store.get_state_ids_for_groups(room_id, groups)
            state_before = await self.resolve(version, room_id, [group_states[g] for g in groups])
        before_events = await self.loader.state_events(room_id, state_before)
        try:
            auth_rules.check_auth_rules(version, event, auth_state_for(version, event, before_events))
        except AuthError as e:
            return await self._reject(origin, event, "rejected", f"state before: {_reason(e)}")

        for attempt in range(MAX_PERSIST_ATTEMPTS):
            snapshot = await self._store.get_room_snapshot(room_id)
            if snapshot is None:
                return {"error": f"unknown room {room_id}"}
            current = dict(snapshot.current_state)
            if current != state_before:
                current_events = await self.loader.state_events(room_id, current)
                try:
                    auth_rules.check_auth_rules(version, event, auth_state_for(version, event, current_events))
                except AuthError as e:
                    return await self._reject(origin, event, "soft_failed", f"current state: {_reason(e)}")
            try:
                await self._persist(event, snapshot, state_before, before_events, group_states, groups, origin, outbound)
                return {}
            except ExtremitiesChangedError:
                self._creator.forget_head(room_id)
                continue
        return {"error": "the room changed too often; retry"}

    async def _reject(self, origin: str, event: Event, kind: str, reason: str) -> dict[str, Any]:
        logger.info("%s event %s from %s: %s", kind, event.event_id, origin, reason)
        pdu_json = encode_canonical_json(event.get_pdu_json(), allow_floats=True).decode("utf-8")
        await self._fed.record_rejected(event.room_id, event.event_id, kind, reason, origin, pdu_json, self.now_ms())
        # A soft-failed event is accepted as far as the sender is concerned.
        return {} if kind == "soft_failed" else {"error": f"rejected: {reason}"}

    async def _persist(
        self,
        event: Event,
        snapshot: Any,
        state_before: dict[StateKey, str],
        before_events: Mapping[StateKey, Event],
        group_states: Mapping[int, Mapping[StateKey, str]],
        groups: list[int],
        origin: str,
        outbound: Any = None,
    ) -> None:
        room_id = event.room_id
        version = event.room_version
        pdu = event.get_pdu_json()
        pdu.pop("unsigned", None)
        state_after = dict(state_before)
        if event.state_key is not None:
            key = (event.type, event.state_key)
            replaced = before_events.get(key)
            if replaced is not None:
                pdu["unsigned"] = {
                    "replaces_state": replaced.event_id,
                    "prev_content": thaw(replaced.content),
                    "prev_sender": replaced.sender,
                }
            state_after[key] = event.event_id
        stored = Event.from_pdu(pdu, version)
        reuse_group = None
        if event.state_key is None and len(groups) == 1 and dict(group_states[groups[0]]) == state_before:
            reuse_group = groups[0]

        extremities = (set(snapshot.extremities) - set(event.prev_event_ids)) | {event.event_id}
        if extremities == {event.event_id}:
            new_current = state_after
        else:
            others = [e for e in extremities if e != event.event_id]
            rows = await self._store.get_events(room_id, others)
            other_groups = sorted({r.state_group for r in rows.values()})
            other_states = await self._store.get_state_ids_for_groups(room_id, other_groups)
            new_current = await self.resolve(version, room_id, [state_after] + [other_states[g] for g in other_groups],
                                             extra_events={stored.event_id: stored})
        apply_redaction = False
        if event.redacts is not None:
            targets = await self.loader.get_events(room_id, [event.redacts])
            target = targets.get(event.redacts)
            if target is not None:
                apply_redaction = auth_rules.redaction_allowed(
                    version, event, target, before_events.get(("m.room.power_levels", "")),
                    before_events.get((auth_rules.CREATE, "")),
                )
        allocator = self._creator.allocator_for(room_id)
        payload = self._creator.stream_payload(event)
        pdu_json = encode_canonical_json(stored.get_pdu_json(), allow_floats=True).decode("utf-8")
        await self._fed.persist_received_event(
            allocator,
            stored,
            pdu_json,
            expected_extremities=snapshot.extremities,
            new_extremities=extremities,
            state_group=reuse_group,
            state_to_store=None if reuse_group is not None else state_after,
            current_state=None if new_current == dict(snapshot.current_state) else new_current,
            apply_redaction=apply_redaction,
            on_position=lambda position: allocator.attach(position, payload),
            outbound=outbound,
        )
        self._creator.forget_head(room_id)
        self.loader.remember(stored)
        for hook in list(self.on_persisted):
            try:
                result = hook(stored, origin)
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                logger.exception("on_persisted hook failed for %s", event.event_id)

    async def resolve(self, version: RoomVersion, room_id: str, states: list[Mapping[StateKey, str]],
                      extra_events: Optional[Mapping[str, Event]] = None) -> dict[StateKey, str]:
        """The resolved state of several state sets (the one set itself when they agree).

        ``extra_events`` are events of the sets not stored yet (the event being persisted).
        """
        distinct = []
        for s in states:
            if not any(dict(s) == d for d in distinct):
                distinct.append(dict(s))
        if not distinct:
            return {}
        if len(distinct) == 1:
            return distinct[0]
        extra = dict(extra_events or {})
        event_map = await self.auth_closure(room_id, {e for s in distinct for e in s.values()}, extra)
        missing = {e for s in distinct for e in s.values()} - set(event_map)
        if missing:
            raise ValueError(f"cannot resolve state: events {sorted(missing)[:3]} are unknown")
        return RoomGraph(version).resolve(distinct, event_map)

    async def auth_closure(self, room_id: str, event_ids: Iterable[str],
                           extra_events: Optional[Mapping[str, Event]] = None) -> dict[str, Event]:
        """The given events and their auth chains, as far as we hold them (or ``extra_events`` has them)."""
        out: dict[str, Event] = {}
        frontier = set(event_ids)
        while frontier:
            found = {e: extra_events[e] for e in frontier if extra_events and e in extra_events}
            found.update(await self.loader.get_events(room_id, frontier - set(found)))
            out.update(found)
            frontier = {a for e in found.values() for a in e.auth_event_ids_with_create if a not in out}
            frontier -= set(out)
            if not found:
                break
        return out

    # -- missing events -----------------------------------------------------------

    async def _state_from_remote(self, origin: str, event: Event) -> Optional[dict[StateKey, str]]:
        """The state before ``event`` per ``origin`` (``/state_ids``), its events fetched, checked and kept as outliers.

        Events we lack are fetched with ``/event`` (at most
        :data:`MAX_STATE_FETCH`); each must carry valid signatures and pass
        the auth rules against its own auth events. None when the origin
        cannot tell us or the answer is unusable.
        """
        room_id = event.room_id
        version = event.room_version
        try:
            answer = await self._client.get_json(
                origin, f"/_matrix/federation/v1/state_ids/{_quote(room_id)}", args={"event_id": event.event_id}
            )
        except Exception as e:
            logger.info("state_ids from %s for %s failed: %s", origin, event.event_id, e)
            return None
        pdu_ids = answer.get("pdu_ids") if isinstance(answer, dict) else None
        chain_ids = answer.get("auth_chain_ids") if isinstance(answer, dict) else None
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
            return None
        wanted = [e for e in dict.fromkeys(pdu_ids + chain_ids) if isinstance(e, str)]
        known = await self.loader.get_events(room_id, wanted)
        to_fetch = [e for e in wanted if e not in known]
        if len(to_fetch) > MAX_STATE_FETCH:
            logger.info("state of %s needs %d events from %s: too many", event.event_id, len(to_fetch), origin)
            return None
        fetched: dict[str, Event] = {}
        for event_id in to_fetch:
            try:
                got = await self._client.get_json(origin, f"/_matrix/federation/v1/event/{_quote(event_id)}")
                pdus = got.get("pdus") if isinstance(got, dict) else None
                if not isinstance(pdus, list) or not pdus:
                    continue
                remote = parse_received_pdu(pdus[0], version)
                if remote.event_id != event_id or remote.room_id != room_id:
                    continue
                await self.check_signatures(remote)
                fetched[event_id] = remote
            except Exception as e:
                logger.info("could not fetch state event %s from %s: %s", event_id, origin, e)
        accepted = check_auth_chain(version, {**known, **fetched})
        new = [e for e in accepted.values() if e.event_id in fetched]
        await self._fed.store_outliers(room_id, [
            (e.event_id, encode_canonical_json(e.get_pdu_json(), allow_floats=True).decode("utf-8")) for e in new
        ])
        state = {}
        for event_id in pdu_ids:
            e = accepted.get(event_id) if isinstance(event_id, str) else None
            if e is not None and e.state_key is not None:
                state[(e.type, e.state_key)] = event_id
        if (auth_rules.CREATE, "") not in state:
            return None
        return state


    async def _fetch_missing(self, origin: str, event: Event) -> None:
        """Fetch up to :data:`MISSING_EVENTS_LIMIT` events between our extremities and ``event``."""
        snapshot = await self._store.get_room_snapshot(event.room_id)
        if snapshot is None:
            return
        body = {
            "earliest_events": list(snapshot.extremities),
            "latest_events": [event.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": max(0, snapshot.max_depth - MISSING_EVENTS_LIMIT),
        }
        try:
            response = await self._client.post_json(
                origin, f"/_matrix/federation/v1/get_missing_events/{_quote(event.room_id)}", body
            )
        except Exception as e:
            logger.info("get_missing_events from %s for %s failed: %s", origin, event.event_id, e)
            return
        pdus = response.get("events") if isinstance(response, dict) else None
        if not isinstance(pdus, list):
            return
        parsed = []
        for pdu in pdus[:MISSING_EVENTS_LIMIT]:
            try:
                fetched = parse_received_pdu(pdu, event.room_version)
                if fetched.room_id != event.room_id:
                    continue
                await self.check_signatures(fetched)
            except PduRefused as e:
                logger.info("dropping missing event from %s: %s", origin, e)
                continue
            parsed.append(fetched)
        for fetched in sorted(parsed, key=lambda e: (e.depth, e.origin_server_ts)):
            result = await self._process(origin, fetched, fetch_missing=False)
            if result:
                logger.info("missing event %s from %s: %s", fetched.event_id, origin, result)


def check_auth_chain(version: RoomVersion, events: Mapping[str, Event]) -> dict[str, Event]:
    """The events of a returned state + auth chain that pass the auth rules against their own auth events.

    Checked in (depth, ID) order so auth events come first; an event whose
    auth events are missing or rejected is rejected.
    """
    accepted: dict[str, Event] = {}
    for event in sorted(events.values(), key=lambda e: (e.depth, e.event_id)):
        auth = [accepted[a] for a in event.auth_event_ids if a in accepted]
        if len(auth) != len(event.auth_event_ids):
            continue
        by_key = {(e.type, e.state_key): e for e in auth if e.state_key is not None}
        for a in event.auth_event_ids_with_create:
            if a in accepted and accepted[a].type == auth_rules.CREATE:
                by_key[(auth_rules.CREATE, "")] = accepted[a]
        try:
            auth_rules.check_state_independent_auth_rules(version, event, auth)
            auth_rules.check_auth_rules(version, event, by_key)
        except auth_rules.AuthError as e:
            logger.info("state event %s fails its auth events: %s", event.event_id, getattr(e, "reason", e))
            continue
        accepted[event.event_id] = event
    return accepted


def _reason(e: AuthError) -> str:
    return getattr(e, "reason", None) or str(e)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
