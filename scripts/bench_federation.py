#!/usr/bin/env python
"""Federation benchmark: remote homeservers' traffic into and out of a target.

    .venv/bin/python scripts/bench_federation.py --targets estuary,synapse \\
        --pdus 2000 --inflight 4 --txn-size 50 --outbound 500 \\
        --synapse-venv /work/synapse-venv

*Fake remote homeservers* run in this process (aiohttp, asyncio): each has
its own ed25519 signing key, serves ``/_matrix/key/v2/server`` over TLS on
``127.0.0.1:<port>`` (its server name, so the target dials it directly),
answers ``/send``, ``/get_missing_events`` and ``/event``, and signs its
requests with ``X-Matrix``. The target is started on loopback as in
``bench_load.py`` (Estuary with ``estuary stack``; Synapse single process
from a venv via ``synapse_peer.py``), trusting the fake servers'
certificate (Estuary) or not checking it (Synapse,
``federation_verify_certificates: false``).

Setup: a local user of the target creates ``--inflight`` public rooms; the
user of fake server ``i`` joins room ``i`` through ``make_join`` /
``send_join`` (v2). One fake server per room because a server sends one
transaction at a time to a destination (Synapse answers 429 "Too many
concurrent transactions" to a second one from the same origin). Then:

**Inbound.** ``--pdus`` ``m.room.message`` PDUs are built beforehand (not
timed): one linear chain per room (``prev_events`` the previous PDU,
``auth_events`` create / power levels / the sender's join, content hash,
signature), cut into transactions of ``--txn-size``. Each fake server (a
*lane*) sends its room's transactions one after the other, waiting for each
answer, so no PDU arrives before its prev event; the ``--inflight`` lanes
run at once. Reported:

- ``accepted_pdus_per_s``: PDUs / time until the last ``/send`` answered
  (every per-PDU result must be ``{}``);
- ``persisted_pdus_per_s``: PDUs / time until the last PDU of every room is
  readable by the local user (``GET /rooms/{id}/event/{id}``). Synapse
  answers ``/send`` once PDUs are staged and persists them afterwards, so
  this is the figure to compare; Estuary answers after persisting;
- ``cpu_ms_per_pdu``: server CPU (utime+stime of the server process tree
  from /proc, PostgreSQL and Redis not counted) over that time / PDUs;
- correctness: afterwards every PDU is read back through ``/messages`` in
  chain order (missing / order errors), and the target asked the fake
  servers for no missing events.

**Outbound.** The local user sends ``--outbound`` messages (``--senders``
concurrent client requests) into the first ``--outbound-rooms`` rooms (by
default one room: one destination); the fake server answers each ``/send``
with 200 and records when each PDU arrived. Two modes:

- ``live``: answered at once; reports transactions/s and PDUs/s received
  (over first send -> last receipt), PDUs per transaction and the p50/p99
  delay from the client's send to the fake server's receipt;
- ``drain``: the fake server holds its first ``/send`` open until the client
  has sent everything, so the messages queue up in the sender; then it
  answers and measures how fast the queue drains (transactions/s, PDUs/s
  from release to last receipt). Estuary's ``sender_catch_up_threshold``
  is raised above ``--outbound`` so it sends every PDU, as Synapse does
  to a destination that never failed.

Every sent message must arrive exactly once. Figures of all targets are
printed side by side with Estuary/Synapse ratios. Synapse's federation rate
limiter (``rc_federation``) is raised out of the way, as its client limits
are in ``synapse_peer.py``. Synapse is skipped (with a message) when its venv
is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
import uuid
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from homeserver.core.room_versions import EventFormat, RoomVersion, get_room_version  # noqa: E402
from homeserver.core.signing import (  # noqa: E402
    add_hashes_and_signatures,
    build_server_keys,
    compute_event_id,
    generate_signing_key,
)
from homeserver.federation.request_auth import sign_request  # noqa: E402

MEMBER = "m.room.member"
MAX_PDUS_PER_TRANSACTION = 50


# -- PDU building (pure) ----------------------------------------------------


def message_auth_event_ids(version: RoomVersion, state: Mapping[tuple[str, str], str], sender: str) -> list[str]:
    """The ``auth_events`` of an ``m.room.message`` by ``sender``: create (not in
    rooms whose ID is the create event's hash, v12), power levels, the sender's
    membership (server-server-api "Auth events selection")."""
    keys = [("m.room.power_levels", ""), (MEMBER, sender)]
    if not version.room_id_is_create_event_hash:
        keys.insert(0, ("m.room.create", ""))
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"the room state lacks {missing}")
    return [state[k] for k in keys]


def build_message_chain(
    version: RoomVersion,
    room_id: str,
    sender: str,
    origin: str,
    signing_key: Any,
    auth_event_ids: Iterable[str],
    prev_event_id: str,
    prev_depth: int,
    count: int,
    origin_server_ts: int,
    tag: str,
) -> list[dict[str, Any]]:
    """``count`` signed ``m.room.message`` PDUs, each the only prev event of the
    next, the first following ``prev_event_id`` (at ``prev_depth``).

    Content carries ``bench_id`` ``<tag>-<index>``. Only for room versions
    whose event IDs are reference hashes (v3+).
    """
    if version.event_format is EventFormat.V1:
        raise ValueError("room versions 1 and 2 are not supported by the benchmark")
    auth = list(auth_event_ids)
    pdus = []
    prev, depth = prev_event_id, prev_depth
    for i in range(count):
        depth += 1
        pdu = {
            "room_id": room_id,
            "type": "m.room.message",
            "sender": sender,
            "origin": origin,
            "origin_server_ts": origin_server_ts + i,
            "depth": depth,
            "prev_events": [prev],
            "auth_events": auth,
            "content": {"msgtype": "m.text", "body": f"federated message {i}", "bench_id": f"{tag}-{i}"},
        }
        signed = add_hashes_and_signatures(version, pdu, origin, signing_key)
        prev = compute_event_id(version, signed)
        pdus.append(signed)
    return pdus


def chunk(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` cut into consecutive lists of at most ``size`` (1..50 for transactions)."""
    if size < 1:
        raise ValueError("size must be positive")
    return [items[i:i + size] for i in range(0, len(items), size)]


def interleave(sequences: list[list[Any]]) -> list[Any]:
    """Round robin over ``sequences``: first items of each, then second items..."""
    out = []
    for i in range(max((len(q) for q in sequences), default=0)):
        out.extend(q[i] for q in sequences if i < len(q))
    return out


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts differing by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def signed_join(version: RoomVersion, template: Mapping[str, Any], origin: str, signing_key: Any, now_ms: int) -> dict[str, Any]:
    """The join event of a ``make_join`` template, completed and signed by ``origin``."""
    pdu = {k: v for k, v in template.items() if k not in ("signatures", "hashes", "unsigned", "event_id")}
    pdu["content"] = {"membership": "join"}
    pdu["origin"] = origin
    pdu["origin_server_ts"] = now_ms
    return add_hashes_and_signatures(version, pdu, origin, signing_key)


def missing_events(events: Mapping[str, Mapping[str, Any]], earliest: Iterable[str], latest: Iterable[str], limit: int) -> list[Any]:
    """``/get_missing_events`` over ``events`` (ID -> PDU): ancestors of ``latest``
    (not those themselves) not at or past ``earliest``, at most ``limit``, oldest first."""
    seen = set(earliest)
    frontier = [p for e in latest if e in events for p in events[e]["prev_events"]]
    out: list[Any] = []
    while frontier and len(out) < limit:
        event_id = frontier.pop(0)
        if event_id in seen or event_id not in events:
            continue
        seen.add(event_id)
        out.append(events[event_id])
        frontier.extend(events[event_id]["prev_events"])
    out.sort(key=lambda e: e["depth"])
    return out


def backfill_events(events: Mapping[str, Mapping[str, Any]], start: Iterable[str], limit: int) -> list[Any]:
    """``/backfill`` over ``events`` (ID -> PDU): the ``start`` events and their ancestors,
    breadth first, at most ``limit``."""
    frontier, seen, out = list(start), set(), []
    while frontier and len(out) < limit:
        event_id = frontier.pop(0)
        if event_id in seen or event_id not in events:
            continue
        seen.add(event_id)
        out.append(events[event_id])
        frontier.extend(events[event_id].get("prev_events", []))
    return out


def transaction_results_ok(answer: Any, event_ids: Iterable[str]) -> list[str]:
    """Problems in a ``/send`` answer for ``event_ids`` (empty: every PDU was accepted)."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("pdus"), Mapping):
        return [f"bad answer {answer!r}"[:200]]
    results = answer["pdus"]
    problems = []
    for event_id in event_ids:
        result = results.get(event_id)
        if result is None:
            # Servers may leave out accepted PDUs; only errors matter.
            continue
        if not isinstance(result, Mapping) or result.get("error"):
            problems.append(f"{event_id}: {result}")
    return problems


def _url(url: str) -> Any:
    """``url`` sent exactly as written (aiohttp would otherwise re-quote the
    path, and the X-Matrix signature covers the URI as sent)."""
    import yarl

    return yarl.URL(url, encoded=True)


def summarize_collapsed(lines: Iterable[str], top: int = 25) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """Self and inclusive sample counts per frame from py-spy ``--format raw``
    (collapsed stacks: ``frame;frame;... count``), the ``top`` of each, and the total."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = stack.split(";")
        total += count
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    def best(d: dict[str, int]) -> list[tuple[str, int]]:
        return sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

    return best(self_counts), best(inclusive), total


class PySpy:
    """``py-spy record --gil`` of the target's processes over one phase (``--py-spy``):
    samples of the thread holding the GIL, i.e. where Python CPU time goes."""

    def __init__(self, binary: str, outdir: str) -> None:
        self.binary, self.outdir = binary, outdir
        self.procs: list[tuple[str, Any]] = []

    def start(self, pids: list[int], label: Any) -> None:
        import subprocess

        os.makedirs(self.outdir, exist_ok=True)
        for pid in pids:
            name = label(pid)
            if name in ("router",):
                continue
            path = os.path.join(self.outdir, f"{name}-{pid}.txt")
            proc = subprocess.Popen([self.binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--gil",
                                     "--nonblocking", "-o", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((path, proc))

    def stop(self, top: int = 25) -> None:
        import signal as _signal

        for _, proc in self.procs:
            proc.send_signal(_signal.SIGINT)
        for path, proc in self.procs:
            try:
                proc.wait(30)
            except Exception:
                proc.kill()
            if not os.path.exists(path):
                continue
            with open(path) as f:
                self_top, incl_top, total = summarize_collapsed(f, 10 * top)
            self_top = self_top[:top]
            if not total:
                continue
            print(f"   py-spy {os.path.basename(path)}: {total} samples on CPU", flush=True)
            print("     self:", flush=True)
            for frame, n in self_top:
                print(f"       {100 * n / total:5.1f}%  {frame}")
            print("     inclusive (project code):", flush=True)
            for frame, n in [(f, n) for f, n in incl_top if "(homeserver/" in f or "(storage/" in f][:top]:
                print(f"       {100 * n / total:5.1f}%  {frame}")
        self.procs = []


# -- the fake remote homeserver ---------------------------------------------


class FakeRemote:
    """A homeserver of our own on ``127.0.0.1:<port>`` over TLS (see the module docstring)."""

    def __init__(self, cert_path: str, key_path: str) -> None:
        from workers.embedded import free_port

        self.cert_path, self.key_path = cert_path, key_path
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.signing_key = generate_signing_key()
        self.user_id = f"@bench:{self.server_name}"
        self.runner: Any = None
        #: PDUs we built, by event ID (served to /event and /get_missing_events).
        self.events: dict[str, dict[str, Any]] = {}
        #: room ID -> room version identifier (of the rooms we joined).
        self.room_versions: dict[str, str] = {}
        #: room ID -> (state IDs, auth chain IDs) after our join (answers /state_ids).
        self.state_ids: dict[str, tuple[list[str], list[str]]] = {}
        self.state_requests = 0
        self.backfill_requests = 0
        self.reset_outbound()
        self.missing_event_requests = 0
        self.unknown_requests: dict[str, int] = {}

    def reset_outbound(self) -> None:
        self.received: dict[str, float] = {}  # bench_id -> first receipt (monotonic)
        self.txn_ids: set[str] = set()
        self.txn_times: list[float] = []
        self.pdus_received = 0
        self.duplicates = 0
        self.edus_received = 0
        self.hold: Optional[asyncio.Event] = None
        self.held_since: Optional[float] = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_matrix/key/v2/server", self.keys)
        app.router.add_get("/_matrix/key/v2/server/{key_id}", self.keys)
        app.router.add_get("/_matrix/federation/v1/version", self.version)
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", self.send)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{room_id}", self.get_missing_events)
        app.router.add_get("/_matrix/federation/v1/event/{event_id}", self.get_event)
        app.router.add_get("/_matrix/federation/v1/state_ids/{room_id}", self.get_state_ids)
        app.router.add_get("/_matrix/federation/v1/backfill/{room_id}", self.backfill)
        app.router.add_route("*", "/{tail:.*}", self.unknown)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def keys(self, request: Any) -> Any:
        from aiohttp import web

        valid_until = int(time.time() * 1000) + 24 * 3600 * 1000
        return web.json_response(build_server_keys(self.server_name, [self.signing_key], [], valid_until))

    async def version(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"server": {"name": "bench_federation", "version": "0"}})

    async def send(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if self.hold is not None and not self.hold.is_set():
            if self.held_since is None:
                self.held_since = time.monotonic()
            await self.hold.wait()
        now = time.monotonic()
        txn_id = request.match_info["txn_id"]
        results = {}
        if txn_id not in self.txn_ids:
            self.txn_ids.add(txn_id)
            self.txn_times.append(now)
            pdus = body.get("pdus", [])
            self.edus_received += len(body.get("edus", []))
            for pdu in pdus:
                self.pdus_received += 1
                bench_id = pdu.get("content", {}).get("bench_id")
                if bench_id is not None:
                    if bench_id in self.received:
                        self.duplicates += 1
                    else:
                        self.received[bench_id] = now
                try:
                    version = get_room_version(self.room_versions.get(pdu.get("room_id"), "10"))
                    results[compute_event_id(version, pdu)] = {}
                except Exception:
                    pass
        return web.json_response({"pdus": results})

    async def get_missing_events(self, request: Any) -> Any:
        from aiohttp import web

        self.missing_event_requests += 1
        body = await request.json()
        events = missing_events(self.events, body.get("earliest_events", []), body.get("latest_events", []),
                                min(int(body.get("limit", 10)), 20))
        return web.json_response({"events": events})

    async def get_state_ids(self, request: Any) -> Any:
        from aiohttp import web

        self.state_requests += 1
        ids = self.state_ids.get(request.match_info["room_id"])
        if ids is None or request.query.get("event_id") not in self.events:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "unknown room or event"}, status=404)
        return web.json_response({"pdu_ids": ids[0], "auth_chain_ids": ids[1]})

    async def backfill(self, request: Any) -> Any:
        from aiohttp import web

        self.backfill_requests += 1
        limit = min(int(request.query.get("limit", "10")), 100)
        pdus = backfill_events(self.events, request.query.getall("v", []), limit)
        return web.json_response({"origin": self.server_name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus})

    async def get_event(self, request: Any) -> Any:
        from aiohttp import web

        pdu = self.events.get(request.match_info["event_id"])
        if pdu is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "unknown event"}, status=404)
        return web.json_response({"origin": self.server_name, "origin_server_ts": int(time.time() * 1000), "pdus": [pdu]})

    async def unknown(self, request: Any) -> Any:
        from aiohttp import web

        key = f"{request.method} {request.path.split('/')[:5]}"
        self.unknown_requests[key] = self.unknown_requests.get(key, 0) + 1
        return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "not served by the benchmark"}, status=404)

    # -- requests to the target --

    def auth_header(self, destination: str, method: str, uri: str, content: Any = None) -> str:
        return sign_request(self.server_name, self.signing_key, destination, method, uri, content)

    async def request(self, session: Any, base: str, destination: str, method: str, uri: str, content: Any = None) -> Any:
        import aiohttp

        headers = {"Authorization": self.auth_header(destination, method, uri, content)}
        data = None
        if content is not None:
            data = json.dumps(content).encode()
            headers["Content-Type"] = "application/json"
        async with session.request(method, _url(base + uri), data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"{method} {uri} -> {r.status} {answer}")
            return answer

    async def join(self, session: Any, base: str, destination: str, room_id: str) -> tuple[RoomVersion, dict[tuple[str, str], str], dict[str, Any]]:
        """Join our user to ``room_id``: the room version, the state after the join and our join event."""
        versions = "&".join(f"ver={v}" for v in ("3", "4", "5", "6", "7", "8", "9", "10", "11", "12"))
        template = await self.request(session, base, destination, "GET",
                                      f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(self.user_id, safe='')}?{versions}")
        version = get_room_version(template["room_version"])
        join = signed_join(version, template["event"], self.server_name, self.signing_key, int(time.time() * 1000))
        event_id = compute_event_id(version, join)
        answer = await self.request(session, base, destination, "PUT",
                                    f"/_matrix/federation/v2/send_join/{quote(room_id, safe='')}/{quote(event_id, safe='')}", join)
        state = {(e["type"], e["state_key"]): compute_event_id(version, e) for e in answer["state"]}
        state[(MEMBER, self.user_id)] = event_id
        self.room_versions[room_id] = version.identifier
        self.events[event_id] = join
        # What /event and /state_ids serve: our messages change no state, so the
        # state before any of them is the state after our join.
        for pdu in list(answer["state"]) + list(answer.get("auth_chain", [])):
            self.events.setdefault(compute_event_id(version, pdu), pdu)
        chain = {compute_event_id(version, pdu) for pdu in answer.get("auth_chain", [])} | set(join["auth_events"])
        self.state_ids[room_id] = (sorted(state.values()), sorted(chain))
        return version, state, join


