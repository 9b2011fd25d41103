"""Chaos through a real multi-process stack: nothing lost, nothing twice.

Six instances behind the built-in router (two client writers owning
disjoint halves of every stream, two sync workers, a client reader and a
background instance) on their own ``redis-server``. Every user sends
messages into rooms spread over both writers' shards (retrying with the
same transaction ID whenever a send fails) and long-polls /sync (retrying
with the same ``since`` token). While that load runs, the test in turn:

1. kill -9's a sync worker (the router must take it out of rotation and
   the long-polls move to the other one);
2. kill -9's a client writer mid-request (its senders retry with the same
   transaction ID; once it is back nothing is lost or duplicated);
3. FLUSHALLs Redis, then restarts it (consumers see the gap and catch up
   from PostgreSQL);
4. restarts the whole stack (access and sync tokens stay valid).

After each step it waits, with a deadline, for every sender to make
progress and every client to have received every acknowledged event, and
checks that each client saw each event exactly once, in the same room order
as every other client, each sender's events in the order they were sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.parse
from typing import Any, Optional

import attrs
import redis
import treq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from homeserver.sharding import shard_for
from tests.e2e.stack import Stack
from tests.utils.wait import wait_until
from workers.embedded import EmbeddedRedis

STREAM_SHARDS = {"events": 16, "receipts": 4, "typing": 4, "presence": 4, "to_device": 8, "account_data": 4,
                 "device_lists": 4, "push_rules": 4}


def _halves(first: bool) -> dict[str, str]:
    """Shard ranges of every stream: the lower half for ``first``, the upper half otherwise."""
    out = {}
    for stream, count in STREAM_SHARDS.items():
        half = count // 2
        out[stream] = f"0-{half - 1}" if first else f"{half}-{count - 1}"
    return out


LAYOUT = {
    "writer1": {"roles": ["client_writer"], "shards": _halves(True)},
    "writer2": {"roles": ["client_writer"], "shards": _halves(False)},
    "sync1": {"roles": ["sync"]},
    "sync2": {"roles": ["sync"]},
    "reader": {"roles": ["client_reader", "federation_inbound", "media"]},
    "background": {"roles": ["background", "pusher", "admin", "federation_sender"]},
}

#: Retry pause of a failed client request (a client's back-off, not a wait for a condition).
RETRY_SECONDS = 0.1
#: Sends every sender completes after a disruption before the step is checked.
PROGRESS_SENDS = 3
USERS = 4
ROOMS_PER_WRITER = 2


class RequestFailed(Exception):
    """A request got no answer or an answer that says to try again."""


@attrs.define
class Http:
    """A tiny Matrix client transport over treq."""

    client: Any
    base: str

    async def call(self, method: str, path: str, token: Optional[str] = None, body: Any = None,
                   timeout: float = 15.0) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            resp = await self.client.request(
                method, self.base + path, data=json.dumps(body).encode() if body is not None else None,
                headers=headers, timeout=timeout,
            )
            raw = await resp.content()
        except Exception as e:
            raise RequestFailed(f"{method} {path}: {e!r}") from e
        try:
            data = json.loads(raw)
        except ValueError:
            data = {"raw": raw[:200].decode("utf-8", "replace")}
        return resp.code, data


@attrs.define
class User:
    user_id: str
    token: str
    device_id: str
    #: room_id -> event IDs in the order this user's /sync delivered them.
    received: dict[str, list[str]] = attrs.Factory(dict)
    since: Optional[str] = None
    sent: int = 0
    limited: int = 0
    sync_errors: int = 0
    send_errors: int = 0


@attrs.define
class Sent:
    event_id: str
    room_id: str
    sender: str
    seq: int


class Load:
    """Senders and long-polling syncers running until :meth:`stop`."""

    def __init__(self, http: Http, users: list[User], rooms: list[str]) -> None:
        self.http = http
        self.users = users
        self.rooms = rooms
        self.running = True
        self.sending = True
        self.send_loops: list[defer.Deferred] = []
        self.acked: dict[str, Sent] = {}
        self.txn_event: dict[str, str] = {}
        self.problems: list[str] = []
        self.loops: list[defer.Deferred] = []

    def start(self) -> None:
        for user in self.users:
            self.send_loops.append(defer.ensureDeferred(self._send_loop(user)))
            self.loops.append(defer.ensureDeferred(self._sync_loop(user)))

    async def stop_senders(self) -> None:
        """Stop sending (each sender finishes the send under way)."""
        self.sending = False
        await defer.gatherResults(self.send_loops, consumeErrors=True)

    async def stop(self) -> None:
        self.sending = False
        self.running = False
        await defer.gatherResults(self.send_loops + self.loops, consumeErrors=True)

    async def _pause(self) -> None:
        await task.deferLater(reactor, RETRY_SECONDS, lambda: None)

    async def _send_loop(self, user: User) -> None:
        seq = 0
        while self.sending:
            room_id = self.rooms[(seq + self.users.index(user)) % len(self.rooms)]
            txn = f"t{seq}"
            path = (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/"
                    f"{urllib.parse.quote(txn)}")
            body = {"msgtype": "m.text", "body": f"{user.user_id} {seq}", "seq": seq}
            while True:
                try:
                    code, data = await self.http.call("PUT", path, user.token, body)
                except RequestFailed:
                    code, data = None, None
                if code == 200:
                    break
                if code is not None and code < 500 and code != 429:
                    self.problems.append(f"send {user.user_id} {txn}: {code} {data}")
                user.send_errors += 1
                if not self.running:
                    return
                await self._pause()
            event_id = data["event_id"]
            key = f"{user.user_id}/{room_id}/{txn}"
            if key in self.txn_event and self.txn_event[key] != event_id:
                self.problems.append(f"txn {key} answered {self.txn_event[key]} then {event_id}")
            self.txn_event[key] = event_id
            self.acked[event_id] = Sent(event_id, room_id, user.user_id, seq)
            user.sent += 1
            seq += 1

    async def _sync_loop(self, user: User) -> None:
        filt = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 500}}}))
        while self.running:
            path = f"/_matrix/client/v3/sync?timeout=1000&filter={filt}"
            if user.since:
                path += "&since=" + urllib.parse.quote(user.since)
            try:
                code, data = await self.http.call("GET", path, user.token, timeout=10)
            except RequestFailed:
                code, data = None, None
            if code != 200:
                if code is not None and code < 500 and code != 429:
                    self.problems.append(f"sync {user.user_id}: {code} {data}")
                user.sync_errors += 1
                await self._pause()
                continue
            for room_id, room in data.get("rooms", {}).get("join", {}).items():
                timeline = room.get("timeline", {})
                if timeline.get("limited") and user.since is not None:
                    user.limited += 1
                for ev in timeline.get("events", []):
                    if ev.get("type") == "m.room.message" and "seq" in ev.get("content", {}):
                        user.received.setdefault(room_id, []).append(ev["event_id"])
            user.since = data["next_batch"]

    # -- checks ---------------------------------------------------------------------

    def progress_mark(self) -> dict[str, int]:
        return {u.user_id: u.sent for u in self.users}

    def progressed(self, mark: dict[str, int]) -> bool:
        return all(u.sent >= mark[u.user_id] + PROGRESS_SENDS for u in self.users)

    def all_delivered(self, snapshot: set[str]) -> bool:
        for user in self.users:
            got = {e for evs in user.received.values() for e in evs}
            if not snapshot <= got:
                return False
        return True

    def missing(self, snapshot: set[str]) -> dict[str, int]:
        out = {}
        for user in self.users:
            got = {e for evs in user.received.values() for e in evs}
            out[user.user_id] = len(snapshot - got)
        return out

    def check(self, snapshot: set[str]) -> list[str]:
        """Exactly once, same room order for everyone, each sender in send order."""
        errors = list(self.problems)
        reference: dict[str, list[str]] = {}
        for user in self.users:
            for room_id, events in user.received.items():
                if len(events) != len(set(events)):
                    dups = sorted({e for e in events if events.count(e) > 1})
                    errors.append(f"{user.user_id} got {dups[:3]} more than once in {room_id}")
                unknown = [e for e in events if e not in self.acked]
                # An event may legitimately arrive before its send was acknowledged
                # (the answer was lost with a killed writer, and the retry is still
                # under way); it must then be acknowledged with the same ID later.
                for e in unknown:
                    if not self.running:
                        errors.append(f"{user.user_id} got {e}, never acknowledged to its sender")
                ordered = [e for e in events if e in snapshot]
                ref = reference.setdefault(room_id, ordered)
                if ordered != ref:
                    errors.append(f"{user.user_id} saw {room_id} in another order than its peers")
                last: dict[str, int] = {}
                for e in ordered:
                    sent = self.acked[e]
                    if sent.room_id != room_id:
                        errors.append(f"{e} arrived in {room_id}, sent to {sent.room_id}")
                    if last.get(sent.sender, -1) >= sent.seq:
                        errors.append(f"{user.user_id}: {sent.sender}'s events out of send order in {room_id}")
                    last[sent.sender] = sent.seq
            if user.limited:
                errors.append(f"{user.user_id} got {user.limited} limited (gappy) timelines")
        return errors


class ChaosTests(unittest.TestCase):
    timeout = 240

    def setUp(self) -> None:
        tmp = tempfile.mkdtemp(prefix="estuary-chaos-redis-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.redis = EmbeddedRedis(tmp)
        self.redis.start()
        self.addCleanup(self.redis.stop)
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 32
        self.addCleanup(pool.closeCachedConnections)
        self.treq = treq.client.HTTPClient(Agent(reactor, pool=pool, connectTimeout=5))

    @defer.inlineCallbacks
    def test_no_loss_no_duplicate_through_kills_flush_and_restart(self):
        """Every client gets every event once, in room order, through kill -9 of a sync worker and
        of a writer, a Redis FLUSHALL and restart, and a restart of the whole stack."""
        stack = Stack(self, reactor, LAYOUT, redis_url=self.redis.url,
                      extra_config={"streams": dict(STREAM_SHARDS), "rate_limits": {"enabled": False},
                                    # A long token cache: logouts must reach it over the caches stream.
                                    "sessions": {"token_cache_ms": 60000}})
        try:
            yield stack.start()
        except Exception:
            self.fail("stack did not become ready:\n" + stack.log()[-4000:])
        self.stack = stack
        try:
            yield defer.ensureDeferred(self._scenario(stack))
        except BaseException:
            print("---- stack log (tail) ----\n" + stack.log()[-6000:])
            raise

    async def _setup_users_and_rooms(self, http: Http) -> tuple[list[User], list[str]]:
        users = []
        for i in range(USERS):
            code, data = await http.call("POST", "/_matrix/client/v3/register", body={
                "username": f"chaos{i}", "password": f"chaos password {i}", "auth": {"type": "m.login.dummy"}})
            self.assertEqual(code, 200, data)
            users.append(User(data["user_id"], data["access_token"], data["device_id"]))
        per_writer: dict[bool, list[str]] = {True: [], False: []}
        for _ in range(40):
            if all(len(v) >= ROOMS_PER_WRITER for v in per_writer.values()):
                break
            code, data = await http.call("POST", "/_matrix/client/v3/createRoom", users[0].token,
                                         {"preset": "public_chat"})
            self.assertEqual(code, 200, data)
            first = shard_for(data["room_id"], STREAM_SHARDS["events"]) < STREAM_SHARDS["events"] // 2
            per_writer[first].append(data["room_id"])
        rooms = per_writer[True][:ROOMS_PER_WRITER] + per_writer[False][:ROOMS_PER_WRITER]
        self.assertEqual(len(rooms), 2 * ROOMS_PER_WRITER, "rooms on both writers")
        for user in users[1:]:
            for room_id in rooms:
                code, data = await http.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}",
                                             user.token, {})
                self.assertEqual(code, 200, data)
        for user in users:
            code, data = await http.call("GET", "/_matrix/client/v3/sync?timeout=0", user.token)
            self.assertEqual(code, 200, data)
            user.since = data["next_batch"]
        return users, rooms

    async def _read_your_writes(self, http: Http, users: list[User], rooms: list[str]) -> None:
        """A sender's next /sync (sync workers) and /messages (client reader) include its write at once."""
        filt = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 50}}}))
        for i in range(3 * len(rooms)):
            user, room_id = users[i % len(users)], rooms[i % len(rooms)]
            code, data = await http.call(
                "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/ryw{i}",
                user.token, {"msgtype": "m.text", "body": f"ryw {i}"})
            self.assertEqual(code, 200, data)
            event_id = data["event_id"]
            code, data = await http.call(
                "GET", f"/_matrix/client/v3/sync?timeout=0&filter={filt}&since={urllib.parse.quote(user.since)}",
                user.token)
            self.assertEqual(code, 200, data)
            seen = [e["event_id"] for e in data["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])]
            self.assertIn(event_id, seen, f"write {i} not in the sender's next /sync")
            user.since = data["next_batch"]
            code, data = await http.call(
                "GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit=3", user.token)
            self.assertEqual(code, 200, data)
            self.assertIn(event_id, [e["event_id"] for e in data["chunk"]], f"write {i} not in /messages")

    async def _logout_reaches_every_cache(self, http: Http, user: User) -> None:
        """A token cached by both sync workers and the reader stops working everywhere soon after /logout."""
        code, data = await http.call("POST", "/_matrix/client/v3/login", body={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": "chaos password 0"})
        self.assertEqual(code, 200, data)
        token = data["access_token"]
        urls = [self.stack.instance_base(name) for name in ("sync1", "sync2")]
        for base in urls:
            code, data = await Http(self.treq, base).call("GET", "/_matrix/client/v3/sync?timeout=0", token)
            self.assertEqual(code, 200, data)
        code, data = await http.call("POST", "/_matrix/client/v3/logout", token, {})
        self.assertEqual(code, 200, data)

        async def rejected_everywhere() -> bool:
            for base in urls:
                code, _ = await Http(self.treq, base).call("GET", "/_matrix/client/v3/sync?timeout=0", token)
                if code != 401:
                    return False
            return True

        await wait_until(reactor, lambda: defer.ensureDeferred(rejected_everywhere()), timeout=10,
                         what="the logout evicting the token on every sync worker")

    async def _settle(self, load: Load, what: str, timeout: float = 45.0) -> None:
        """Wait for every sender to progress, then for every acknowledged event to reach everyone; check."""
        started = time.monotonic()
        mark = load.progress_mark()
        await wait_until(reactor, lambda: load.progressed(mark), timeout=timeout, what=f"senders progress after {what}")
        snapshot = set(load.acked)
        try:
            await wait_until(reactor, lambda: load.all_delivered(snapshot), timeout=timeout,
                             what=f"every event delivered after {what}")
        except Exception:
            self.fail(f"after {what}: missing per user {load.missing(snapshot)}; problems {load.check(snapshot)[:10]}")
        errors = load.check(snapshot)
        self.assertEqual(errors, [], f"after {what}")
        print(f"chaos: {what}: settled in {time.monotonic() - started:.1f}s, {len(snapshot)} events")

    async def _instance_pid(self, stack: Stack, name: str) -> int:
        code, body = await stack.get(stack.instance_base(name) + "/health")
        self.assertEqual(code, 200)
        return body["pid"]

    async def _scenario(self, stack: Stack) -> None:
        from homeserver.config import load_config
        from workers.router import rendezvous_pick

        stack_config = load_config(stack.config, env={})
        http = Http(self.treq, stack.base)
        users, rooms = await self._setup_users_and_rooms(http)
        await self._read_your_writes(http, users, rooms)
        await self._logout_reaches_every_cache(http, users[0])
        load = Load(http, users, rooms)
        load.start()
        self.addCleanup(lambda: defer.ensureDeferred(load.stop()))
        await self._settle(load, "warm-up")

        # 1. kill -9 a sync worker: the router takes it out of rotation; long-polls move.
        # The victim is the worker holding users[0]'s long-polls (the router's rendezvous choice).
        victim = rendezvous_pick(f"Bearer {users[0].token}", [stack_config.instances[n] for n in ("sync1", "sync2")]).name
        errors_before = users[0].sync_errors
        pid = await self._instance_pid(stack, victim)
        os.kill(pid, signal.SIGKILL)
        await wait_until(reactor, lambda: defer.ensureDeferred(self._out_of_rotation(stack, victim)), timeout=5,
                         what="router takes the dead sync worker out of rotation")
        await self._settle(load, f"kill -9 {victim}")
        self.assertGreater(users[0].sync_errors, errors_before, "the kill cut a long-poll, which was retried")
        await self._back(stack, victim, pid)

        # 2. kill -9 a writer while sends are in flight.
        errors_before = sum(u.send_errors for u in users)
        pid = await self._instance_pid(stack, "writer1")
        os.kill(pid, signal.SIGKILL)
        await self._back(stack, "writer1", pid)
        await self._settle(load, "kill -9 writer1")
        self.assertGreater(sum(u.send_errors for u in users), errors_before, "sends failed and were retried")

        # 3. Redis loses everything, then goes away and comes back empty.
        redis.Redis.from_url(self.redis.url).flushall()
        await self._settle(load, "FLUSHALL")
        self.redis.stop()
        self.redis.start()
        await stack.wait_all_ready(timeout=60)
        await self._settle(load, "Redis restart")

        # 4. The whole stack restarts; tokens stay valid.
        stack.stop()
        await stack.start()
        await self._settle(load, "stack restart")

        await load.stop_senders()
        snapshot = set(load.acked)
        await wait_until(reactor, lambda: load.all_delivered(snapshot), timeout=30, what="the last events delivered")
        await load.stop()
        self.assertEqual(load.check(snapshot), [])
        lines = stack.log().splitlines()
        unhandled = ["\n".join(lines[i:i + 25]) for i, line in enumerate(lines) if "Unhandled error" in line]
        self.assertEqual(unhandled[:2], [], "no request may fail with an unhandled error (invariant 5)")
        print("chaos: sent", len(snapshot), "send retries", sum(u.send_errors for u in users),
              "sync retries", sum(u.sync_errors for u in users))

    async def _out_of_rotation(self, stack: Stack, name: str) -> bool:
        code, body = await stack.get(stack.base + "/_estuary/router")
        return code == 200 and body["instances"].get(name) is False

    async def _back(self, stack: Stack, name: str, old_pid: int) -> None:
        async def back() -> bool:
            code, body = await stack.get(stack.instance_base(name) + "/health")
            if code != 200 or body["pid"] == old_pid:
                return False
            code, body = await stack.get(stack.base + "/_estuary/router")
            return code == 200 and body["instances"].get(name) is True

        await wait_until(reactor, lambda: defer.ensureDeferred(back()), timeout=60, what=f"{name} back in rotation")
