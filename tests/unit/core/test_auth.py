"""Table-driven tests of the authorisation rules for every room version.

Each scenario builds a room with :class:`RoomFixture`, builds one event, and
states which room versions allow it. A test method is generated for every
(scenario, room version) pair, so a failure names both.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import given as _given
from hypothesis import settings as _settings
from hypothesis import strategies as _st
from twisted.trial.unittest import SynchronousTestCase
from unpaddedbase64 import encode_base64

from homeserver.core.auth import (
    auth_types_for_event,
    check_auth_rules,
    check_received_event_limits,
    check_size_limits,
    check_state_independent_auth_rules,
    redaction_allowed,
    required_signature_servers,
)
from homeserver.core.errors import AuthError, EventSizeError, InvalidEventError
from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.core.signing import sign_json, signing_key_from_seed

from tests.unit.core.room_fixture import ALICE, BOB, CAROL, MOD, RoomFixture

ALLOW = "allow"
REFUSE = "refuse"
INVALID = "invalid"  # the event is not even a valid PDU for the room version

Scenario = Callable[[RoomFixture], Event]
Expectation = Callable[[RoomVersion], str]


def always(outcome: str) -> Expectation:
    return lambda rv: outcome


def when(flag: Callable[[RoomVersion], bool], yes: str, no: str) -> Expectation:
    return lambda rv: yes if flag(rv) else no


def _num(rv: RoomVersion) -> int:
    return int(rv.identifier)


# ---------------------------------------------------------------------------
# Scenarios. Each docstring names the rule it exercises (rooms/v1 numbering
# unless stated otherwise).


def create_ok(r: RoomFixture) -> Event:
    """1: a well-formed create event is allowed."""
    return r.create()


def create_with_prev_events(r: RoomFixture) -> Event:
    """1.1: a create event with prev_events is refused."""
    other = RoomFixture(r.room_version)
    first = other.create()
    r.room_id = None if r.room_version.room_id_is_create_event_hash else "!room:a.example"
    c = {"room_version": r.room_version.identifier, "creator": ALICE}
    return r.build("m.room.create", ALICE, c, state_key="", prev=[first])


def create_room_id_other_domain(r: RoomFixture) -> Event:
    """1.2: the create event's room_id domain must be the sender's (v12: no
    room_id at all)."""
    c = {"room_version": r.room_version.identifier, "creator": ALICE}
    return r.build("m.room.create", ALICE, c, state_key="", extra={"room_id": "!room:b.example"})


def create_with_room_id(r: RoomFixture) -> Event:
    """v12 1.2: a create event carrying a room_id is refused (same-domain
    room_id is fine before v12)."""
    c = {"room_version": r.room_version.identifier, "creator": ALICE}
    return r.build("m.room.create", ALICE, c, state_key="", extra={"room_id": "!room:a.example"})


def create_unknown_version(r: RoomFixture) -> Event:
    """1.3: an unknown content.room_version is refused."""
    return r.create({"room_version": "999"})


def create_non_string_version(r: RoomFixture) -> Event:
    """1.3: content.room_version must be a known version string."""
    return r.create({"room_version": 5})


def create_without_creator(r: RoomFixture) -> Event:
    """1.4 (v1-v10): content.creator is required; v11 removed the rule."""
    r.room_id = None if r.room_version.room_id_is_create_event_hash else "!room:a.example"
    return r.build("m.room.create", ALICE, {"room_version": r.room_version.identifier}, state_key="")


def create_bad_additional_creators(r: RoomFixture) -> Event:
    """v12 1.4: additional_creators must be a list of valid user IDs."""
    return r.create({"additional_creators": ["not-a-user"]})


def create_additional_creators_not_list(r: RoomFixture) -> Event:
    """v12 1.4: additional_creators must be an array."""
    return r.create({"additional_creators": BOB})


def create_good_additional_creators(r: RoomFixture) -> Event:
    """v12 1.4: valid additional_creators are allowed."""
    return r.create({"additional_creators": [BOB, CAROL]})


def no_create_in_auth_state(r: RoomFixture) -> Event:
    """v1 2.4 / state: no create event in the auth state refuses."""
    r.standard_room()
    event = r.build("m.room.message", ALICE, {"body": "hi"})
    del r.state[("m.room.create", "")]
    return event


def create_for_other_room(r: RoomFixture) -> Event:
    """v12 rule 2 (and room consistency before): the create event in the auth
    state must be this room's."""
    r.standard_room()
    event = r.build("m.room.message", ALICE, {"body": "hi"})
    other = RoomFixture(r.room_version, creator="@zed:a.example")
    other.room_id = "!other:a.example"
    if r.room_version.room_id_is_create_event_hash:
        other_create = other.create({"additional_creators": [ALICE]})
    else:
        other_create = other.build(
            "m.room.create", ALICE,
            {"room_version": r.room_version.identifier, "creator": ALICE},
            state_key="", extra={"room_id": "!other:a.example"},
        )
    r.state[("m.room.create", "")] = other_create
    return event


def federate_false_remote_sender(r: RoomFixture) -> Event:
    """3: with m.federate false, a sender from another server is refused."""
    r.create({"m.federate": False})
    r.member(ALICE, "join")
    r.join_rules("public")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def federate_false_local_sender(r: RoomFixture) -> Event:
    """3: with m.federate false, local senders are unaffected."""
    r.create({"m.federate": False})
    r.member(ALICE, "join")
    return r.build("m.room.message", ALICE, {"body": "hi"})


def federate_non_boolean(r: RoomFixture) -> Event:
    """3 (Synapse): m.federate must be literally true for remote senders."""
    r.create({"m.federate": "yes"})
    r.member(ALICE, "join")
    r.join_rules("public")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def federate_false_remote_target(r: RoomFixture) -> Event:
    """3 (Synapse): inviting a user of another server into an unfederated
    room is refused too."""
    r.create({"m.federate": False})
    r.member(ALICE, "join")
    return r.build("m.room.member", ALICE, {"membership": "invite"}, state_key=BOB)


def aliases_from_own_server_not_joined(r: RoomFixture) -> Event:
    """v1 4.2-4.3: m.room.aliases for one's own server is allowed even when
    not joined; from v6 it is an ordinary state event (sender must be in)."""
    r.standard_room()
    return r.build("m.room.aliases", BOB, {"aliases": ["#x:b.example"]}, state_key="b.example")


def aliases_other_server(r: RoomFixture) -> Event:
    """v1 4.2: m.room.aliases state_key must be the sender's domain (v1-v5);
    v6+ only needs the state level."""
    r.standard_room()
    return r.build("m.room.aliases", ALICE, {"aliases": []}, state_key="b.example")


def aliases_empty_state_key(r: RoomFixture) -> Event:
    """v1 4.1: m.room.aliases needs a (non-empty) state_key (v1-v5)."""
    r.standard_room()
    return r.build("m.room.aliases", ALICE, {"aliases": []}, state_key="")


def member_without_membership(r: RoomFixture) -> Event:
    """5.1: membership events need content.membership."""
    r.standard_room()
    return r.build("m.room.member", BOB, {}, state_key=BOB)


def member_without_state_key(r: RoomFixture) -> Event:
    """5.1: membership events need a state_key."""
    r.standard_room()
    return r.build("m.room.member", BOB, {"membership": "join"})


def member_unknown_membership(r: RoomFixture) -> Event:
    """5.x: an unknown membership is refused."""
    r.standard_room()
    return r.build("m.room.member", BOB, {"membership": "dance"}, state_key=BOB)


