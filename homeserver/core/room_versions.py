"""The registry of room versions and the rule flags that distinguish them.

Spec: "Room Versions" (content/rooms/_index.md) and each of
content/rooms/v1.md ... v12.md. Every behaviour that differs between room
versions is a named flag on :class:`RoomVersion`; code elsewhere in the core
asks the flag, never the version string.
"""

from __future__ import annotations

import enum
from typing import Mapping

import attrs

from homeserver.core.errors import UnsupportedRoomVersionError


class EventFormat(enum.Enum):
    """How events (PDUs) of a room version are shaped and identified.

    - ``V1`` (rooms v1, v2): the PDU carries ``event_id`` (``$opaque:domain``);
      ``auth_events`` / ``prev_events`` are ``[[event_id, {hashes}], ...]``.
    - ``V2`` (room v3): the event ID is the reference hash in standard
      unpadded base64; ``auth_events`` / ``prev_events`` are lists of IDs.
    - ``V3`` (rooms v4 to v11): as ``V2`` but URL-safe unpadded base64.
    - ``V4`` (room v12): as ``V3``; the create event has no ``room_id`` and
      the room ID is derived from the create event's ID.
    """

    V1 = 1
    V2 = 2
    V3 = 3
    V4 = 4


class StateResolutionVersion(enum.Enum):
    """Which state resolution algorithm a room version uses.

    ``V1`` is the original algorithm (rooms v1), ``V2`` the one introduced in
    room v2, ``V2_1`` the v12 iteration (empty initial state for the power
    events pass, conflicted state subgraph).
    """

    V1 = "1"
    V2 = "2"
    V2_1 = "2.1"


class RedactionRules(enum.Enum):
    """Which redaction algorithm a room version uses (spec fragments
    v1-redactions, v6-redactions, v9-redactions, v11-redactions)."""

    V1 = "v1"
    V6 = "v6"
    V9 = "v9"
    V11 = "v11"


@attrs.frozen
class RoomVersion:
    """Every rule flag the spec distinguishes between room versions.

    Attributes:
        identifier: the version string ("1" ... "12").
        stable: whether the spec lists the version as stable.
        event_format: PDU shape and event ID scheme.
        state_res: state resolution algorithm.
        enforce_key_validity: signing keys must be valid at the event's
            ``origin_server_ts`` (v5+, fragment v5-signing-requirements).
        special_case_aliases_auth: auth rule "if type is m.room.aliases" (v1-v5).
        strict_canonical_json: integers only, within +/-(2**53 - 1) (v6+).
        limit_notifications_power_levels: ``notifications`` in power level
            change checks (v6+).
        redaction_rules: which redaction algorithm applies.
        redaction_auth_rule: auth rule 11 "if type is m.room.redaction" with
            the redact level and event ID domain check (v1, v2 only).
        knock_join_rule: ``knock`` membership and join rule (v7+).
        restricted_join_rule: ``restricted`` join rule and
            ``join_authorised_via_users_server`` (v8+).
        knock_restricted_join_rule: ``knock_restricted`` join rule (v10+).
        enforce_int_power_levels: power level values must be JSON integers
            (v10+); before, strings and floats are coerced.
        implicit_room_creator: the creator is the create event's ``sender``;
            ``content.creator`` is not required (v11+).
        creators_have_infinite_power: the creator(s) have infinitely high power
            and cannot appear in ``users`` of the power levels (v12).
        additional_creators: ``content.additional_creators`` of the create
            event names further creators (v12).
        room_id_is_create_event_hash: room IDs are ``!`` + the create event's
            reference hash; the create event has no ``room_id`` and is not
            listed in ``auth_events`` (v12).
        strict_event_byte_limits: field size limits over 255 bytes make the
            event unpersistable (v11+); before, Synapse only enforced 255 code
            points, so such events are stored as rejected instead.
    """

    identifier: str
    stable: bool
    event_format: EventFormat
    state_res: StateResolutionVersion
    enforce_key_validity: bool
    special_case_aliases_auth: bool
    strict_canonical_json: bool
    limit_notifications_power_levels: bool
    redaction_rules: RedactionRules
    redaction_auth_rule: bool
    knock_join_rule: bool
    restricted_join_rule: bool
    knock_restricted_join_rule: bool
    enforce_int_power_levels: bool
    implicit_room_creator: bool
    creators_have_infinite_power: bool
    additional_creators: bool
    room_id_is_create_event_hash: bool
    strict_event_byte_limits: bool

    @property
    def event_id_domain_signature_required(self) -> bool:
        """Rooms v1/v2 also require a signature from the event ID's domain
        (server-server-api "Validating hashes and signatures")."""
        return self.event_format is EventFormat.V1

    @property
    def create_event_in_auth_events(self) -> bool:
        """Whether ``auth_events`` must list the create event (all versions
        before v12; server-server-api "Auth events selection")."""
        return not self.room_id_is_create_event_hash


