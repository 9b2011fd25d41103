"""Event authorisation rules, per room version.

Spec: the "Authorisation rules" of rooms/v1.md ... v12.md (fragments
v1-auth-rules, v3-auth-rules, v8-auth-rules, plus the v6, v7, v10, v11, v12
pages), server-server-api "Auth events selection", "Checks performed on
receipt of a PDU", "Validating hashes and signatures on received events", and
client-server-api "Size limits".

Three entry points:

- :func:`check_size_limits` and :func:`check_state_independent_auth_rules`:
  checks made once per received event (size, required signatures, the event's
  own ``auth_events`` list).
- :func:`check_auth_rules`: the rules evaluated against a given auth state
  (the event's auth events, the state before it, or the current state), used
  by event handling and state resolution.

Where Synapse and the spec differ in ways that would make rooms diverge from
Synapse servers, we follow Synapse and say so next to the code.
"""

from __future__ import annotations

from typing import Any, Collection, Iterable, Mapping

import nacl.exceptions

from homeserver.core import ids
from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import AuthError, EventSizeError, SignatureVerifyError
from homeserver.core.events import Event
from homeserver.core.power_levels import (
    PowerLevel,
    get_named_level,
    get_room_creators,
    get_send_level,
    get_user_power_level,
    parse_power_level,
)
from homeserver.core.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    RoomVersion,
)
from homeserver.core.signing import verify_key_from_base64, verify_signed_json

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"

AUTHORISING_USER = "join_authorised_via_users_server"

# client-server-api "Size limits": a PDU is at most 65536 bytes of canonical
# JSON, and several fields at most 255 bytes.
MAX_PDU_SIZE = 65536
MAX_FIELD_SIZE = 255

_LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")

StateMap = Mapping[tuple[str, str], Event]


def _domain(identifier: str) -> str:
    try:
        return ids.get_domain_from_id(identifier)
    except ValueError:
        raise AuthError("Identifier %r has no domain" % (identifier,)) from None


# --- Checks before auth ------------------------------------------------------


def check_size_limits(event: Event) -> None:
    """Refuse events over the size limits.

    Spec: client-server-api "Size limits": the whole PDU (canonical JSON) at
    most 65536 bytes; ``sender``, ``room_id``, ``state_key``, ``type`` and
    ``event_id`` at most 255 bytes. Like Synapse, lengths are checked in
    code points first (never accepted: ``unpersistable``), then in bytes
    (rooms v1-v10: an older Synapse accepted these, so the event must be
    stored as rejected rather than dropped). Raises :class:`EventSizeError`.
    """
    pdu = event.get_pdu_json()
    if len(encode_canonical_json(pdu, allow_floats=True)) > MAX_PDU_SIZE:
        raise EventSizeError("Event is larger than %d bytes" % MAX_PDU_SIZE, unpersistable=True)
    fields = [
        ("sender", event.sender),
        ("room_id", event.room_id),
        ("type", event.type),
        ("event_id", event.event_id),
    ]
    if event.state_key is not None:
        fields.append(("state_key", event.state_key))
    for name, value in fields:
        if len(value) > MAX_FIELD_SIZE:
            raise EventSizeError("'%s' is longer than %d characters" % (name, MAX_FIELD_SIZE), unpersistable=True)
    for name, value in fields:
        if len(value.encode("utf-8", "surrogatepass")) > MAX_FIELD_SIZE:
            raise EventSizeError(
                "'%s' is longer than %d bytes" % (name, MAX_FIELD_SIZE),
                unpersistable=event.room_version.strict_event_byte_limits,
            )


# Synapse drops received events citing more than these many prev / auth
# events (not in the spec): they could force huge state resolutions or fetch
# cascades.
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10


