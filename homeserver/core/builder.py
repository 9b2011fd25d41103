"""Building, hashing and signing new local events.

Spec: server-server-api "PDUs" (``prev_events``, ``depth``), "Auth events
selection", "Adding hashes and signatures to outgoing events", and the event
format of each room version (fragments v1-event-ids, v4-event-format,
v12-event-format).

Pure: the caller supplies the time, the prev / auth events it chose (see
:func:`homeserver.core.auth.auth_types_for_event`) and the signing key.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Mapping, Sequence

import nacl.signing
from unpaddedbase64 import encode_base64

from homeserver.core.events import MAX_DEPTH, Event
from homeserver.core.room_versions import EventFormat, RedactionRules, RoomVersion
from homeserver.core.signing import add_hashes_and_signatures, compute_reference_hash

_LOCALPART_CHARS = string.ascii_letters + string.digits


def _reference(room_version: RoomVersion, event: Event) -> Any:
    """An entry of ``prev_events`` / ``auth_events`` in the room's format:
    the ID, or for rooms v1/v2 ``[id, {"sha256": reference hash}]``."""
    if room_version.event_format is EventFormat.V1:
        digest = compute_reference_hash(room_version, event.get_pdu_json())
        return [event.event_id, {"sha256": encode_base64(digest)}]
    return event.event_id


def build_local_event(
    room_version: RoomVersion,
    *,
    event_type: str,
    sender: str,
    content: Mapping[str, Any],
    room_id: str | None,
    prev_events: Sequence[Event],
    auth_events: Sequence[Event],
    origin_server_ts: int,
    server_name: str,
    signing_key: nacl.signing.SigningKey,
    state_key: str | None = None,
    redacts: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
    event_id_localpart: str | None = None,
) -> Event:
    """Build, hash and sign a new event of this server.

    - ``depth`` is one more than the deepest prev event (1 for the first
      event), capped at 2**63 - 1 (pdu_v1 "depth").
    - Rooms v1/v2 get an event ID ``$<localpart>:<server_name>`` (random
      localpart unless given) and ``[id, {"sha256": ...}]`` references.
    - Room v12: ``room_id`` must be None for the create event and the create
      event is left out of ``auth_events`` (it is implied by the room ID).
    - ``redacts`` goes top-level before room v11 and into ``content`` from v11
      (fragment v11-event-format).

    Returns the validated :class:`Event`; raises InvalidEventError (a
    ValueError) if the result is not a valid PDU.
    """
    content = dict(content)
    is_create = event_type == "m.room.create" and state_key == ""
    auth = list(auth_events)
    if room_version.room_id_is_create_event_hash and not is_create:
        if room_id is None:
            raise ValueError("Events other than the create event need a room_id")
        implied = "$" + room_id[1:]
        auth = [e for e in auth if e.event_id != implied]
    depth = min(max((e.depth for e in prev_events), default=0) + 1, MAX_DEPTH)
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": content,
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": [_reference(room_version, e) for e in prev_events],
        "auth_events": [_reference(room_version, e) for e in auth],
        "unsigned": dict(unsigned or {}),
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redaction_rules is RedactionRules.V11:
            content["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if room_version.event_format is EventFormat.V1:
        localpart = event_id_localpart or "".join(
            secrets.choice(_LOCALPART_CHARS) for _ in range(18)
        )
        pdu["event_id"] = "$%s:%s" % (localpart, server_name)
    signed = add_hashes_and_signatures(room_version, pdu, server_name, signing_key)
    return Event.from_pdu(signed, room_version)