# -- targets ----------------------------------------------------------------


def make_estuary(workdir: str, layout: str, fake_ca: str, outbound: int) -> Any:
    from bench_load import EstuaryTarget

    federation = {
        "ca_certificates_path": fake_ca,
        # The fake server listens on loopback, blocked by default.
        "ip_range_blocklist": [],
        # Send every queued PDU, as Synapse does to a destination that never failed.
        "sender_catch_up_threshold": max(1000, outbound + 1),
    }
    target = EstuaryTarget(layout, workdir, extra_config={"federation": federation})
    target.name = f"estuary-{layout}"
    return target


def synapse_federation_target(venv: str, workdir: str) -> Any:
    """Synapse single process, its federation rate limiter out of the way."""
    from bench_load import SynapseTarget

    unlimited = {"window_size": 1000, "sleep_limit": 1000000, "sleep_delay": 1, "reject_limit": 1000000, "concurrent": 1000}
    return SynapseTarget(venv, workdir, extra_config={"rc_federation": unlimited})


# -- the benchmark ----------------------------------------------------------


class FederationBench:
    """``fakes[i]`` is the remote server of room ``i`` (and of inbound lane ``i``)."""

    def __init__(self, target: Any, fakes: list[FakeRemote], args: argparse.Namespace) -> None:
        from bench_load import Load

        self.target = target
        self.fakes = fakes
        self.args = args
        self.client = Load(target.base, target.secret, args)
        self.destination = "localhost"
        self.token = ""
        self.rooms: list[str] = []
        self.room_state: dict[str, tuple[RoomVersion, dict, dict]] = {}
        self.fake_of: dict[str, FakeRemote] = {}

    async def setup(self, s: Any) -> None:
        a = self.args
        _, self.token = await self.client.register(s, "b" + uuid.uuid4().hex[:8])
        for i in range(a.inflight * a.rooms_per_server):
            room = await self.client.call(s, "POST", "/_matrix/client/v3/createRoom", self.token,
                                          {"preset": "public_chat", "room_version": a.room_version, "name": f"fed bench {i}"})
            self.rooms.append(room["room_id"])
        for r, room_id in enumerate(self.rooms):
            fake = self.fakes[r // a.rooms_per_server]
            self.fake_of[room_id] = fake
            self.room_state[room_id] = await fake.join(s, self.target.base, self.destination, room_id)

    def build_transactions(self) -> tuple[list[list[tuple[str, bytes, str, list[str]]]], dict[str, list[str]]]:
        """Per lane (remote server): ``(uri, body, auth header, event IDs)`` of each
        transaction; and each room's chain. A lane's rooms are interleaved, so a
        transaction no larger than ``--rooms-per-server`` holds one PDU per room."""
        a = self.args
        chains: dict[str, list[str]] = {}
        by_lane: dict[int, list[list[tuple[dict, str]]]] = {}
        tag = uuid.uuid4().hex[:6]
        for r, (room_id, count) in enumerate(zip(self.rooms, split_evenly(a.pdus, len(self.rooms)))):
            fake = self.fake_of[room_id]
            version, state, join = self.room_state[room_id]
            auth = message_auth_event_ids(version, state, fake.user_id)
            pdus = build_message_chain(version, room_id, fake.user_id, fake.server_name, fake.signing_key, auth,
                                       compute_event_id(version, join), join["depth"], count, int(time.time() * 1000), f"{tag}r{r}")
            ids = [compute_event_id(version, p) for p in pdus]
            fake.events.update(zip(ids, pdus))
            chains[room_id] = ids
            by_lane.setdefault(self.fakes.index(fake), []).append(list(zip(pdus, ids)))
        lanes = []
        for lane_index, fake in enumerate(self.fakes):
            sequence = interleave(by_lane.get(lane_index, []))
            lane = []
            for t, batch in enumerate(chunk(sequence, a.txn_size)):
                body = {"origin": fake.server_name, "origin_server_ts": int(time.time() * 1000),
                        "pdus": [p for p, _ in batch], "edus": []}
                uri = f"/_matrix/federation/v1/send/{tag}-{lane_index}-{t}"
                lane.append((uri, json.dumps(body).encode(), fake.auth_header(self.destination, "PUT", uri, body), [i for _, i in batch]))
            lanes.append(lane)
        return lanes, chains

    async def visible(self, s: Any, room_id: str, event_id: str) -> bool:
        import aiohttp

        url = f"{self.target.base}/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}"
        async with s.get(_url(url), headers={"Authorization": f"Bearer {self.token}"}, timeout=aiohttp.ClientTimeout(total=30)) as r:
            await r.read()
            return r.status == 200

    async def read_back(self, s: Any, room_id: str, sender: str) -> list[str]:
        """Event IDs of ``sender``'s messages in ``room_id``, oldest first, via /messages."""
        out: list[str] = []
        params = {"dir": "b", "limit": "500", "filter": json.dumps({"types": ["m.room.message"]})}
        for _ in range(10000):
            page = await self.client.call(s, "GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages", self.token, params=params)
            out.extend(e["event_id"] for e in page.get("chunk", []) if e.get("sender") == sender)
            if not page.get("chunk") or not page.get("end"):
                break
            params["from"] = page["end"]
        out.reverse()
        return out

    async def inbound(self, s: Any) -> dict[str, Any]:
        from bench_load import cpu_by_label, cpu_seconds

        a = self.args
        lanes, chains = self.build_transactions()
        errors: list[str] = []
        latencies: list[float] = []

        async def lane(txns: list) -> None:
            for uri, body, header, ids in txns:
                t = time.monotonic()
                async with s.put(_url(self.target.base + uri), data=body,
                                 headers={"Authorization": header, "Content-Type": "application/json"}) as r:
                    answer = await r.json(content_type=None)
                latencies.append(time.monotonic() - t)
                if r.status != 200:
                    errors.append(f"{uri} -> {r.status} {answer}"[:300])
                else:
                    errors.extend(transaction_results_ok(answer, ids))

        async def persisted(room_id: str) -> None:
            deadline = time.monotonic() + a.drain_seconds
            while not await self.visible(s, room_id, chains[room_id][-1]):
                if time.monotonic() > deadline:
                    errors.append(f"{room_id}: last PDU not readable after {a.drain_seconds}s")
                    return
                # Not tighter: each poll costs the server CPU that is counted.
                await asyncio.sleep(0.1)

        pids = self.target.pids()
        spy = PySpy(a.py_spy, a.profile_dir) if a.py_spy and a.profile_phase == "inbound" else None
        if spy is not None:
            from bench_load import process_label

            spy.start(pids, process_label)
        cpu0, by0 = cpu_seconds(pids), cpu_by_label(pids)
        t0 = time.monotonic()
        await asyncio.gather(*(lane(txns) for txns in lanes))
        t_accepted = time.monotonic() - t0
        await asyncio.gather(*(persisted(r) for r in self.rooms if chains[r]))
        t_persisted = time.monotonic() - t0
        cpu = cpu_seconds(self.target.pids()) - cpu0
        if spy is not None:
            spy.stop()
        by_label = {k: round((v - by0.get(k, 0.0)) * 1000 / a.pdus, 3) for k, v in cpu_by_label(self.target.pids()).items()}
        missing = order_errors = 0
        for room_id, ids in chains.items():
            got = await self.read_back(s, room_id, self.fake_of[room_id].user_id)
            missing += len(set(ids) - set(got))
            order_errors += int([e for e in got if e in set(ids)] != [e for e in ids if e in set(got)])
        from bench_load import pct

        return {
            "pdus": a.pdus,
            "transactions": sum(len(lane) for lane in lanes),
            "accepted_pdus_per_s": a.pdus / t_accepted,
            "persisted_pdus_per_s": a.pdus / t_persisted,
            "txn_p50_ms": pct(latencies, 50) * 1000,
            "txn_p99_ms": pct(latencies, 99) * 1000,
            "cpu_ms_per_pdu": cpu * 1000 / a.pdus,
            "pdu_errors": len(errors),
            "missing": missing,
            "order_errors": order_errors,
            "missing_event_requests": sum(f.missing_event_requests for f in self.fakes),
            "state_requests": sum(f.state_requests for f in self.fakes),
            "backfill_requests": sum(f.backfill_requests for f in self.fakes),
            "errors_sample": errors[:3],
            "cpu_ms_per_pdu_by_process": {k: v for k, v in sorted(by_label.items()) if v > 0},
        }

    async def outbound(self, s: Any, mode: str) -> dict[str, Any]:
        """The local user sends ``--outbound`` messages into the first ``--outbound-rooms`` rooms
        (one remote server each: that many destinations)."""
        from bench_load import cpu_by_label, cpu_seconds, pct

        a = self.args
        used = min(a.outbound_rooms, len(self.rooms))
        fakes = list(dict.fromkeys(self.fake_of[room_id] for room_id in self.rooms[:used]))
        for fake in fakes:
            fake.reset_outbound()
            if mode == "drain":
                fake.hold = asyncio.Event()
        tag = uuid.uuid4().hex[:6]
        sent_at: dict[str, float] = {}
        queue = list(range(a.outbound))

        async def sender() -> None:
            while queue:
                i = queue.pop(0)
                bench_id = f"{tag}-{i}"
                room_id = self.rooms[i % used]
                sent_at[bench_id] = time.monotonic()
                await self.client.call(s, "PUT", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/{bench_id}",
                                       self.token, {"msgtype": "m.text", "body": f"outbound {i}", "bench_id": bench_id})

        def received() -> dict[str, float]:
            return {b: t for f in fakes for b, t in f.received.items() if b.startswith(tag + "-")}

        pids = self.target.pids()
        cpu0, by0 = cpu_seconds(pids), cpu_by_label(pids)
        t0 = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(a.senders)))
        t_sent = time.monotonic()
        released = None
        spy = PySpy(a.py_spy, a.profile_dir) if a.py_spy and a.profile_phase == f"outbound_{mode}" else None
        if mode == "drain":
            # Everything is queued in the target's sender: let it drain.
            deadline = time.monotonic() + a.drain_seconds
            while any(f.held_since is None for f in fakes) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if spy is not None:
                from bench_load import process_label

                spy.start(pids, process_label)
            released = time.monotonic()
            for fake in fakes:
                fake.hold.set()
        deadline = time.monotonic() + a.drain_seconds
        while len(received()) < a.outbound and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if spy is not None:
            spy.stop()
        await asyncio.sleep(0.2)  # late duplicates, if any
        cpu = cpu_seconds(self.target.pids()) - cpu0
        by_label = {k: round((v - by0.get(k, 0.0)) * 1000 / a.outbound, 3) for k, v in cpu_by_label(self.target.pids()).items()}
        mine = received()
        last = max(mine.values()) if mine else time.monotonic()
        start = released if released is not None else t0
        txn_count = sum(len(f.txn_ids) for f in fakes)
        txns = [t for f in fakes for t in f.txn_times if t >= start]
        pdus_in_window = sum(1 for t in mine.values() if t >= start)
        delays = [mine[b] - sent_at[b] for b in mine if b in sent_at]
        return {
            "messages": a.outbound,
            "destinations": used,
            "client_send_per_s": a.outbound / (t_sent - t0),
            "transactions": txn_count,
            "txn_per_s": len(txns) / max(last - start, 1e-9),
            "pdus_per_s": pdus_in_window / max(last - start, 1e-9),
            "pdus_per_txn": sum(f.pdus_received for f in fakes) / max(1, txn_count),
            "delay_p50_ms": pct(delays, 50) * 1000,
            "delay_p99_ms": pct(delays, 99) * 1000,
            "cpu_ms_per_pdu": cpu * 1000 / a.outbound,
            "missing": a.outbound - len(mine),
            "duplicates": sum(f.duplicates for f in fakes),
            "edus": sum(f.edus_received for f in fakes),
            "cpu_ms_per_pdu_by_process": {k: v for k, v in sorted(by_label.items()) if v > 0},
        }

    async def run(self) -> dict[str, dict[str, Any]]:
        import aiohttp

        out = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await self.setup(s)
            if self.args.pdus > 0:
                out["inbound"] = await self.inbound(s)
                print(f"   inbound: {out['inbound']}", flush=True)
            if self.args.outbound > 0:
                for mode in self.args.outbound_modes.split(","):
                    out[f"outbound_{mode}"] = await self.outbound(s, mode)
                    print(f"   outbound {mode}: {out[f'outbound_{mode}']}", flush=True)
        return out