def check_received_event_limits(event: Event) -> None:
    """Refuse received events with more than 20 ``prev_events`` or 10 auth
    events (the v12 implied create event counts), as Synapse's early sanity
    check does. Not a spec rule; raises :class:`EventSizeError`
    (unpersistable)."""
    if len(event.prev_event_ids) > MAX_PREV_EVENTS:
        raise EventSizeError("Too many prev_events (%d)" % len(event.prev_event_ids))
    if len(event.auth_event_ids_with_create) > MAX_AUTH_EVENTS:
        raise EventSizeError("Too many auth_events (%d)" % len(event.auth_event_ids_with_create))


def required_signature_servers(event: Event) -> set[str]:
    """The servers whose signatures an event must carry.

    Spec: server-server-api "Validating hashes and signatures on received
    events": the ``sender``'s server (except third-party invites, which may be
    sent by another server); rooms v1/v2 also the event ID's domain; rooms
    v8+ restricted joins also the server of ``join_authorised_via_users_server``
    (rooms/v8 auth rule 4.2). The caller verifies these signatures with the
    servers' keys.
    """
    servers = set()
    is_3pid_invite = (
        event.type == MEMBER
        and event.content.get("membership") == INVITE
        and "third_party_invite" in event.content
    )
    if not is_3pid_invite:
        servers.add(_domain(event.sender))
    if event.room_version.event_format is EventFormat.V1:
        servers.add(_domain(event.event_id))
    authoriser = _authorising_user(event)
    if authoriser is not None:
        servers.add(_domain(authoriser))
    return servers


def _authorising_user(event: Event) -> str | None:
    # Like Synapse, only joins are considered (the spec's rule 4.2 reads "if
    # content has a join_authorised_via_users_server key" for any membership).
    if (
        event.room_version.restricted_join_rule
        and event.type == MEMBER
        and event.content.get("membership") == JOIN
    ):
        value = event.content.get(AUTHORISING_USER)
        if isinstance(value, str):
            return value
    return None


def check_signature_presence(event: Event) -> None:
    """Refuse events lacking a signature block from a required server (see
    :func:`required_signature_servers`). Cryptographic verification of those
    signatures is done by the caller, which has the servers' keys."""
    signatures = event.signatures
    for server in sorted(required_signature_servers(event)):
        if not signatures.get(server):
            raise AuthError("Event is not signed by %s" % server)


def auth_types_for_event(room_version: RoomVersion, event: Event) -> set[tuple[str, str]]:
    """Which ``(type, state_key)`` state entries authorise ``event``.

    Spec: server-server-api "Auth events selection": none for the create
    event; else the create event (not in room v12), the power levels, the
    sender's membership; for membership events the target's membership, the
    join rules (join, invite, knock), the third-party invite named by the
    token (invites with ``third_party_invite``) and the authorising user's
    membership (restricted joins, rooms v8+).
    """
    if event.type == CREATE:
        return set()
    types = {(POWER_LEVELS, ""), (MEMBER, event.sender)}
    if not room_version.room_id_is_create_event_hash:
        types.add((CREATE, ""))
    if event.type == MEMBER and event.state_key is not None:
        membership = event.content.get("membership")
        types.add((MEMBER, event.state_key))
        if membership in (JOIN, INVITE, KNOCK):
            types.add((JOIN_RULES, ""))
        if membership == INVITE:
            token = _third_party_invite_token(event)
            if token is not None:
                types.add((THIRD_PARTY_INVITE, token))
        if room_version.restricted_join_rule and membership == JOIN:
            authoriser = event.content.get(AUTHORISING_USER)
            if isinstance(authoriser, str):
                types.add((MEMBER, authoriser))
    return types


def _third_party_invite_token(event: Event) -> str | None:
    tpi = event.content.get("third_party_invite")
    if not isinstance(tpi, Mapping):
        return None
    signed = tpi.get("signed")
    if not isinstance(signed, Mapping):
        return None
    token = signed.get("token")
    return token if isinstance(token, str) else None


