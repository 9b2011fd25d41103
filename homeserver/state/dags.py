"""Synthetic room DAGs for state resolution property tests and benchmarks.

:func:`random_room` grows a room from a seed: a create event, joins, power
levels, join rules, then *forks* that each append events (power level changes,
bans, kicks, joins, leaves, topics, join rule changes) on their own copy of the
state, occasionally *merging* two forks by resolving their states. Each event
cites the auth events the auth rules select from its fork's state. Events the
fork's state does not authorise are still created (as remote servers may send
them) but recorded as rejected and kept out of that fork's state.

It is pure and deterministic: the same seed and sizes give the same events
(and IDs). Used by tests (small rooms) and ``scripts/bench_stateres.py``.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Sequence

import attrs

from homeserver.core.events import Event
from homeserver.core.room_versions import EventFormat

StateMap = dict[tuple[str, str], str]
Resolver = Callable[[Any, Sequence[Mapping[tuple[str, str], str]], Mapping[str, Event], frozenset[str]], StateMap]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
TOPIC = "m.room.topic"
_NAMED_LEVELS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]


@attrs.frozen
class SyntheticRoom:
    """The output of :func:`random_room`."""

    room_version: Any
    event_map: dict[str, Event]
    state_sets: list[StateMap]
    rejected: frozenset[str]


class _Builder:
    def __init__(self, room_version: Any, rnd: random.Random, checker: Callable[[Event, StateMap], bool]) -> None:
        self.rv = room_version
        self.rnd = rnd
        self.check = checker
        self.events: dict[str, Event] = {}
        self.rejected: set[str] = set()
        self.room_id = "!synthetic:example.com"
        self.ts = 1_000
        self.serial = 0

    def user(self, i: int) -> str:
        return "@u%d:example.com" % i

    def auth_ids(self, event_type: str, sender: str, state_key: str | None, content: dict, state: StateMap) -> list[str]:
        keys = [(POWER_LEVELS, ""), (MEMBER, sender)]
        if not self.rv.room_id_is_create_event_hash:
            keys.insert(0, (CREATE, ""))
        if event_type == MEMBER and state_key is not None:
            keys.append((MEMBER, state_key))
            if content.get("membership") in ("join", "invite", "knock"):
                keys.append((JOIN_RULES, ""))
        ids = []
        for k in keys:
            e = state.get(k)
            if e is not None and e not in ids:
                ids.append(e)
        return ids

    def make(self, event_type: str, sender: str, state_key: str | None, content: dict,
             state: StateMap, prev: list[str], depth: int, ts_jitter: bool = True) -> Event:
        self.serial += 1
        self.ts += self.rnd.randint(0, 3) if ts_jitter else 1
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": self.ts,
            "depth": depth,
            "hashes": {"sha256": "x"},
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        is_create = event_type == CREATE
        if not (is_create and self.rv.room_id_is_create_event_hash):
            pdu["room_id"] = self.room_id
        auth = [] if is_create else self.auth_ids(event_type, sender, state_key, content, state)
        if self.rv.event_format is EventFormat.V1:
            pdu["event_id"] = "$e%d_%d:example.com" % (self.serial, self.rnd.randint(0, 999))
            pdu["auth_events"] = [[a, {}] for a in auth]
            pdu["prev_events"] = [[p, {}] for p in prev]
        else:
            pdu["auth_events"] = auth
            pdu["prev_events"] = prev
        event = Event.from_pdu(pdu, self.rv)
        if is_create and self.rv.room_id_is_create_event_hash:
            self.room_id = event.room_id
        self.events[event.event_id] = event
        return event

    def apply(self, event: Event, state: StateMap) -> None:
        """Add event to the state if the state authorises it, else reject it."""
        keys = [(CREATE, ""), (POWER_LEVELS, ""), (JOIN_RULES, ""), (MEMBER, event.sender)]
        if event.type == MEMBER and event.state_key is not None:
            keys.append((MEMBER, event.state_key))
        auth_state = {k: self.events[state[k]] for k in keys if k in state}
        if event.type == CREATE or self.check(event, auth_state):
            state[(event.type, event.state_key)] = event.event_id
        else:
            self.rejected.add(event.event_id)


def random_room(
    room_version: Any,
    seed: int,
    checker: Callable[[Event, StateMap], bool],
    resolver: Resolver | None = None,
    users: int = 6,
    forks: int = 3,
    events_per_fork: int = 8,
    initial_members: int | None = None,
    merge_probability: float = 0.15,
    power_bias: float = 0.3,
    active: int | None = None,
) -> SyntheticRoom:
    """Grow a random room; return the forks' states to resolve.

    ``checker(event, auth_state)`` decides whether a fork's state authorises
    an event (the core auth rules); ``resolver`` resolves two forks' states
    when they merge (no merges without it). ``active`` users (default all)
    hold the initial power levels and send the forks' events; the others
    only join (large rooms).
    """
    rnd = random.Random(seed)
    b = _Builder(room_version, rnd, checker)
    creator = b.user(0)
    state: StateMap = {}
    depth = 1
    create_content: dict[str, Any] = {} if room_version.implicit_room_creator else {"creator": creator}
    creators = {creator}
    if room_version.additional_creators and rnd.random() < 0.5:
        create_content["additional_creators"] = [b.user(1)]
        creators.add(b.user(1))
    join_rules = ["public", "invite", "private"]
    if room_version.knock_join_rule:
        join_rules.append("knock")
    if room_version.restricted_join_rule:
        join_rules.append("restricted")
    if room_version.knock_restricted_join_rule:
        join_rules.append("knock_restricted")
    prev = [b.make(CREATE, creator, "", create_content, state, [], depth).event_id]
    b.apply(b.events[prev[0]], state)

    def step(event_type: str, sender: str, state_key: str | None, content: dict, st: StateMap, pv: list[str], d: int) -> list[str]:
        e = b.make(event_type, sender, state_key, content, st, pv, d)
        b.apply(e, st)
        return [e.event_id]

    depth += 1
    prev = step(MEMBER, creator, creator, {"membership": "join"}, state, prev, depth)
    active = users if active is None else min(active, users)
    levels = {b.user(i): rnd.choice([0, 0, 50, 100]) for i in range(1, active)}
    if room_version.creators_have_infinite_power:
        for c in creators:
            levels.pop(c, None)
    else:
        levels[creator] = 100
    depth += 1
    prev = step(POWER_LEVELS, creator, "", {"users": levels}, state, prev, depth)
    depth += 1
    prev = step(JOIN_RULES, creator, "", {"join_rule": "public"}, state, prev, depth)
    members = users if initial_members is None else min(initial_members, users)
    for i in range(1, members):
        depth += 1
        prev = step(MEMBER, b.user(i), b.user(i), {"membership": "join"}, state, prev, depth)

    heads: list[tuple[StateMap, list[str], int]] = [(dict(state), list(prev), depth) for _ in range(forks)]
    for _ in range(events_per_fork * forks):
        f = rnd.randrange(len(heads))
        st, pv, d = heads[f]
        if resolver is not None and len(heads) > 1 and rnd.random() < merge_probability:
            g = rnd.randrange(len(heads))
            if g != f:
                other = heads[g]
                merged = resolver(room_version, [st, other[0]], b.events, frozenset(b.rejected))
                heads[f] = (dict(merged), pv + other[1], max(d, other[2]))
                continue
        d += 1
        sender = b.user(rnd.randrange(active))
        target = b.user(rnd.randrange(active) if rnd.random() < 0.7 else rnd.randrange(users))
        r = rnd.random()
        if r < power_bias:
            pl_id = st.get((POWER_LEVELS, ""))
            old = dict(b.events[pl_id].content.get("users", {})) if pl_id else {}
            admins = sorted(u for u, level in old.items() if isinstance(level, int) and level >= 50)
            if admins and rnd.random() < 0.8:
                sender = rnd.choice(admins)
            old[target] = rnd.choice([0, 10, 50, 75, 100])
            for c in creators:
                old.pop(c, None)
            content: dict[str, Any] = {"users": old}
            if rnd.random() < 0.3:
                content["events"] = {TOPIC: rnd.choice([0, 50, 100])}
            if rnd.random() < 0.2:
                for name in rnd.sample(_NAMED_LEVELS, rnd.randint(1, 3)):
                    content[name] = rnd.choice([0, 25, 50, 100])
            if rnd.random() < 0.1:
                content["notifications"] = {"room": rnd.choice([0, 50, 100])}
            if rnd.random() < 0.1:
                # Rooms v1-v9 accept stringy and floaty levels; v10+ reject them.
                odd: list[Any] = ["50", " 25", "abc"]
                if not room_version.strict_canonical_json:
                    odd.append(50.0)  # floats are not canonical JSON in rooms v6+
                content[rnd.choice(_NAMED_LEVELS)] = rnd.choice(odd)
            pv = step(POWER_LEVELS, sender, "", content, st, pv, d)
        elif r < power_bias + 0.15:
            pv = step(MEMBER, sender, target, {"membership": rnd.choice(["ban", "leave", "invite"])}, st, pv, d)
        elif r < power_bias + 0.3:
            choices = ["join", "join", "leave"] + (["knock"] if room_version.knock_join_rule else [])
            membership_content: dict[str, Any] = {"membership": rnd.choice(choices)}
            if room_version.restricted_join_rule and rnd.random() < 0.2:
                membership_content["join_authorised_via_users_server"] = b.user(rnd.randrange(active))
            pv = step(MEMBER, target, target, membership_content, st, pv, d)
        elif r < power_bias + 0.38:
            pv = step(JOIN_RULES, sender, "", {"join_rule": rnd.choice(join_rules)}, st, pv, d)
        else:
            pv = step(TOPIC, sender, "", {"topic": "t%d" % rnd.randrange(1000)}, st, pv, d)
        heads[f] = (st, pv, d)
    return SyntheticRoom(
        room_version=room_version,
        event_map=dict(b.events),
        state_sets=[h[0] for h in heads],
        rejected=frozenset(b.rejected),
    )