RoomVersions_V1 = RoomVersion(
    identifier="1",
    stable=True,
    event_format=EventFormat.V1,
    state_res=StateResolutionVersion.V1,
    enforce_key_validity=False,
    special_case_aliases_auth=True,
    strict_canonical_json=False,
    limit_notifications_power_levels=False,
    redaction_rules=RedactionRules.V1,
    redaction_auth_rule=True,
    knock_join_rule=False,
    restricted_join_rule=False,
    knock_restricted_join_rule=False,
    enforce_int_power_levels=False,
    implicit_room_creator=False,
    creators_have_infinite_power=False,
    additional_creators=False,
    room_id_is_create_event_hash=False,
    strict_event_byte_limits=False,
)
RoomVersions_V2 = attrs.evolve(
    RoomVersions_V1, identifier="2", state_res=StateResolutionVersion.V2
)
RoomVersions_V3 = attrs.evolve(
    RoomVersions_V2,
    identifier="3",
    event_format=EventFormat.V2,
    redaction_auth_rule=False,
)
RoomVersions_V4 = attrs.evolve(
    RoomVersions_V3, identifier="4", event_format=EventFormat.V3
)
RoomVersions_V5 = attrs.evolve(
    RoomVersions_V4, identifier="5", enforce_key_validity=True
)
RoomVersions_V6 = attrs.evolve(
    RoomVersions_V5,
    identifier="6",
    special_case_aliases_auth=False,
    strict_canonical_json=True,
    limit_notifications_power_levels=True,
    redaction_rules=RedactionRules.V6,
)
RoomVersions_V7 = attrs.evolve(RoomVersions_V6, identifier="7", knock_join_rule=True)
RoomVersions_V8 = attrs.evolve(
    RoomVersions_V7, identifier="8", restricted_join_rule=True
)
RoomVersions_V9 = attrs.evolve(
    RoomVersions_V8, identifier="9", redaction_rules=RedactionRules.V9
)
RoomVersions_V10 = attrs.evolve(
    RoomVersions_V9,
    identifier="10",
    knock_restricted_join_rule=True,
    enforce_int_power_levels=True,
)
RoomVersions_V11 = attrs.evolve(
    RoomVersions_V10,
    identifier="11",
    implicit_room_creator=True,
    redaction_rules=RedactionRules.V11,
    strict_event_byte_limits=True,
)
RoomVersions_V12 = attrs.evolve(
    RoomVersions_V11,
    identifier="12",
    event_format=EventFormat.V4,
    state_res=StateResolutionVersion.V2_1,
    creators_have_infinite_power=True,
    additional_creators=True,
    room_id_is_create_event_hash=True,
)


KNOWN_ROOM_VERSIONS: Mapping[str, RoomVersion] = {
    v.identifier: v
    for v in (
        RoomVersions_V1,
        RoomVersions_V2,
        RoomVersions_V3,
        RoomVersions_V4,
        RoomVersions_V5,
        RoomVersions_V6,
        RoomVersions_V7,
        RoomVersions_V8,
        RoomVersions_V9,
        RoomVersions_V10,
        RoomVersions_V11,
        RoomVersions_V12,
    )
}

# The spec (rooms/_index.md, "Complete list of room versions") says servers
# SHOULD use room version 12 as the default for new rooms. Synapse still
# defaults to 10; both federate, so we follow the spec here.
DEFAULT_ROOM_VERSION: RoomVersion = RoomVersions_V12


def get_room_version(identifier: str) -> RoomVersion:
    """Look up a room version by its identifier.

    Spec: rooms/_index.md. Raises ``UnsupportedRoomVersionError`` (a
    ValueError) for unknown versions.
    """
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersionError(
            "Unknown room version %r" % (identifier,)
        ) from None


def is_valid_room_version_string(identifier: object) -> bool:
    """Room version grammar (rooms/_index.md "Room version grammar"): 1 to 32
    codepoints of ``a-z``, ``0-9``, ``.`` and ``-``."""
    if not isinstance(identifier, str) or not 1 <= len(identifier) <= 32:
        return False
    return all(c in "abcdefghijklmnopqrstuvwxyz0123456789.-" for c in identifier)