def check_state_independent_auth_rules(
    room_version: RoomVersion,
    event: Event,
    auth_events: Iterable[Event],
    rejected_event_ids: Collection[str] = frozenset(),
) -> None:
    """The auth rules about the event's own ``auth_events`` list.

    Spec: rooms/v1 rule 2 (v12 rule 3): no duplicate ``(type, state_key)``;
    only entries the auth events selection allows (the create event is
    required before v12 and forbidden in v12); none rejected; all in the same
    room. ``auth_events`` are the events named by ``event.auth_event_ids``.
    Also checks the size limits and required signature blocks. Raises
    :class:`AuthError`.
    """
    check_size_limits(event)
    check_signature_presence(event)
    if event.type == CREATE:
        _check_create(room_version, event)
        return
    by_id = {e.event_id: e for e in auth_events}
    expected = auth_types_for_event(room_version, event)
    seen: dict[tuple[str, str], str] = {}
    for event_id in event.auth_event_ids:
        auth_event = by_id.get(event_id)
        if auth_event is None:
            raise AuthError("Auth event %s is missing" % event_id)
        if auth_event.room_id != event.room_id:
            raise AuthError(
                "Auth event %s is in room %s, not %s"
                % (event_id, auth_event.room_id, event.room_id)
            )
        if auth_event.state_key is None:
            raise AuthError("Auth event %s is not a state event" % event_id)
        key = (auth_event.type, auth_event.state_key)
        if key in seen:
            raise AuthError("Duplicate auth events for %r: %s and %s" % (key, seen[key], event_id))
        if key not in expected:
            raise AuthError("Unexpected auth event %s for %r" % (event_id, key))
        if event_id in rejected_event_ids:
            raise AuthError("Auth event %s was rejected" % event_id)
        seen[key] = event_id
    if room_version.create_event_in_auth_events and (CREATE, "") not in seen:
        raise AuthError("No m.room.create event in auth events")
    if room_version.room_id_is_create_event_hash:
        # rooms/v12 rule 2: the room's create event must not be rejected.
        if "$" + event.room_id[1:] in rejected_event_ids:
            raise AuthError("The room's create event was rejected")


# --- The rules against an auth state ------------------------------------------


def check_auth_rules(room_version: RoomVersion, event: Event, auth_events: StateMap) -> None:
    """Check ``event`` against the authorisation rules of ``room_version``,
    given the auth state ``auth_events`` (``(type, state_key) -> Event``).

    Spec: rooms/vN "Authorisation rules" (all rules but those about the
    event's own ``auth_events`` list, see
    :func:`check_state_independent_auth_rules`). In room version 12 callers
    include the create event under ``("m.room.create", "")`` even though v12
    events do not list it. Returns None when allowed; raises
    :class:`AuthError` with the reason otherwise.
    """
    if event.type == CREATE:
        _check_create(room_version, event)
        return

    create = auth_events.get((CREATE, ""))
    if create is None:
        raise AuthError("No m.room.create event in the auth state")
    if room_version.room_id_is_create_event_hash:
        # rooms/v12 rule 2: the room ID is the create event's ID with '!'.
        if event.room_id[1:] != create.event_id[1:]:
            raise AuthError("Room ID %s does not match the create event" % event.room_id)
    elif create.room_id != event.room_id:
        raise AuthError("The create event in the auth state is for another room")

    sender_domain = _domain(event.sender)
    # rooms/v1 rule 3 (m.federate). Synapse refuses unless m.federate is
    # literally true (absent counts as true), not only when it is false.
    if sender_domain != _domain(create.sender) and not _can_federate(create):
        raise AuthError("This room is not federated (m.federate is false)")

    if event.type == ALIASES and room_version.special_case_aliases_auth:
        # rooms/v1 rule 4.
        if not event.state_key:
            raise AuthError("m.room.aliases must have a non-empty state_key")
        if event.state_key != sender_domain:
            raise AuthError("m.room.aliases state_key must be the sender's server name")
        return

    if event.type == MEMBER:
        _check_membership(room_version, event, auth_events, create)
        return

    # rooms/v1 rule 6: the sender must be joined.
    if _membership_of(event.sender, auth_events) != JOIN:
        raise AuthError("%s is not joined to the room" % event.sender)

    power_levels = auth_events.get((POWER_LEVELS, ""))
    user_level = get_user_power_level(event.sender, power_levels, create, room_version)

    if event.type == THIRD_PARTY_INVITE:
        # rooms/v1 rule 7.
        invite_level = get_named_level(power_levels, "invite", room_version)
        if user_level < invite_level:
            raise AuthError("Sender's power level is below the invite level")
        return

    # rooms/v1 rule 8: the required power level for the event type.
    send_level = get_send_level(event.type, event.state_key, power_levels, room_version)
    if user_level < send_level:
        raise AuthError(
            "Sender's power level %s is below the level %d required for %s"
            % (user_level, send_level, event.type)
        )

    # rooms/v1 rule 9: state keys that look like user IDs are owned by them.
    if event.state_key is not None and event.state_key.startswith("@"):
        if event.state_key != event.sender:
            raise AuthError("Cannot set the state of another user (state_key %s)" % event.state_key)

    if event.type == POWER_LEVELS:
        _check_power_levels(room_version, event, auth_events, create, user_level)

    if event.type == REDACTION and room_version.redaction_auth_rule:
        _check_redaction_v1(room_version, event, power_levels, user_level)