def creator_first_join(r: RoomFixture) -> Event:
    """5.2.1: the creator's join right after the create event is allowed."""
    r.create()
    return r.build("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)


def content_creator_first_join(r: RoomFixture) -> Event:
    """5.2.1: before v11 the creator is content.creator; from v11 the sender."""
    r.room_id = None if r.room_version.room_id_is_create_event_hash else "!room:a.example"
    r.build(
        "m.room.create", ALICE,
        {"room_version": r.room_version.identifier, "creator": BOB},
        state_key="", apply=True,
    )
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def sender_first_join_with_other_creator(r: RoomFixture) -> Event:
    """5.2.1: from v11 the create event's sender may join first even if
    content.creator names someone else."""
    r.room_id = None if r.room_version.room_id_is_create_event_hash else "!room:a.example"
    r.build(
        "m.room.create", ALICE,
        {"room_version": r.room_version.identifier, "creator": BOB},
        state_key="", apply=True,
    )
    return r.build("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)


def additional_creator_first_join(r: RoomFixture) -> Event:
    """v12 5.3.1: only the create event's sender gets the first-join
    shortcut, not additional creators."""
    r.room_id = None if r.room_version.room_id_is_create_event_hash else "!room:a.example"
    r.create({"additional_creators": [BOB]})
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_for_someone_else(r: RoomFixture) -> Event:
    """5.2.2: the sender must be the joining user."""
    r.standard_room()
    return r.build("m.room.member", ALICE, {"membership": "join"}, state_key=BOB)


def join_while_banned(r: RoomFixture) -> Event:
    """5.2.3: banned users cannot join."""
    r.standard_room()
    r.member(BOB, "ban", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_public(r: RoomFixture) -> Event:
    """5.2.5 (v8+ 4.3.6): anyone may join a public room."""
    r.standard_room("public")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_invite_only_uninvited(r: RoomFixture) -> Event:
    """5.2.4: invite-only rooms need an invite."""
    r.standard_room("invite")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_invite_only_invited(r: RoomFixture) -> Event:
    """5.2.4: an invited user may join an invite-only room."""
    r.standard_room("invite")
    r.member(BOB, "invite", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_invite_only_rejoin(r: RoomFixture) -> Event:
    """5.2.4: a joined user may re-join (e.g. change displayname)."""
    r.standard_room("invite")
    r.member(BOB, "join")
    return r.build("m.room.member", BOB, {"membership": "join", "displayname": "B"}, state_key=BOB)


def join_no_join_rules(r: RoomFixture) -> Event:
    """5.2: with no m.room.join_rules event the rule is "invite"."""
    r.create()
    r.member(ALICE, "join")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_knock_rule_invited(r: RoomFixture) -> Event:
    """v7 4.3.4: a knock room lets invited users join (join rule unknown
    before v7)."""
    r.standard_room("knock")
    r.member(BOB, "invite", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_knock_rule_uninvited(r: RoomFixture) -> Event:
    """v7 4.3.4: a knock room refuses uninvited joins."""
    r.standard_room("knock")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_unknown_rule(r: RoomFixture) -> Event:
    """5.2.6: unknown join rules refuse joins."""
    r.standard_room("private")
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def _restricted(r: RoomFixture, rule: str = "restricted", **pl: Any) -> None:
    r.standard_room(rule)
    if pl:
        levels = dict(r.state[("m.room.power_levels", "")].content)
        levels.update(pl)
        r.power_levels(levels)
    r.member(MOD, "join")


def join_restricted_invited(r: RoomFixture) -> Event:
    """v8 4.3.5.1: invited users may join restricted rooms."""
    _restricted(r)
    r.member(BOB, "invite", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_restricted_authorised(r: RoomFixture) -> Event:
    """v8 4.3.5.3: a join authorised by a joined user who can invite."""
    _restricted(r)
    return r.build(
        "m.room.member", BOB,
        {"membership": "join", "join_authorised_via_users_server": MOD}, state_key=BOB,
    )


def join_restricted_no_authoriser(r: RoomFixture) -> Event:
    """v8 4.3.5.2: a restricted join needs join_authorised_via_users_server."""
    _restricted(r)
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def join_restricted_authoriser_not_joined(r: RoomFixture) -> Event:
    """v8 4.3.5.2: the authorising user must be joined."""
    _restricted(r)
    return r.build(
        "m.room.member", BOB,
        {"membership": "join", "join_authorised_via_users_server": CAROL}, state_key=BOB,
    )


def join_restricted_authoriser_cannot_invite(r: RoomFixture) -> Event:
    """v8 4.3.5.2: the authorising user must have the invite level."""
    _restricted(r, invite=60)
    return r.build(
        "m.room.member", BOB,
        {"membership": "join", "join_authorised_via_users_server": MOD}, state_key=BOB,
    )


def join_knock_restricted_authorised(r: RoomFixture) -> Event:
    """v10 4.3.5: knock_restricted rooms accept authorised joins."""
    _restricted(r, "knock_restricted")
    return r.build(
        "m.room.member", BOB,
        {"membership": "join", "join_authorised_via_users_server": MOD}, state_key=BOB,
    )


def join_knock_restricted_invited(r: RoomFixture) -> Event:
    """v10 4.3.5.1: knock_restricted rooms accept invited joins."""
    _restricted(r, "knock_restricted")
    r.member(BOB, "invite", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)


def invite_ok(r: RoomFixture) -> Event:
    """5.3.4: a joined user at the invite level may invite."""
    r.standard_room("invite")
    return r.build("m.room.member", ALICE, {"membership": "invite"}, state_key=BOB)


def invite_sender_not_joined(r: RoomFixture) -> Event:
    """5.3.2: the inviter must be joined."""
    r.standard_room("invite")
    return r.build("m.room.member", CAROL, {"membership": "invite"}, state_key=BOB)


def invite_target_joined(r: RoomFixture) -> Event:
    """5.3.3: cannot invite a joined user."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.member", ALICE, {"membership": "invite"}, state_key=BOB)


def invite_target_banned(r: RoomFixture) -> Event:
    """5.3.3: cannot invite a banned user."""
    r.standard_room()
    r.member(BOB, "ban", sender=ALICE)
    return r.build("m.room.member", ALICE, {"membership": "invite"}, state_key=BOB)


def invite_below_invite_level(r: RoomFixture) -> Event:
    """5.3.5: the inviter needs the invite level."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["invite"] = 50
    r.power_levels(levels)
    r.member(BOB, "join")
    return r.build("m.room.member", BOB, {"membership": "invite"}, state_key=CAROL)


# Third-party invites: the identity server's key signs {mxid, token}.
_TPI_KEY = signing_key_from_seed("0", b"\x01" * 32)
_TPI_PUBLIC = encode_base64(bytes(_TPI_KEY.verify_key))
_OTHER_KEY = signing_key_from_seed("0", b"\x02" * 32)


def _tpi_room(r: RoomFixture, public_key_field: str = "public_key") -> None:
    r.standard_room("invite")
    if public_key_field == "public_key":
        content = {"public_key": _TPI_PUBLIC, "display_name": "b...", "key_validity_url": "https://id/"}
    else:
        content = {
            "public_key": encode_base64(bytes(_OTHER_KEY.verify_key)),
            "public_keys": [{"public_key": _TPI_PUBLIC}],
            "display_name": "b...",
            "key_validity_url": "https://id/",
        }
    r.build("m.room.third_party_invite", ALICE, content, state_key="tok", apply=True)


def _tpi_invite(r: RoomFixture, signed: Any, sender: str = ALICE, target: str = BOB) -> Event:
    return r.build(
        "m.room.member", sender,
        {"membership": "invite", "third_party_invite": {"display_name": "b...", "signed": signed}},
        state_key=target,
    )


def _signed(mxid: str = BOB, token: str = "tok", key: Any = _TPI_KEY) -> dict[str, Any]:
    return sign_json({"mxid": mxid, "token": token}, "id.example", key)


def tpi_valid(r: RoomFixture) -> Event:
    """5.3.1.7: a signature matching the invite's public_key allows."""
    _tpi_room(r)
    return _tpi_invite(r, _signed())


def tpi_valid_public_keys_list(r: RoomFixture) -> Event:
    """5.3.1.7.2: keys in content.public_keys also count."""
    _tpi_room(r, "public_keys")
    return _tpi_invite(r, _signed())


def tpi_bad_signature(r: RoomFixture) -> Event:
    """5.3.1.8: a signature by an unknown key refuses."""
    _tpi_room(r)
    return _tpi_invite(r, _signed(key=_OTHER_KEY))


def tpi_target_banned(r: RoomFixture) -> Event:
    """5.3.1.1: banned targets cannot be invited by third-party invite."""
    _tpi_room(r)
    r.member(BOB, "ban", sender=ALICE)
    return _tpi_invite(r, _signed())


def tpi_no_signed(r: RoomFixture) -> Event:
    """5.3.1.2: third_party_invite needs signed."""
    _tpi_room(r)
    return r.build(
        "m.room.member", ALICE,
        {"membership": "invite", "third_party_invite": {"display_name": "x"}}, state_key=BOB,
    )


def tpi_no_token(r: RoomFixture) -> Event:
    """5.3.1.3: signed needs mxid and token."""
    _tpi_room(r)
    return _tpi_invite(r, sign_json({"mxid": BOB}, "id.example", _TPI_KEY))


def tpi_mxid_mismatch(r: RoomFixture) -> Event:
    """5.3.1.4: signed.mxid must be the state_key."""
    _tpi_room(r)
    return _tpi_invite(r, _signed(mxid=CAROL))


def tpi_no_invite_event(r: RoomFixture) -> Event:
    """5.3.1.5: there must be an m.room.third_party_invite for the token."""
    _tpi_room(r)
    return _tpi_invite(r, _signed(token="other"))


def tpi_sender_mismatch(r: RoomFixture) -> Event:
    """5.3.1.6: the sender must be the third-party invite's sender."""
    _tpi_room(r)
    r.member(MOD, "join")
    return _tpi_invite(r, _signed(), sender=MOD)


def tpi_tampered(r: RoomFixture) -> Event:
    """5.3.1.7: a signature over different content does not match."""
    _tpi_room(r)
    signed = _signed()
    signed["extra"] = "tampered"
    return _tpi_invite(r, signed)


def leave_self_joined(r: RoomFixture) -> Event:
    """5.4.1: a joined user may leave."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB)


def leave_self_invited(r: RoomFixture) -> Event:
    """5.4.1: an invited user may reject the invite."""
    r.standard_room()
    r.member(BOB, "invite", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB)


def leave_self_knocked(r: RoomFixture) -> Event:
    """v7 4.5.1: a knocking user may rescind the knock (not before v7)."""
    r.standard_room("knock")
    r.member(BOB, "knock")
    return r.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB)


def leave_self_never_joined(r: RoomFixture) -> Event:
    """5.4.1: a user with no membership cannot leave."""
    r.standard_room()
    return r.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB)


def leave_self_banned(r: RoomFixture) -> Event:
    """5.4.1: a banned user cannot unban themself by leaving."""
    r.standard_room()
    r.member(BOB, "ban", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB)


def kick_ok(r: RoomFixture) -> Event:
    """5.4.4: the kick level and a higher level than the target allow."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.member", ALICE, {"membership": "leave"}, state_key=BOB)


def kick_higher_user(r: RoomFixture) -> Event:
    """5.4.4: cannot kick someone at or above one's level."""
    r.standard_room()
    r.member(MOD, "join")
    return r.build("m.room.member", MOD, {"membership": "leave"}, state_key=ALICE)


def kick_below_kick_level(r: RoomFixture) -> Event:
    """5.4.4: kicking needs the kick level."""
    r.standard_room()
    r.member(BOB, "join")
    r.member(CAROL, "join")
    return r.build("m.room.member", BOB, {"membership": "leave"}, state_key=CAROL)


def kick_by_non_member(r: RoomFixture) -> Event:
    """5.4.2: the kicker must be joined."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.member", MOD, {"membership": "leave"}, state_key=BOB)


def unban_ok(r: RoomFixture) -> Event:
    """5.4.3-5.4.4: with ban and kick levels one may unban."""
    r.standard_room()
    r.member(BOB, "ban", sender=ALICE)
    return r.build("m.room.member", ALICE, {"membership": "leave"}, state_key=BOB)


def unban_below_ban_level(r: RoomFixture) -> Event:
    """5.4.3: unbanning needs the ban level."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["ban"] = 75
    r.power_levels(levels)
    r.member(MOD, "join")
    r.member(BOB, "ban", sender=ALICE)
    return r.build("m.room.member", MOD, {"membership": "leave"}, state_key=BOB)


def ban_ok(r: RoomFixture) -> Event:
    """5.5.2: the ban level and a higher level than the target allow."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.member", ALICE, {"membership": "ban"}, state_key=BOB)


def ban_non_member_target(r: RoomFixture) -> Event:
    """5.5.2: users not in the room can be banned pre-emptively."""
    r.standard_room()
    return r.build("m.room.member", ALICE, {"membership": "ban"}, state_key=CAROL)


def ban_higher_user(r: RoomFixture) -> Event:
    """5.5.2: cannot ban someone at or above one's level."""
    r.standard_room()
    r.member(MOD, "join")
    return r.build("m.room.member", MOD, {"membership": "ban"}, state_key=ALICE)


def ban_below_ban_level(r: RoomFixture) -> Event:
    """5.5.2: banning needs the ban level."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.member", BOB, {"membership": "ban"}, state_key=CAROL)


def ban_by_non_member(r: RoomFixture) -> Event:
    """5.5.1: the banner must be joined."""
    r.standard_room()
    return r.build("m.room.member", MOD, {"membership": "ban"}, state_key=CAROL)


def ban_additional_creator(r: RoomFixture) -> Event:
    """v12: an additional creator has infinite power and cannot be banned;
    before v12 the field means nothing and the target is an ordinary user."""
    r.create({"additional_creators": [BOB]})
    r.member(ALICE, "join")
    levels = {MOD: 100}
    if not r.room_version.creators_have_infinite_power:
        levels[ALICE] = 100
    r.power_levels({"users": levels})
    r.join_rules("public")
    r.member(MOD, "join")
    r.member(BOB, "join")
    return r.build("m.room.member", MOD, {"membership": "ban"}, state_key=BOB)


def knock_ok(r: RoomFixture) -> Event:
    """v7 4.7: knocking on a knock room is allowed (unknown before v7)."""
    r.standard_room("knock")
    return r.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB)


def knock_on_knock_restricted(r: RoomFixture) -> Event:
    """v10 4.7.1: knock_restricted rooms accept knocks."""
    r.standard_room("knock_restricted")
    return r.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB)


def knock_on_public(r: RoomFixture) -> Event:
    """v7 4.7.1: knocking needs the knock join rule."""
    r.standard_room("public")
    return r.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB)


def knock_for_other(r: RoomFixture) -> Event:
    """v7 4.7.2: the sender must be the knocking user."""
    r.standard_room("knock")
    return r.build("m.room.member", ALICE, {"membership": "knock"}, state_key=BOB)


def knock_while_invited(r: RoomFixture) -> Event:
    """v7 4.7.3-4: invited users cannot knock."""
    r.standard_room("knock")
    r.member(BOB, "invite", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB)


def knock_while_banned(r: RoomFixture) -> Event:
    """v7 4.7.3-4: banned users cannot knock."""
    r.standard_room("knock")
    r.member(BOB, "ban", sender=ALICE)
    return r.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB)


def knock_while_joined(r: RoomFixture) -> Event:
    """v7 4.7.3-4: joined users cannot knock."""
    r.standard_room("knock")
    r.member(BOB, "join")
    return r.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB)


def message_not_joined(r: RoomFixture) -> Event:
    """6: senders of non-membership events must be joined."""
    r.standard_room()
    return r.build("m.room.message", BOB, {"body": "hi"})


def message_after_leaving(r: RoomFixture) -> Event:
    """6: a user who left cannot send."""
    r.standard_room()
    r.member(BOB, "join")
    r.member(BOB, "leave")
    return r.build("m.room.message", BOB, {"body": "hi"})


def message_joined(r: RoomFixture) -> Event:
    """8: a joined user at events_default may send messages."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.message", BOB, {"body": "hi"})


def message_below_events_default(r: RoomFixture) -> Event:
    """8: the required level is events_default for messages."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["events_default"] = 10
    r.power_levels(levels)
    r.member(BOB, "join")
    return r.build("m.room.message", BOB, {"body": "hi"})


def state_below_state_default(r: RoomFixture) -> Event:
    """8: the required level is state_default (50) for state events."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.name", BOB, {"name": "x"}, state_key="")


def state_with_events_override(r: RoomFixture) -> Event:
    """8: an events entry overrides state_default."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["events"] = {"m.room.name": 0}
    r.power_levels(levels)
    r.member(BOB, "join")
    return r.build("m.room.name", BOB, {"name": "x"}, state_key="")


def state_without_power_levels(r: RoomFixture) -> Event:
    """8 (Synapse): with no power levels event, state needs 50; only the
    creator (100) may send it."""
    r.create()
    r.member(ALICE, "join")
    r.join_rules("public")
    r.member(BOB, "join")
    return r.build("m.room.topic", BOB, {"topic": "x"}, state_key="")


def creator_state_without_power_levels(r: RoomFixture) -> Event:
    """8: with no power levels event the creator has 100."""
    r.create()
    r.member(ALICE, "join")
    return r.build("m.room.topic", ALICE, {"topic": "x"}, state_key="")


def state_key_other_user(r: RoomFixture) -> Event:
    """9: a state_key starting with '@' must be the sender."""
    r.standard_room()
    return r.build("org.example.user_state", ALICE, {}, state_key=BOB)


def state_key_own_user(r: RoomFixture) -> Event:
    """9: one's own user ID as state_key is allowed."""
    r.standard_room()
    return r.build("org.example.user_state", ALICE, {}, state_key=ALICE)


def tpi_event_at_invite_level(r: RoomFixture) -> Event:
    """7.1: m.room.third_party_invite needs only the invite level."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.third_party_invite", BOB, {"public_key": _TPI_PUBLIC}, state_key="t")


def tpi_event_below_invite_level(r: RoomFixture) -> Event:
    """7.1: m.room.third_party_invite below the invite level is refused."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["invite"] = 50
    r.power_levels(levels)
    r.member(BOB, "join")
    return r.build("m.room.third_party_invite", BOB, {"public_key": _TPI_PUBLIC}, state_key="t")


def _pl(r: RoomFixture, sender: str, **changes: Any) -> Event:
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels.update(changes)
    return r.build("m.room.power_levels", sender, levels, state_key="")


def _users(r: RoomFixture, **extra: Any) -> dict[str, Any]:
    users = dict(r.state[("m.room.power_levels", "")].content["users"])
    users.update(extra)
    return users


def pl_first_event_anything(r: RoomFixture) -> Event:
    """10.2: the first power levels event may set any levels."""
    r.create()
    r.member(ALICE, "join")
    users = {BOB: 1000}
    if not r.room_version.creators_have_infinite_power:
        users[ALICE] = 100
    return r.build("m.room.power_levels", ALICE, {"users": users, "ban": 1000}, state_key="")


def pl_invalid_user_id(r: RoomFixture) -> Event:
    """10.1: users keys must be user IDs."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{"not-a-user": 10}))


def pl_odd_but_shaped_user_id(r: RoomFixture) -> Event:
    """10.1 (Synapse): users keys only need the @localpart:domain shape."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{"@odd:not a domain": 10}))


def pl_string_user_level(r: RoomFixture) -> Event:
    """10.1 (v1-v9 stringy power levels; v10 10.3 integers only)."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{BOB: "50"}))


def pl_bad_string_user_level(r: RoomFixture) -> Event:
    """10.1: a string that is not an integer is refused."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{BOB: "fifty"}))


def pl_float_user_level(r: RoomFixture) -> Event:
    """v1-floaty-power-levels: floats are truncated before v6; v6+ events
    cannot contain floats at all (strict canonical JSON)."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{BOB: 10.9}))


def pl_string_ban_level(r: RoomFixture) -> Event:
    """v10 10.1: named levels must be integers."""
    r.standard_room()
    return _pl(r, ALICE, ban="50")


def pl_string_events_level(r: RoomFixture) -> Event:
    """v10 10.2: events values must be integers."""
    r.standard_room()
    return _pl(r, ALICE, events={"m.room.name": "50"})


def pl_notifications_not_object(r: RoomFixture) -> Event:
    """v10 10.2: notifications must be an object of integers (v6-v9 check it
    through the notifications change rule; v1-v5 ignore it)."""
    r.standard_room()
    return _pl(r, ALICE, notifications="room")


def pl_creator_in_users(r: RoomFixture) -> Event:
    """v12 10.4: creators cannot appear in users."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{ALICE: 100}))


def pl_additional_creator_in_users(r: RoomFixture) -> Event:
    """v12 10.4: additional creators cannot appear in users either."""
    r.create({"additional_creators": [BOB]})
    r.member(ALICE, "join")
    users = {MOD: 50}
    if not r.room_version.creators_have_infinite_power:
        users[ALICE] = 100
    r.power_levels({"users": users})
    return _pl(r, ALICE, users=dict(users, **{BOB: 50}))


def pl_raise_above_own(r: RoomFixture) -> Event:
    """10.3.7 (v12 10.10): cannot give a level above one's own."""
    r.standard_room()
    r.member(MOD, "join")
    return _pl(r, MOD, users=_users(r, **{BOB: 60}))


def pl_raise_to_own(r: RoomFixture) -> Event:
    """10.3.7: one may give one's own level."""
    r.standard_room()
    r.member(MOD, "join")
    return _pl(r, MOD, users=_users(r, **{BOB: 50}))


def pl_demote_peer(r: RoomFixture) -> Event:
    """10.3.6 (v12 10.9): cannot change a user at one's own level."""
    r.standard_room(users={"@peer:a.example": 50})
    r.member(MOD, "join")
    return _pl(r, MOD, users=_users(r, **{"@peer:a.example": 0}))


def pl_demote_self(r: RoomFixture) -> Event:
    """10.3.6: one's own entry may be lowered."""
    r.standard_room()
    r.member(MOD, "join")
    return _pl(r, MOD, users=_users(r, **{MOD: 10}))


def pl_remove_higher_user(r: RoomFixture) -> Event:
    """10.3.6: removing a higher user's entry is a change too."""
    r.standard_room(users={"@boss:a.example": 75})
    r.member(MOD, "join")
    users = _users(r)
    del users["@boss:a.example"]
    return _pl(r, MOD, users=users)


def pl_lower_named_level(r: RoomFixture) -> Event:
    """10.3.3: named levels within one's own level may change."""
    r.standard_room()
    r.member(MOD, "join")
    return _pl(r, MOD, ban=40)


def pl_change_named_level_from_above(r: RoomFixture) -> Event:
    """10.3.3.1: cannot change a named level currently above one's own."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["kick"] = 60
    r.power_levels(levels)
    r.member(MOD, "join")
    return _pl(r, MOD, kick=40)


def pl_set_named_level_above(r: RoomFixture) -> Event:
    """10.3.3.2: cannot set a named level above one's own."""
    r.standard_room()
    r.member(MOD, "join")
    return _pl(r, MOD, redact=60)


def pl_add_events_above(r: RoomFixture) -> Event:
    """10.3.5: cannot add an events entry above one's level."""
    r.standard_room()
    r.member(MOD, "join")
    return _pl(r, MOD, events={"m.room.name": 60})


def pl_remove_events_above(r: RoomFixture) -> Event:
    """10.3.4: cannot remove an events entry above one's level."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["events"] = {"m.room.name": 60}
    r.power_levels(levels)
    r.member(MOD, "join")
    return _pl(r, MOD, events={})


def pl_change_events_within(r: RoomFixture) -> Event:
    """10.3.4-5: events entries within one's level may change."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["events"] = {"m.room.name": 40}
    r.power_levels(levels)
    r.member(MOD, "join")
    return _pl(r, MOD, events={"m.room.name": 30})


def pl_change_notifications_from_above(r: RoomFixture) -> Event:
    """v6 9.4: notifications entries above one's level cannot change (not
    checked before v6)."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    levels["notifications"] = {"room": 60}
    r.power_levels(levels)
    r.member(MOD, "join")
    return _pl(r, MOD, notifications={"room": 40})


def pl_creator_sets_huge_level(r: RoomFixture) -> Event:
    """v12: creators have infinite power and may set any level; before v12
    the creator has 100."""
    r.standard_room()
    return _pl(r, ALICE, users=_users(r, **{BOB: 1000}))


def pl_equal_string_is_not_a_change(r: RoomFixture) -> Event:
    """10.3 (Synapse): "75" -> 75 is no change, so a user below 75 may keep
    it (only meaningful where strings are allowed)."""
    r.standard_room()
    levels = dict(r.state[("m.room.power_levels", "")].content)
    if not r.room_version.enforce_int_power_levels:
        levels["kick"] = "75"
    else:
        levels["kick"] = 75
    r.power_levels(levels)
    r.member(MOD, "join")
    return _pl(r, MOD, kick=75, ban=40)


def redaction_by_redactor(r: RoomFixture) -> Event:
    """v1 11.1: the redact level allows any redaction."""
    r.standard_room()
    r.member(BOB, "join")
    target = r.build("m.room.message", BOB, {"body": "x"}, apply=True)
    return _redaction(r, ALICE, target)


def redaction_same_server(r: RoomFixture) -> Event:
    """v1 11.2: below the redact level, same-domain event IDs allow (v3+: the
    auth rules do not look at redactions)."""
    r.standard_room()
    r.member(BOB, "join")
    target = r.build("m.room.message", BOB, {"body": "x"}, apply=True)
    return _redaction(r, BOB, target)


def redaction_other_server(r: RoomFixture) -> Event:
    """v1 11.3: below the redact level, other servers' events cannot be
    redacted (v3+: allowed by auth, checked when applying)."""
    r.standard_room()
    r.member(BOB, "join")
    target = r.build("m.room.message", ALICE, {"body": "x"}, apply=True)
    return _redaction(r, BOB, target)


def redaction_without_target(r: RoomFixture) -> Event:
    """v1 11 (Synapse): a redaction naming no event redacts nothing and is
    allowed."""
    r.standard_room()
    r.member(BOB, "join")
    return r.build("m.room.redaction", BOB, {})


def _redaction(r: RoomFixture, sender: str, target: Event) -> Event:
    from homeserver.core.room_versions import RedactionRules

    if r.room_version.redaction_rules is RedactionRules.V11:
        return r.build("m.room.redaction", sender, {"redacts": target.event_id})
    return r.build("m.room.redaction", sender, {}, extra={"redacts": target.event_id})


def v1(rv: RoomVersion) -> bool:
    return rv.identifier in ("1", "2")


SCENARIOS: list[tuple[Scenario, Expectation]] = [
    (create_ok, always(ALLOW)),
    (create_with_prev_events, always(REFUSE)),
    (create_room_id_other_domain, always(REFUSE)),
    (create_with_room_id, when(lambda rv: rv.room_id_is_create_event_hash, REFUSE, ALLOW)),
    (create_unknown_version, always(REFUSE)),
    (create_non_string_version, always(REFUSE)),
    (create_without_creator, when(lambda rv: rv.implicit_room_creator, ALLOW, REFUSE)),
    (create_bad_additional_creators, when(lambda rv: rv.additional_creators, REFUSE, ALLOW)),
    (create_additional_creators_not_list, when(lambda rv: rv.additional_creators, REFUSE, ALLOW)),
    (create_good_additional_creators, always(ALLOW)),
    (no_create_in_auth_state, always(REFUSE)),
    (create_for_other_room, always(REFUSE)),
    (federate_false_remote_sender, always(REFUSE)),
    (federate_false_local_sender, always(ALLOW)),
    (federate_non_boolean, always(REFUSE)),
    (federate_false_remote_target, always(REFUSE)),
    (aliases_from_own_server_not_joined, when(lambda rv: rv.special_case_aliases_auth, ALLOW, REFUSE)),
    (aliases_other_server, when(lambda rv: rv.special_case_aliases_auth, REFUSE, ALLOW)),
    (aliases_empty_state_key, when(lambda rv: rv.special_case_aliases_auth, REFUSE, ALLOW)),
    (member_without_membership, always(REFUSE)),
    (member_without_state_key, always(REFUSE)),
    (member_unknown_membership, always(REFUSE)),
    (creator_first_join, always(ALLOW)),
    (content_creator_first_join, when(lambda rv: rv.implicit_room_creator, REFUSE, ALLOW)),
    (sender_first_join_with_other_creator, when(lambda rv: rv.implicit_room_creator, ALLOW, REFUSE)),
    (additional_creator_first_join, always(REFUSE)),
    (join_for_someone_else, always(REFUSE)),
    (join_while_banned, always(REFUSE)),
    (join_public, always(ALLOW)),
    (join_invite_only_uninvited, always(REFUSE)),
    (join_invite_only_invited, always(ALLOW)),
    (join_invite_only_rejoin, always(ALLOW)),
    (join_no_join_rules, always(REFUSE)),
    (join_knock_rule_invited, when(lambda rv: rv.knock_join_rule, ALLOW, REFUSE)),
    (join_knock_rule_uninvited, always(REFUSE)),
    (join_unknown_rule, always(REFUSE)),
    (join_restricted_invited, when(lambda rv: rv.restricted_join_rule, ALLOW, REFUSE)),
    (join_restricted_authorised, when(lambda rv: rv.restricted_join_rule, ALLOW, REFUSE)),
    (join_restricted_no_authoriser, always(REFUSE)),
    (join_restricted_authoriser_not_joined, always(REFUSE)),
    (join_restricted_authoriser_cannot_invite, always(REFUSE)),
    (join_knock_restricted_authorised, when(lambda rv: rv.knock_restricted_join_rule, ALLOW, REFUSE)),
    (join_knock_restricted_invited, when(lambda rv: rv.knock_restricted_join_rule, ALLOW, REFUSE)),
    (invite_ok, always(ALLOW)),
    (invite_sender_not_joined, always(REFUSE)),
    (invite_target_joined, always(REFUSE)),
    (invite_target_banned, always(REFUSE)),
    (invite_below_invite_level, always(REFUSE)),
    (tpi_valid, always(ALLOW)),
    (tpi_valid_public_keys_list, always(ALLOW)),
    (tpi_bad_signature, always(REFUSE)),
    (tpi_target_banned, always(REFUSE)),
    (tpi_no_signed, always(REFUSE)),
    (tpi_no_token, always(REFUSE)),
    (tpi_mxid_mismatch, always(REFUSE)),
    (tpi_no_invite_event, always(REFUSE)),
    (tpi_sender_mismatch, always(REFUSE)),
    (tpi_tampered, always(REFUSE)),
    (leave_self_joined, always(ALLOW)),
    (leave_self_invited, always(ALLOW)),
    (leave_self_knocked, when(lambda rv: rv.knock_join_rule, ALLOW, REFUSE)),
    (leave_self_never_joined, always(REFUSE)),
    (leave_self_banned, always(REFUSE)),
    (kick_ok, always(ALLOW)),
    (kick_higher_user, always(REFUSE)),
    (kick_below_kick_level, always(REFUSE)),
    (kick_by_non_member, always(REFUSE)),
    (unban_ok, always(ALLOW)),
    (unban_below_ban_level, always(REFUSE)),
    (ban_ok, always(ALLOW)),
    (ban_non_member_target, always(ALLOW)),
    (ban_higher_user, always(REFUSE)),
    (ban_below_ban_level, always(REFUSE)),
    (ban_by_non_member, always(REFUSE)),
    (ban_additional_creator, when(lambda rv: rv.creators_have_infinite_power, REFUSE, ALLOW)),
    (knock_ok, when(lambda rv: rv.knock_join_rule, ALLOW, REFUSE)),
    (knock_on_knock_restricted, when(lambda rv: rv.knock_restricted_join_rule, ALLOW, REFUSE)),
    (knock_on_public, always(REFUSE)),
    (knock_for_other, always(REFUSE)),
    (knock_while_invited, always(REFUSE)),
    (knock_while_banned, always(REFUSE)),
    (knock_while_joined, always(REFUSE)),
    (message_not_joined, always(REFUSE)),
    (message_after_leaving, always(REFUSE)),
    (message_joined, always(ALLOW)),
    (message_below_events_default, always(REFUSE)),
    (state_below_state_default, always(REFUSE)),
    (state_with_events_override, always(ALLOW)),
    (state_without_power_levels, always(REFUSE)),
    (creator_state_without_power_levels, always(ALLOW)),
    (state_key_other_user, always(REFUSE)),
    (state_key_own_user, always(ALLOW)),
    (tpi_event_at_invite_level, always(ALLOW)),
    (tpi_event_below_invite_level, always(REFUSE)),
    (pl_first_event_anything, always(ALLOW)),
    (pl_invalid_user_id, always(REFUSE)),
    (pl_odd_but_shaped_user_id, always(ALLOW)),
    (pl_string_user_level, when(lambda rv: rv.enforce_int_power_levels, REFUSE, ALLOW)),
    (pl_bad_string_user_level, always(REFUSE)),
    (pl_float_user_level, when(lambda rv: rv.strict_canonical_json, INVALID, ALLOW)),
    (pl_string_ban_level, when(lambda rv: rv.enforce_int_power_levels, REFUSE, ALLOW)),
    (pl_string_events_level, when(lambda rv: rv.enforce_int_power_levels, REFUSE, ALLOW)),
    (pl_notifications_not_object, when(lambda rv: rv.limit_notifications_power_levels, REFUSE, ALLOW)),
    (pl_creator_in_users, when(lambda rv: rv.creators_have_infinite_power, REFUSE, ALLOW)),
    (pl_additional_creator_in_users, when(lambda rv: rv.creators_have_infinite_power, REFUSE, ALLOW)),
    (pl_raise_above_own, always(REFUSE)),
    (pl_raise_to_own, always(ALLOW)),
    (pl_demote_peer, always(REFUSE)),
    (pl_demote_self, always(ALLOW)),
    (pl_remove_higher_user, always(REFUSE)),
    (pl_lower_named_level, always(ALLOW)),
    (pl_change_named_level_from_above, always(REFUSE)),
    (pl_set_named_level_above, always(REFUSE)),
    (pl_add_events_above, always(REFUSE)),
    (pl_remove_events_above, always(REFUSE)),
    (pl_change_events_within, always(ALLOW)),
    (pl_change_notifications_from_above, when(lambda rv: rv.limit_notifications_power_levels, REFUSE, ALLOW)),
    (pl_creator_sets_huge_level, when(lambda rv: rv.creators_have_infinite_power, ALLOW, REFUSE)),
    (pl_equal_string_is_not_a_change, always(ALLOW)),
    (redaction_by_redactor, always(ALLOW)),
    (redaction_same_server, always(ALLOW)),
    (redaction_other_server, when(v1, REFUSE, ALLOW)),
    (redaction_without_target, always(ALLOW)),
]


def _outcome(scenario: Scenario, rv: RoomVersion) -> tuple[str, str]:
    room = RoomFixture(rv)
    try:
        event = scenario(room)
    except InvalidEventError as e:
        return INVALID, str(e)
    try:
        check_auth_rules(rv, event, room.auth_state())
    except AuthError as e:
        return REFUSE, e.reason
    return ALLOW, ""


class AuthRulesTable(SynchronousTestCase):
    """Every scenario against every room version (methods generated below)."""


def _make_test(scenario: Scenario, expectation: Expectation, rv: RoomVersion) -> Callable[..., None]:
    def test(self: SynchronousTestCase) -> None:
        expected = expectation(rv)
        actual, reason = _outcome(scenario, rv)
        self.assertEqual(
            actual, expected,
            "%s in room v%s: expected %s, got %s (%s)"
            % (scenario.__name__, rv.identifier, expected, actual, reason),
        )

    test.__doc__ = "v%s: %s expected %s." % (
        rv.identifier, (scenario.__doc__ or scenario.__name__).strip(), expectation(rv)
    )
    return test


for _scenario, _expectation in SCENARIOS:
    for _rv in KNOWN_ROOM_VERSIONS.values():
        setattr(
            AuthRulesTable,
            "test_%s_v%s" % (_scenario.__name__, _rv.identifier),
            _make_test(_scenario, _expectation, _rv),
        )


class AuthEventsSelectionTests(SynchronousTestCase):
    """server-server-api "Auth events selection" and the rules on an event's
    own auth_events list."""

    def test_selection_for_join(self) -> None:
        """A join selects create (not in v12), power levels, the sender's and
        target's membership, join rules, and the authorising user (v8+)."""
        for rv in KNOWN_ROOM_VERSIONS.values():
            room = RoomFixture(rv)
            room.standard_room()
            event = room.build(
                "m.room.member", BOB,
                {"membership": "join", "join_authorised_via_users_server": MOD}, state_key=BOB,
            )
            expected = {("m.room.power_levels", ""), ("m.room.member", BOB), ("m.room.join_rules", "")}
            if not rv.room_id_is_create_event_hash:
                expected.add(("m.room.create", ""))
            if rv.restricted_join_rule:
                expected.add(("m.room.member", MOD))
            self.assertEqual(auth_types_for_event(rv, event), expected, rv.identifier)

    def test_selection_for_message_and_create(self) -> None:
        """Messages select create, power levels and the sender's membership;
        the create event selects nothing."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        room = RoomFixture(rv)
        create = room.create()
        message = room.build("m.room.message", ALICE, {})
        self.assertEqual(auth_types_for_event(rv, create), set())
        self.assertEqual(
            auth_types_for_event(rv, message),
            {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", ALICE)},
        )

    def test_selection_for_third_party_invite(self) -> None:
        """A third-party invite selects the m.room.third_party_invite by token;
        leaves do not select the join rules."""
        rv = KNOWN_ROOM_VERSIONS["6"]
        room = RoomFixture(rv)
        room.standard_room()
        invite = _tpi_invite(room, _signed())
        self.assertIn(("m.room.third_party_invite", "tok"), auth_types_for_event(rv, invite))
        leave = room.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB)
        self.assertNotIn(("m.room.join_rules", ""), auth_types_for_event(rv, leave))

    def _standard(self, rv: RoomVersion) -> RoomFixture:
        room = RoomFixture(rv)
        room.standard_room()
        return room

    def test_well_formed_auth_events_pass(self) -> None:
        """A fixture-built event passes the state-independent checks."""
        for rv in KNOWN_ROOM_VERSIONS.values():
            room = self._standard(rv)
            event = room.build("m.room.message", ALICE, {"body": "x"}, extra={"signatures": {"a.example": {"ed25519:x": "sig"}}})
            check_state_independent_auth_rules(rv, event, room.events.values())

    def test_duplicate_auth_events(self) -> None:
        """v1 2.1: two auth events for the same (type, state_key) refuse."""
        rv = KNOWN_ROOM_VERSIONS["11"]
        room = self._standard(rv)
        old_pl = room.state[("m.room.power_levels", "")]
        room.power_levels({"users": {ALICE: 100}})
        new_pl = room.state[("m.room.power_levels", "")]
        auth = [room.state[("m.room.create", "")], room.state[("m.room.member", ALICE)], old_pl, new_pl]
        event = room.build("m.room.message", ALICE, {}, auth=auth, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        with self.assertRaises(AuthError) as cm:
            check_state_independent_auth_rules(rv, event, room.events.values())
        self.assertIn("Duplicate", cm.exception.reason)

    def test_unexpected_auth_event(self) -> None:
        """v1 2.2: auth events outside the selection refuse."""
        rv = KNOWN_ROOM_VERSIONS["11"]
        room = self._standard(rv)
        auth = [room.state[k] for k in [("m.room.create", ""), ("m.room.member", ALICE), ("m.room.join_rules", "")]]
        event = room.build("m.room.message", ALICE, {}, auth=auth, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        self.assertRaises(AuthError, check_state_independent_auth_rules, rv, event, room.events.values())

    def test_rejected_auth_event(self) -> None:
        """v1 2.3: a rejected auth event refuses."""
        rv = KNOWN_ROOM_VERSIONS["11"]
        room = self._standard(rv)
        event = room.build("m.room.message", ALICE, {}, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        pl_id = room.state[("m.room.power_levels", "")].event_id
        self.assertRaises(
            AuthError, check_state_independent_auth_rules, rv, event, room.events.values(), {pl_id}
        )

    def test_missing_create_event(self) -> None:
        """v1 2.4: before v12 the create event must be listed."""
        rv = KNOWN_ROOM_VERSIONS["11"]
        room = self._standard(rv)
        auth = [room.state[("m.room.member", ALICE)], room.state[("m.room.power_levels", "")]]
        event = room.build("m.room.message", ALICE, {}, auth=auth, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        self.assertRaises(AuthError, check_state_independent_auth_rules, rv, event, room.events.values())

    def test_v12_create_event_listed(self) -> None:
        """v12 3.2: the create event must not be listed."""
        rv = KNOWN_ROOM_VERSIONS["12"]
        room = self._standard(rv)
        auth = [room.state[k] for k in [("m.room.create", ""), ("m.room.member", ALICE), ("m.room.power_levels", "")]]
        event = room.build("m.room.message", ALICE, {}, auth=auth, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        self.assertRaises(AuthError, check_state_independent_auth_rules, rv, event, room.events.values())

    def test_v12_rejected_create_event(self) -> None:
        """v12 rule 2: events in a room whose create event was rejected are
        refused."""
        rv = KNOWN_ROOM_VERSIONS["12"]
        room = self._standard(rv)
        event = room.build("m.room.message", ALICE, {}, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        create_id = room.state[("m.room.create", "")].event_id
        check_state_independent_auth_rules(rv, event, room.events.values())
        self.assertRaises(
            AuthError, check_state_independent_auth_rules, rv, event, room.events.values(), {create_id}
        )

    def test_auth_event_from_other_room(self) -> None:
        """v1 2.5: auth events must be in the same room."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        room = self._standard(rv)
        other = RoomFixture(rv, creator="@zed:other.example")
        other.create()
        other_member = other.member(ALICE, "join")
        auth = [room.state[("m.room.create", "")], other_member, room.state[("m.room.power_levels", "")]]
        event = room.build("m.room.message", ALICE, {}, auth=auth, extra={"signatures": {"a.example": {"ed25519:x": "s"}}})
        self.assertRaises(
            AuthError, check_state_independent_auth_rules, rv, event,
            list(room.events.values()) + [other_member],
        )

    def test_missing_signature_block(self) -> None:
        """Events must be signed by the sender's server (rooms v1/v2 also by
        the event ID's domain; v8+ restricted joins by the authoriser's)."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        room = self._standard(rv)
        event = room.build("m.room.message", ALICE, {}, extra={"signatures": {}})
        self.assertRaises(AuthError, check_state_independent_auth_rules, rv, event, room.events.values())
        join = room.build(
            "m.room.member", BOB,
            {"membership": "join", "join_authorised_via_users_server": MOD}, state_key=BOB,
        )
        self.assertEqual(required_signature_servers(join), {"b.example", "a.example"})
        rv1 = KNOWN_ROOM_VERSIONS["1"]
        room1 = self._standard(rv1)
        ev1 = room1.build("m.room.message", ALICE, {}, extra={"event_id": "$x:c.example"})
        self.assertEqual(required_signature_servers(ev1), {"a.example", "c.example"})
        tpi = _tpi_invite(room, _signed())
        self.assertEqual(required_signature_servers(tpi), set())


class SizeLimitTests(SynchronousTestCase):
    """client-server-api "Size limits" applied before auth."""

    def test_pdu_too_large(self) -> None:
        """A PDU over 65536 bytes is refused and unpersistable."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        room = RoomFixture(rv)
        room.standard_room()
        event = room.build("m.room.message", ALICE, {"body": "x" * 70000})
        with self.assertRaises(EventSizeError) as cm:
            check_size_limits(event)
        self.assertTrue(cm.exception.unpersistable)
        check_size_limits(room.build("m.room.message", ALICE, {"body": "x" * 60000}))

    def test_field_codepoints(self) -> None:
        """Fields over 255 code points are always unpersistable."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        room = RoomFixture(rv)
        room.standard_room()
        event = room.build("m.room.topic", ALICE, {}, state_key="k" * 256)
        with self.assertRaises(EventSizeError) as cm:
            check_size_limits(event)
        self.assertTrue(cm.exception.unpersistable)
        check_size_limits(room.build("m.room.topic", ALICE, {}, state_key="k" * 255))

    def test_field_bytes_lenient_before_v11(self) -> None:
        """Fields over 255 bytes are refused; only from v11 are they
        unpersistable (Synapse's lenient byte limits)."""
        for identifier, unpersistable in (("10", False), ("11", True)):
            rv = KNOWN_ROOM_VERSIONS[identifier]
            room = RoomFixture(rv)
            room.standard_room()
            event = room.build("m." + "\u00e9" * 200, ALICE, {})
            with self.assertRaises(EventSizeError) as cm:
                check_size_limits(event)
            self.assertEqual(cm.exception.unpersistable, unpersistable)


class ReceivedEventLimitTests(SynchronousTestCase):
    """Synapse's early sanity check on prev / auth event counts."""

    def test_limits(self) -> None:
        """20 prev events and 10 auth events pass; one more is refused."""
        rv = KNOWN_ROOM_VERSIONS["10"]
        room = RoomFixture(rv)
        room.standard_room()
        fillers = [room.build("m.room.message", ALICE, {"n": i}) for i in range(21)]
        check_received_event_limits(room.build("m.room.message", ALICE, {}, prev=fillers[:20]))
        self.assertRaises(
            EventSizeError, check_received_event_limits,
            room.build("m.room.message", ALICE, {}, prev=fillers),
        )
        check_received_event_limits(room.build("m.room.message", ALICE, {}, auth=fillers[:10]))
        self.assertRaises(
            EventSizeError, check_received_event_limits,
            room.build("m.room.message", ALICE, {}, auth=fillers[:11]),
        )

    def test_v12_counts_implied_create(self) -> None:
        """In v12 the implied create event counts towards the 10."""
        rv = KNOWN_ROOM_VERSIONS["12"]
        room = RoomFixture(rv)
        room.standard_room()
        fillers = [room.build("m.room.message", ALICE, {"n": i}) for i in range(10)]
        check_received_event_limits(room.build("m.room.message", ALICE, {}, auth=fillers[:9]))
        self.assertRaises(
            EventSizeError, check_received_event_limits,
            room.build("m.room.message", ALICE, {}, auth=fillers),
        )


class RedactionApplicationTests(SynchronousTestCase):
    """fragment v3-handling-redactions: when a redaction is applied."""

    def test_redaction_allowed(self) -> None:
        """The redact level or the same server allows; others do not."""
        rv = KNOWN_ROOM_VERSIONS["11"]
        room = RoomFixture(rv)
        room.standard_room()
        pl = room.state[("m.room.power_levels", "")]
        create = room.state[("m.room.create", "")]
        bob_msg = room.build("m.room.message", BOB, {})
        alice_msg = room.build("m.room.message", ALICE, {})
        by_alice = room.build("m.room.redaction", ALICE, {"redacts": bob_msg.event_id})
        by_bob = room.build("m.room.redaction", BOB, {"redacts": alice_msg.event_id})
        by_bob_own = room.build("m.room.redaction", "@bob2:b.example", {"redacts": bob_msg.event_id})
        self.assertTrue(redaction_allowed(rv, by_alice, bob_msg, pl, create))
        self.assertFalse(redaction_allowed(rv, by_bob, alice_msg, pl, create))
        self.assertTrue(redaction_allowed(rv, by_bob_own, bob_msg, pl, create))


class RoomHistoryTests(SynchronousTestCase):
    """A realistic room history authorises against each event's own auth
    events in every room version (the receipt-time check path)."""

    def _history(self, room: RoomFixture) -> list[Event]:
        events = []
        rv = room.room_version
        events.append(room.create())
        events.append(room.member(ALICE, "join"))
        users = {MOD: 50}
        if not rv.creators_have_infinite_power:
            users[ALICE] = 100
        events.append(room.power_levels({"users": users}))
        events.append(room.join_rules("invite"))
        events.append(room.member(BOB, "invite", sender=ALICE))
        events.append(room.member(BOB, "join"))
        events.append(room.member(MOD, "invite", sender=ALICE))
        events.append(room.member(MOD, "join"))
        events.append(room.build("m.room.name", MOD, {"name": "n"}, state_key="", apply=True))
        events.append(room.build("m.room.message", BOB, {"body": "hi"}, apply=True))
        events.append(room.member(CAROL, "invite", sender=MOD))
        events.append(room.member(CAROL, "leave"))
        events.append(room.member(BOB, "ban", sender=MOD))
        events.append(room.member(BOB, "leave", sender=ALICE))
        events.append(room.build("m.room.power_levels", ALICE, {"users": dict(users, **{CAROL: 10})}, state_key="", apply=True))
        return events

    def test_history_passes_in_every_version(self) -> None:
        """Every event passes the state-independent checks and the auth rules
        against its own auth events."""
        for rv in KNOWN_ROOM_VERSIONS.values():
            room = RoomFixture(rv)
            history = self._history(room)
            by_id = {e.event_id: e for e in history}
            create = history[0]
            for event in history:
                auth = [by_id[i] for i in event.auth_event_ids]
                state = {(e.type, e.state_key): e for e in auth}
                state.setdefault(("m.room.create", ""), create)
                check_auth_rules(rv, event, state)
                self.assertLessEqual(
                    {(e.type, e.state_key) for e in auth}, auth_types_for_event(rv, event)
                )


_LEVEL_NAMES = ["users", "events", "notifications", "ban", "kick", "invite", "redact",
                "users_default", "events_default", "state_default"]

_JSON = _st.recursive(
    _st.none() | _st.booleans() | _st.integers(-(2**53) + 1, 2**53 - 1) | _st.text(max_size=8)
    | _st.sampled_from(["join", "invite", "leave", "ban", "knock", "public", "restricted",
                        "knock_restricted", ALICE, BOB, MOD, "tok"]),
    lambda c: _st.lists(c, max_size=3) | _st.dictionaries(
        _st.sampled_from(["membership", "join_rule", "users", "events", "notifications", "ban",
                          "kick", "invite", "users_default", "third_party_invite", "signed",
                          "token", "mxid", "signatures", "join_authorised_via_users_server",
                          "additional_creators", "m.federate", "public_key", "public_keys", "x"]),
        c, max_size=4),
    max_leaves=12,
)



class MalformedContentTests(SynchronousTestCase):
    """Arbitrary JSON in the content of the event or of the auth state never
    crashes the rules: the outcome is allow or AuthError."""

    def _check(self, version: str, event_type: str, content: dict, state_key: str | None,
               join_rule: Any, old_levels: Any, sender: str = BOB) -> None:
        rv = KNOWN_ROOM_VERSIONS[version]
        room = RoomFixture(rv)
        room.standard_room()
        room.member(BOB, "join")
        room.build("m.room.join_rules", ALICE, {"join_rule": join_rule}, state_key="", apply=True)
        if isinstance(old_levels, dict):
            room.build("m.room.power_levels", ALICE, old_levels, state_key="", apply=True)
        try:
            event = room.build(event_type, sender, content, state_key=state_key)
        except InvalidEventError:
            return
        auth_types_for_event(rv, event)
        try:
            check_auth_rules(rv, event, room.auth_state())
        except AuthError:
            pass

    @_settings(max_examples=300, deadline=None)
    @_given(
        _st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)),
        _st.sampled_from(["join", "invite", "leave", "ban", "knock"]),
        _st.dictionaries(_st.sampled_from(["third_party_invite", "join_authorised_via_users_server", "x"]), _JSON, max_size=2),
        _st.sampled_from([ALICE, BOB, CAROL, MOD]),
        _JSON,
        _st.dictionaries(_st.sampled_from(_LEVEL_NAMES), _JSON, max_size=4),
    )
    def test_membership(self, version: str, membership: str, extra: dict, target: str, join_rule: Any, levels: dict) -> None:
        """Membership events with malformed content or state."""
        self._check(version, "m.room.member", dict(extra, membership=membership), target, join_rule, levels)

    @_settings(max_examples=300, deadline=None)
    @_given(
        _st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)),
        _st.dictionaries(_st.sampled_from(_LEVEL_NAMES), _JSON, max_size=5),
        _st.dictionaries(_st.sampled_from(_LEVEL_NAMES), _JSON, max_size=5),
    )
    def test_power_levels(self, version: str, new: dict, old: dict) -> None:
        """Power levels events (sent by the creator, so that the change
        rules run) replacing malformed power levels."""
        if not KNOWN_ROOM_VERSIONS[version].creators_have_infinite_power:
            old = dict(old)
            users = old.get("users")
            old["users"] = dict(users, **{ALICE: 100}) if isinstance(users, dict) else {ALICE: 100}
            old.pop("state_default", None)
            old.pop("events", None)
        self._check(version, "m.room.power_levels", new, "", "public", old, sender=ALICE)

    @_settings(max_examples=200, deadline=None)
    @_given(
        _st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)),
        _st.sampled_from(["m.room.create", "m.room.message", "m.room.redaction", "m.room.aliases",
                          "m.room.third_party_invite", "m.room.join_rules"]),
        _st.dictionaries(_st.sampled_from(["room_version", "creator", "additional_creators", "m.federate",
                                           "redacts", "join_rule", "x"]), _JSON, max_size=3),
        _st.dictionaries(_st.sampled_from(_LEVEL_NAMES), _JSON, max_size=4),
    )
    def test_other_events(self, version: str, event_type: str, content: dict, levels: dict) -> None:
        """Other event types with malformed content."""
        state_key = None if event_type in ("m.room.message", "m.room.redaction") else ""
        self._check(version, event_type, content, state_key, "public", levels)
