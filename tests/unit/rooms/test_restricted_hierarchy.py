"""Pure parts of restricted joins (choosing the authoriser) and space hierarchies (child order, tokens)."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.trial import unittest

from homeserver.core.events import Event
from homeserver.core.room_versions import get_room_version
from homeserver.errors import MatrixError
from homeserver.handlers.rooms import restricted
from homeserver.handlers.rooms.hierarchy import decode_token, encode_token, order_children, valid_order

V10 = get_room_version("10")
V7 = get_room_version("7")


def _event(etype: str, state_key: str, content: dict[str, Any], sender: str = "@alice:hs") -> Event:
    return Event.from_pdu({
        "room_id": "!r:hs", "type": etype, "state_key": state_key, "sender": sender, "content": content,
        "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"},
        "signatures": {}, "origin": "hs",
    }, V10)


def _state(rule: str = "restricted", members: Optional[dict[str, str]] = None, users: Optional[dict[str, int]] = None,
           allow: Any = None) -> dict[tuple[str, str], Event]:
    state = {
        ("m.room.create", ""): _event("m.room.create", "", {"room_version": "10", "creator": "@alice:hs"}),
        ("m.room.power_levels", ""): _event("m.room.power_levels", "", {"users": users or {"@alice:hs": 100}, "invite": 50}),
        ("m.room.join_rules", ""): _event("m.room.join_rules", "", {
            "join_rule": rule, "allow": allow if allow is not None else [{"type": "m.room_membership", "room_id": "!space:hs"}]}),
    }
    for user, membership in (members or {"@alice:hs": "join"}).items():
        state[("m.room.member", user)] = _event("m.room.member", user, {"membership": membership}, sender=user)
    return state


def _lookups(memberships: dict[tuple[str, str], str], known: set[str]) -> tuple[Any, Any]:
    async def membership_of(room_id: str, user_id: str) -> Optional[str]:
        return memberships.get((room_id, user_id))

    async def server_in_room(room_id: str) -> bool:
        return room_id in known

    return membership_of, server_in_room


class ChooseAuthoriserTests(unittest.TestCase):
    """restricted.choose_authoriser."""

    def choose(self, state: Any, user: str = "@bob:other", version: Any = V10,
               memberships: Any = None, known: Any = ("!space:hs",)) -> "defer.Deferred[Optional[str]]":
        m, k = _lookups(memberships if memberships is not None else {("!space:hs", "@bob:other"): "join"}, set(known))
        return defer.ensureDeferred(restricted.choose_authoriser(version, state, user, "hs", m, k))

    def failure_of(self, d: Any) -> MatrixError:
        return self.failureResultOf(d, MatrixError).value

    def test_picks_the_most_powerful_local_member_who_may_invite(self) -> None:
        """A member of the allowed room gets the local joined user with the highest level ≥ invite."""
        state = _state(members={"@alice:hs": "join", "@carol:hs": "join", "@dan:remote": "join", "@eve:hs": "leave"},
                       users={"@alice:hs": 60, "@carol:hs": 100, "@dan:remote": 100, "@eve:hs": 100})
        self.assertEqual(self.successResultOf(self.choose(state)), "@carol:hs")

    def test_no_authoriser_needed(self) -> None:
        """Not restricted, or the user is invited or joined already: None."""
        self.assertIsNone(self.successResultOf(self.choose(_state(rule="public"))))
        invited = _state(members={"@alice:hs": "join", "@bob:other": "invite"})
        self.assertIsNone(self.successResultOf(self.choose(invited)))
        # Room version 7 has no restricted rule: nothing to authorise (the auth rules refuse the join).
        self.assertIsNone(self.successResultOf(self.choose(_state(), version=V7)))

    def test_refusals(self) -> None:
        """Not in the allowed room: 403; allowed room unknown here: M_UNABLE_TO_AUTHORISE_JOIN; nobody
        local may invite: M_UNABLE_TO_GRANT_JOIN; malformed conditions count as none."""
        error = self.failure_of(self.choose(_state(), memberships={}))
        self.assertEqual((error.code, error.errcode), (403, "M_FORBIDDEN"))
        error = self.failure_of(self.choose(_state(), known=()))
        self.assertEqual((error.code, error.errcode), (400, "M_UNABLE_TO_AUTHORISE_JOIN"))
        error = self.failure_of(self.choose(_state(users={"@alice:hs": 10})))
        self.assertEqual((error.code, error.errcode), (400, "M_UNABLE_TO_GRANT_JOIN"))
        error = self.failure_of(self.choose(_state(allow=[{"type": "m.room_membership"}, "x"])))
        self.assertEqual((error.code, error.errcode), (403, "M_FORBIDDEN"))


class HierarchyPureTests(unittest.TestCase):
    """Child order and pagination tokens."""

    def child(self, room: str, ts: int = 0, **content: Any) -> dict[str, Any]:
        return {"type": "m.space.child", "state_key": room, "content": {"via": ["hs"], **content}, "sender": "@a:hs",
                "origin_server_ts": ts}

    def test_order(self) -> None:
        """Valid ``order`` first (lexicographic), then origin_server_ts, then room ID; no via: not a child."""
        children = [self.child("!d:hs", ts=1), self.child("!c:hs", ts=5, order="b"), self.child("!a:hs", ts=1),
                    self.child("!b:hs", ts=0, order="a"), self.child("!e:hs", ts=0, order="\x07bad"),
                    {**self.child("!f:hs"), "content": {"via": []}}, self.child("not-a-room")]
        self.assertEqual([c["state_key"] for c in order_children(children)], ["!b:hs", "!c:hs", "!e:hs", "!a:hs", "!d:hs"])
        self.assertEqual(valid_order("z" * 50), "z" * 50)
        self.assertIsNone(valid_order("z" * 51))
        self.assertIsNone(valid_order(3))

    def test_tokens_round_trip_and_refuse_garbage(self) -> None:
        """A token carries the walk's parameters; anything else is 400 M_INVALID_PARAM."""
        self.assertEqual(decode_token(encode_token("!r:hs", True, 3, 7)), ("!r:hs", True, 3, 7))
        for bad in ("", "garbage!", encode_token("!r:hs", True, 3, 7)[:-3], "WyJ4IiwxLDIsM10"):
            with self.assertRaises(MatrixError) as caught:
                decode_token(bad)
            self.assertEqual(caught.exception.errcode, "M_INVALID_PARAM")