def _can_federate(create: Event) -> bool:
    return create.content.get("m.federate", True) is True


def _check_create(room_version: RoomVersion, event: Event) -> None:
    """rooms/vN rule 1: the m.room.create event."""
    if event.prev_event_ids:
        raise AuthError("The create event has prev_events")
    if room_version.room_id_is_create_event_hash:
        # rooms/v12 rule 1.2.
        if "room_id" in event.pdu:
            raise AuthError("The create event must not have a room_id")
    elif _domain(event.room_id) != _domain(event.sender):
        raise AuthError("The create event's room_id domain does not match its sender")
    # rule 1.3; Synapse treats an absent room_version as "1".
    declared = event.content.get("room_version", "1")
    if not isinstance(declared, str) or declared not in KNOWN_ROOM_VERSIONS:
        raise AuthError("Unknown room version %r in the create event" % (declared,))
    if room_version.additional_creators and "additional_creators" in event.content:
        # rooms/v12 rule 1.4.
        extra = event.content["additional_creators"]
        if not isinstance(extra, (list, tuple)) or not all(
            isinstance(u, str) and ids.is_valid_user_id(u) for u in extra
        ):
            raise AuthError("additional_creators must be a list of user IDs")
    if not room_version.implicit_room_creator and "creator" not in event.content:
        # rooms/v1 rule 1.4 (removed in v11).
        raise AuthError("The create event has no creator")


def _membership_of(user_id: str, auth_events: StateMap) -> str | None:
    member = auth_events.get((MEMBER, user_id))
    if member is None:
        return None
    value = member.content.get("membership")
    return value if isinstance(value, str) else None