def _tls_files(workdir: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    from tests.utils.federation import make_tls_certificate

    cert_path, key_and_cert = make_tls_certificate()
    key_path = os.path.join(workdir, "fake-key.pem")
    with open(key_path, "wb") as f:
        f.write(key_and_cert.split(b"-----BEGIN CERTIFICATE-----")[0])
    return cert_path, key_path


async def bench_target(target: Any, cert_path: str, key_path: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    fakes = [FakeRemote(cert_path, key_path) for _ in range(args.inflight)]
    for fake in fakes:
        await fake.start()
    try:
        result = await FederationBench(target, fakes, args).run()
        unknown: dict[str, int] = {}
        for fake in fakes:
            for k, v in fake.unknown_requests.items():
                unknown[k] = unknown.get(k, 0) + v
        if unknown:
            print(f"   requests the fake servers do not serve: {unknown}", flush=True)
        return result
    finally:
        for fake in fakes:
            await fake.stop()


def report(results: dict[str, dict[str, dict[str, Any]]]) -> int:
    names = list(results)
    phases = {
        "inbound": ["accepted_pdus_per_s", "persisted_pdus_per_s", "txn_p50_ms", "txn_p99_ms", "cpu_ms_per_pdu",
                    "pdu_errors", "missing", "order_errors", "missing_event_requests", "state_requests", "backfill_requests"],
        "outbound_live": ["client_send_per_s", "txn_per_s", "pdus_per_s", "pdus_per_txn", "delay_p50_ms", "delay_p99_ms",
                          "cpu_ms_per_pdu", "missing", "duplicates"],
        "outbound_drain": ["txn_per_s", "pdus_per_s", "pdus_per_txn", "delay_p99_ms", "cpu_ms_per_pdu", "missing", "duplicates"],
    }
    ref = "synapse" if "synapse" in names else None
    for phase, keys in phases.items():
        present = [n for n in names if phase in results[n]]
        if not present:
            continue
        print(f"\n{phase}:")
        header = f"{'metric':<24}" + "".join(f"{n:>18}" for n in present)
        if ref in present and len(present) > 1:
            header += "".join(f"{n.split('-')[0] + '/syn':>18}" for n in present if n != ref)
        print(header)
        for k in keys:
            row = f"{k:<24}" + "".join(f"{results[n][phase][k]:>18.2f}" for n in present)
            if ref in present and len(present) > 1:
                base = results[ref][phase][k]
                row += "".join(f"{results[n][phase][k] / base:>18.2f}" if base else f"{'-':>18}" for n in present if n != ref)
            print(row)
    print("\nCPU ms per PDU by process:")
    for n in names:
        for phase, r in results[n].items():
            print(f"  {n} {phase}: {r['cpu_ms_per_pdu_by_process']}")
    bad = []
    for n in names:
        for phase, r in results[n].items():
            if r.get("missing") or r.get("duplicates") or r.get("order_errors") or r.get("pdu_errors"):
                bad.append(f"{n} {phase}" + (f" {r.get('errors_sample')}" if r.get("errors_sample") else ""))
    if bad:
        print(f"\nCORRECTNESS FAILURE: {bad}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="federation benchmark (inbound PDUs, outbound transactions)")
    p.add_argument("--targets", default="estuary", help="comma list: estuary, synapse")
    p.add_argument("--estuary-layout", default="single", help="single, three or eight (see estuary generate-config)")
    p.add_argument("--synapse-venv", default=os.environ.get("SYNAPSE_VENV"))
    p.add_argument("--room-version", default="10")
    p.add_argument("--pdus", type=int, default=500, help="inbound PDUs in all (0: skip inbound)")
    p.add_argument("--inflight", type=int, default=4,
                   help="remote servers, each in its own room with one transaction in flight at a time (inbound lanes)")
    p.add_argument("--rooms-per-server", type=int, default=1,
                   help="rooms each remote server joins; its transactions interleave their PDU chains")
    p.add_argument("--txn-size", type=int, default=50, help="PDUs per inbound transaction (1-50)")
    p.add_argument("--outbound", type=int, default=200, help="messages sent by the local user (0: skip outbound)")
    p.add_argument("--outbound-rooms", type=int, default=1, help="rooms (= destinations) the outbound messages go to")
    p.add_argument("--outbound-modes", default="live,drain", help="comma list: live, drain")
    p.add_argument("--senders", type=int, default=4, help="concurrent client send requests (outbound)")
    p.add_argument("--drain-seconds", type=float, default=120.0, help="how long to wait for PDUs to land")
    p.add_argument("--keep", action="store_true", help="keep the targets' work directories (logs)")
    p.add_argument("--py-spy", help="py-spy binary: profile the target's processes during --profile-phase")
    p.add_argument("--profile-phase", default="inbound", help="inbound or outbound_drain (with --py-spy)")
    p.add_argument("--profile-dir", default=os.path.join(tempfile.gettempdir(), "bench-federation-profile"),
                   help="where --py-spy writes its collapsed stacks")
    args = p.parse_args()
    if not 1 <= args.txn_size <= MAX_PDUS_PER_TRANSACTION:
        p.error("--txn-size must be 1..50")
    if args.inflight < 1 or args.rooms_per_server < 1:
        p.error("--inflight and --rooms-per-server must be at least 1")

    results: dict[str, dict[str, dict[str, Any]]] = {}
    tls_dir = tempfile.mkdtemp(prefix="bench-fed-tls-")
    cert_path, key_path = _tls_files(tls_dir)
    try:
        for name in args.targets.split(","):
            workdir = tempfile.mkdtemp(prefix=f"bench-fed-{name}-")
            os.chmod(workdir, 0o755)
            if name == "estuary":
                target: Any = make_estuary(workdir, args.estuary_layout, cert_path, args.outbound)
            elif name == "synapse":
                if not args.synapse_venv or not os.path.exists(os.path.join(args.synapse_venv, "bin", "python")):
                    print(f"synapse: skipped (no Synapse venv at {args.synapse_venv!r}; give --synapse-venv)", file=sys.stderr)
                    continue
                target = synapse_federation_target(args.synapse_venv, workdir)
            else:
                raise SystemExit(f"unknown target {name}")
            print(f"== {target.name}: starting", flush=True)
            if args.keep:
                os.environ["KEEP_SYNAPSE_DIR"] = "1"
            target.start()
            try:
                results[target.name] = asyncio.run(bench_target(target, cert_path, key_path, args))
            finally:
                target.stop()
                if args.keep:
                    print(f"   kept {workdir}", flush=True)
                else:
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)
        shutil.rmtree(os.path.dirname(cert_path), ignore_errors=True)
    if not results:
        print("no target ran", file=sys.stderr)
        return 1
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