def _check_membership(
    room_version: RoomVersion, event: Event, auth_events: StateMap, create: Event
) -> None:
    """rooms/vN rule "If type is m.room.member" (v1 rule 5, v6+ rule 4,
    v12 rule 5)."""
    if event.state_key is None or "membership" not in event.content:
        raise AuthError("Membership events need a state_key and content.membership")
    membership = event.content["membership"]
    target = event.state_key
    sender = event.sender

    if membership == JOIN:
        # "If the only previous event is an m.room.create and the state_key
        # is the creator, allow."
        if len(event.prev_event_ids) == 1 and event.prev_event_ids[0] == create.event_id:
            if room_version.implicit_room_creator:
                creator = create.sender
            else:
                creator = create.content.get("creator")
            if creator == target:
                return

    # Synapse also refuses membership changes of users on other servers in a
    # room with m.federate false (the spec only checks the sender).
    if _domain(target) != _domain(create.sender) and not _can_federate(create):
        raise AuthError("This room is not federated (m.federate is false)")

    power_levels = auth_events.get((POWER_LEVELS, ""))
    sender_membership = _membership_of(sender, auth_events)
    target_membership = _membership_of(target, auth_events)
    join_rules = auth_events.get((JOIN_RULES, ""))
    join_rule = join_rules.content.get("join_rule", INVITE) if join_rules is not None else INVITE
    if not isinstance(join_rule, str):
        join_rule = None  # malformed: allows nothing but what any rule allows
    sender_level = get_user_power_level(sender, power_levels, create, room_version)
    target_level = get_user_power_level(target, power_levels, create, room_version)
    invite_level = get_named_level(power_levels, "invite", room_version)
    ban_level = get_named_level(power_levels, "ban", room_version)

    if membership == JOIN:
        _check_join(
            room_version, event, auth_events, create, power_levels, join_rule,
            target_membership, invite_level,
        )
    elif membership == INVITE:
        if "third_party_invite" in event.content:
            if target_membership == BAN:
                raise AuthError("%s is banned from the room" % target)
            _check_third_party_invite(event, auth_events)
            return
        if sender_membership != JOIN:
            raise AuthError("%s is not joined, so cannot invite" % sender)
        if target_membership in (JOIN, BAN):
            raise AuthError("%s is already %s" % (target, "joined" if target_membership == JOIN else "banned"))
        if sender_level < invite_level:
            raise AuthError("Sender's power level is below the invite level")
    elif membership == LEAVE:
        if sender == target:
            allowed = {INVITE, JOIN}
            if room_version.knock_join_rule:
                allowed.add(KNOCK)
            if sender_membership not in allowed:
                raise AuthError("%s cannot leave: membership is %s" % (sender, sender_membership))
            return
        if sender_membership != JOIN:
            raise AuthError("%s is not joined, so cannot kick or unban" % sender)
        if target_membership == BAN and sender_level < ban_level:
            raise AuthError("Sender's power level is below the ban level, cannot unban")
        kick_level = get_named_level(power_levels, "kick", room_version)
        if sender_level < kick_level or target_level >= sender_level:
            raise AuthError("Sender may not kick %s" % target)
    elif membership == BAN:
        if sender_membership != JOIN:
            raise AuthError("%s is not joined, so cannot ban" % sender)
        if sender_level < ban_level or target_level >= sender_level:
            raise AuthError("Sender may not ban %s" % target)
    elif membership == KNOCK and room_version.knock_join_rule:
        knock_rules = {KNOCK}
        if room_version.knock_restricted_join_rule:
            knock_rules.add("knock_restricted")
        if join_rule not in knock_rules:
            raise AuthError("The join rule %r does not allow knocking" % (join_rule,))
        if sender != target:
            raise AuthError("Cannot knock on behalf of another user")
        if sender_membership in (BAN, INVITE, JOIN):
            raise AuthError("Cannot knock while %s" % sender_membership)
    else:
        raise AuthError("Unknown membership %r" % (membership,))


def _check_join(
    room_version: RoomVersion,
    event: Event,
    auth_events: StateMap,
    create: Event,
    power_levels: Event | None,
    join_rule: Any,
    target_membership: str | None,
    invite_level: int,
) -> None:
    """The ``membership`` = ``join`` rules (after the creator's first join)."""
    if event.sender != event.state_key:
        raise AuthError("Cannot make another user join")
    if target_membership == BAN:
        raise AuthError("%s is banned from the room" % event.sender)
    invite_like = {INVITE}
    if room_version.knock_join_rule:
        invite_like.add(KNOCK)
    restricted_like = set()
    if room_version.restricted_join_rule:
        restricted_like.add("restricted")
    if room_version.knock_restricted_join_rule:
        restricted_like.add("knock_restricted")
    if join_rule in invite_like:
        if target_membership not in (INVITE, JOIN):
            raise AuthError("%s is not invited to this room" % event.sender)
        return
    if join_rule in restricted_like:
        if target_membership in (INVITE, JOIN):
            return
        authoriser = event.content.get(AUTHORISING_USER)
        if not isinstance(authoriser, str):
            raise AuthError("Restricted join without %s" % AUTHORISING_USER)
        if _membership_of(authoriser, auth_events) != JOIN:
            raise AuthError("Authorising user %s is not joined" % authoriser)
        authoriser_level = get_user_power_level(authoriser, power_levels, create, room_version)
        if authoriser_level < invite_level:
            raise AuthError("Authorising user %s cannot invite" % authoriser)
        return
    if join_rule == "public":
        return
    raise AuthError("The join rule %r does not allow joining" % (join_rule,))


def get_third_party_invite_public_keys(invite_event: Event) -> list[str]:
    """The public keys (unpadded base64) of an ``m.room.third_party_invite``
    event: ``content.public_key`` then each ``content.public_keys[].public_key``
    (rooms/v1 rule 5.3.1.7)."""
    keys = []
    content = invite_event.content
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    extra = content.get("public_keys")
    if isinstance(extra, (list, tuple)):
        for entry in extra:
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _check_third_party_invite(event: Event, auth_events: StateMap) -> None:
    """rooms/v1 rule 5.3.1 (third-party invites), after the ban check."""
    tpi = event.content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("third_party_invite has no signed object")
    mxid = signed.get("mxid")
    token = signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed needs mxid and token")
    if mxid != event.state_key:
        raise AuthError("third_party_invite mxid does not match the state_key")
    invite_event = auth_events.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("No m.room.third_party_invite for token %r" % token)
    if invite_event.sender != event.sender:
        raise AuthError("Sender does not match the m.room.third_party_invite sender")
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        raise AuthError("third_party_invite.signed has no signatures")
    # Any signature (by any signer, any ed25519 key ID) matching any public key
    # of the invite (rule 5.3.1.7). Synapse tries only the first ed25519
    # signature per public key; the spec's "any" accepts a superset.
    for public_key in get_third_party_invite_public_keys(invite_event):
        for signer, sig_block in signatures.items():
            if not isinstance(sig_block, Mapping):
                continue
            for key_id in sig_block:
                if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                    continue
                try:
                    verify_key = verify_key_from_base64(key_id, public_key)
                    verify_signed_json(signed, signer, verify_key)
                except (ValueError, SignatureVerifyError, nacl.exceptions.CryptoError):
                    continue
                return
    raise AuthError("No valid signature from the third-party invite's public keys")


def _parse_level_for_auth(value: Any, room_version: RoomVersion, what: str) -> int:
    try:
        return parse_power_level(value, room_version)
    except ValueError as e:
        raise AuthError("Invalid power level for %s: %s" % (what, e)) from None


def _check_power_levels(
    room_version: RoomVersion,
    event: Event,
    auth_events: StateMap,
    create: Event,
    user_level: PowerLevel,
) -> None:
    """rooms/v1 rule 10 (v6+ rule 9, v10 and v12 rule 10): m.room.power_levels."""
    content = event.content
    users = content.get("users", {})
    if not isinstance(users, Mapping):
        raise AuthError("power levels 'users' must be an object")
    for user_id, value in users.items():
        # The spec asks for valid user IDs; Synapse only checks the
        # `@localpart:domain` shape here (invalid data exists in old rooms),
        # and we must accept what it accepts.
        if not (user_id.startswith("@") and ":" in user_id):
            raise AuthError("Invalid user ID %r in power levels" % (user_id,))
        _parse_level_for_auth(value, room_version, user_id)
    if room_version.enforce_int_power_levels:
        # rooms/v10 rules 10.1, 10.2.
        for key in _LEVEL_KEYS:
            if key in content:
                _parse_level_for_auth(content[key], room_version, key)
        for key in ("events", "notifications"):
            if key in content:
                sub = content[key]
                if not isinstance(sub, Mapping):
                    raise AuthError("power levels %r must be an object" % key)
                for name, value in sub.items():
                    _parse_level_for_auth(value, room_version, "%s.%s" % (key, name))
    if room_version.creators_have_infinite_power:
        # rooms/v12 rule 10.4: creators cannot be listed in users.
        for creator in get_room_creators(create, room_version):
            if creator in users:
                raise AuthError("Room creator %s cannot be given a power level" % creator)

    current = auth_events.get((POWER_LEVELS, ""))
    if current is None:
        return
    old = current.content

    def level_at(container: Mapping[str, Any], sub: str | None, key: str) -> int | None:
        """The parsed level at ``container[sub][key]`` (or ``container[key]``),
        None when absent."""
        if sub is not None:
            mapping = container.get(sub, {})
            if not isinstance(mapping, Mapping):
                raise AuthError("power levels %r must be an object" % sub)
        else:
            mapping = container
        if key not in mapping:
            return None
        return _parse_level_for_auth(mapping[key], room_version, key)

    checks: list[tuple[str | None, str]] = [(None, k) for k in _LEVEL_KEYS]
    subs = ["events", "users"]
    if room_version.limit_notifications_power_levels:
        subs.append("notifications")
    for sub in subs:
        old_sub = old.get(sub, {})
        new_sub = content.get(sub, {})
        if not isinstance(old_sub, Mapping) or not isinstance(new_sub, Mapping):
            # Synapse fails on these too (it iterates them as mappings).
            raise AuthError("power levels %r must be an object" % sub)
        names = set(old_sub) | set(new_sub)
        checks.extend((sub, name) for name in sorted(names))

    for sub, key in checks:
        old_level = level_at(old, sub, key)
        new_level = level_at(content, sub, key)
        # Like Synapse, compare the parsed values: "50" -> 50 is no change.
        if old_level == new_level:
            continue
        if sub == "users" and key != event.sender:
            # rule 10.6 (v12 10.9): others' entries at or above our level
            # cannot be changed or removed.
            if old_level is not None and old_level >= user_level:
                raise AuthError("Cannot change the level of %s, at or above your own" % key)
        if old_level is not None and old_level > user_level:
            raise AuthError("Cannot change %s from a level above your own" % _describe(sub, key))
        if new_level is not None and new_level > user_level:
            raise AuthError("Cannot set %s above your own level" % _describe(sub, key))


def _describe(sub: str | None, key: str) -> str:
    return key if sub is None else "%s[%r]" % (sub, key)


def _check_redaction_v1(
    room_version: RoomVersion, event: Event, power_levels: Event | None, user_level: PowerLevel
) -> None:
    """rooms/v1 rule 11 (rooms v1, v2 only): redactions need the redact level
    or the redacted event's ID to have the redaction's event ID domain."""
    if user_level >= get_named_level(power_levels, "redact", room_version):
        return
    if not isinstance(event.redacts, str):
        # Synapse allows a redaction that names no event (it redacts
        # nothing); the spec does not say.
        return
    try:
        if ids.get_domain_from_id(event.redacts) == ids.get_domain_from_id(event.event_id):
            return
    except ValueError:
        pass
    raise AuthError("Sender may not redact events from other servers")


def redaction_allowed(
    room_version: RoomVersion,
    redaction: Event,
    redacted: Event,
    power_levels: Event | None,
    create: Event | None,
) -> bool:
    """Whether a redaction should be applied to the event it redacts.

    Spec: fragment v3-handling-redactions (rooms v3+): apply if the
    redaction's sender has the redact level, or the two senders share a
    server. Rooms v1/v2 check this in the auth rules (rule 11).
    """
    level = get_user_power_level(redaction.sender, power_levels, create, room_version)
    if level >= get_named_level(power_levels, "redact", room_version):
        return True
    return _domain(redaction.sender) == _domain(redacted.sender)

