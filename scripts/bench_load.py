#!/usr/bin/env python
"""Load benchmark: senders and long-polling syncers against a homeserver.

    .venv/bin/python scripts/bench_load.py --targets estuary-single,estuary-eight,synapse \
        --users 20 --rooms 10 --senders 8 --syncers 8 --messages 50 \
        --synapse-venv /work/synapse-venv

For each target it starts the server(s) on loopback (Estuary with ``estuary
stack`` on the shared PostgreSQL and Redis; Synapse from a venv with
``scripts/synapse_peer.py``), registers users with shared-secret
registration, creates rooms that every user joins, primes K syncers with an
initial /sync, then S senders each send M messages into the rooms while the
syncers long-poll. It reports:

- send rate, p50/p99 send latency;
- p50/p99 send→sync delivery latency (client clock, one machine);
- server CPU milliseconds per event (utime+stime of every server process,
  read from /proc over the send phase, divided by events sent);
- correctness: every syncer received every event exactly once, and each
  sender's events in each room in the order sent.

The figures of all targets are printed side by side with ratios. The load
generator runs in this process (asyncio + aiohttp), outside the servers'
CPU accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import aiohttp  # noqa: E402  (installed with matrix-nio, the test extra)

from workers.register_user import registration_mac  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting ---------------------------------------------------------


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except OSError:
            continue
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            continue
    return total


def process_label(pid: int) -> str:
    """``--instance NAME`` of an Estuary child, ``router``, or the executable's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return str(pid)
    if "--instance" in argv and argv.index("--instance") + 1 < len(argv):
        return argv[argv.index("--instance") + 1]
    if "router" in argv:
        return "router"
    if "stack" in argv:
        return "supervisor"
    return os.path.basename(argv[0]) if argv else str(pid)


def cpu_by_label(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far per process label (see :func:`process_label`)."""
    out: dict[str, float] = {}
    for pid in pids:
        label = process_label(pid)
        out[label] = out.get(label, 0.0) + cpu_seconds([pid])
    return out


# -- targets ----------------------------------------------------------------


class EstuaryTarget:
    def __init__(self, layout: str, workdir: str, extra_config: Optional[dict] = None) -> None:
        from tests.utils.services import dsn_for_database, postgres_admin_dsn, redis_url

        self.extra_config = extra_config or {}
        from workers.embedded import free_port

        self.layout = layout
        self.name = f"estuary-{layout}"
        self.workdir = workdir
        self.dbname = "bench_" + uuid.uuid4().hex[:10]
        self.admin_dsn = postgres_admin_dsn()
        self.dsn = dsn_for_database(self.dbname)
        self.redis = redis_url().rsplit("/", 1)[0] + "/14"
        self.port = free_port()
        self.secret = "bench-shared-secret-" + uuid.uuid4().hex
        self.process: Optional[subprocess.Popen] = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import re

        import psycopg2
        import redis
        import yaml
        from psycopg2 import sql

        from workers.embedded import free_port
        from workers.generate import generate_config

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Identifier(self.dbname)))
        conn.close()
        redis.Redis.from_url(self.redis).flushdb()
        cfg = yaml.safe_load(generate_config("localhost", self.layout))
        for inst in cfg["instances"].values():
            inst["listen"] = f"127.0.0.1:{free_port()}"
            inst["replication_listen"] = f"127.0.0.1:{free_port()}"
        cfg["router"]["listen"] = f"127.0.0.1:{self.port}"
        cfg["data_dir"] = os.path.join(self.workdir, "data")
        cfg["database"] = {"dsn": self.dsn, "pool_size": 10}
        cfg["redis"] = {"url": self.redis}
        cfg["registration"] = {"enable_registration": False, "registration_shared_secret": self.secret}
        cfg["password_policy"] = {"bcrypt_rounds": 4}
        cfg["rate_limits"] = {"enabled": False}
        cfg.update(self.extra_config)
        path = os.path.join(self.workdir, "homeserver.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        log = open(os.path.join(self.workdir, "stack.log"), "ab")
        env = dict(os.environ, PYTHONPATH=ROOT, ESTUARY_LOG_LEVEL="WARNING")
        self.process = subprocess.Popen([sys.executable, "-m", "workers", "stack", "--config", path], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.instances = [i["listen"] for i in cfg["instances"].values()]
        _wait_http(self.base + "/_estuary/router", lambda body: all(__import__("json").loads(body)["instances"].values()), 120)

    def pids(self) -> list[int]:
        # The supervisor and the router are part of the deployment's cost.
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
        conn.close()


class SynapseTarget:
    def __init__(self, venv: str, workdir: str) -> None:
        from synapse_peer import SynapsePeer
        from tests.utils.services import dsn_for_database

        self.name = "synapse"
        self.peer = SynapsePeer(venv, os.path.join(workdir, "synapse"), dsn_for_database, server_name="localhost")

    @property
    def base(self) -> str:
        return self.peer.base

    @property
    def secret(self) -> str:
        return self.peer.shared_secret

    def start(self) -> None:
        self.peer.start()

    def pids(self) -> list[int]:
        return process_tree(self.peer.pid) if self.peer.pid else []

    def stop(self) -> None:
        self.peer.stop()


def _wait_http(url: str, ok, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and ok(r.read()):
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


# -- the load ---------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


class Load:
    def __init__(self, base: str, secret: str, args: argparse.Namespace) -> None:
        self.base = base
        self.secret = secret
        self.args = args
        self.tokens: list[str] = []
        self.user_ids: list[str] = []
        self.rooms: list[str] = []
        self.sent: dict[str, tuple[float, str, str, int]] = {}  # id -> (t_sent, room, sender, seq)
        self.send_latency: list[float] = []
        self.received: list[dict[str, list[float]]] = []
        self.order_errors = 0
        self.sending_done = False

    async def call(self, s: aiohttp.ClientSession, method: str, path: str, token: Optional[str] = None, body: Any = None, params: Any = None, timeout: float = 60) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in range(20):
            async with s.request(method, self.base + path, json=body, headers=headers, params=params, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                data = await r.json(content_type=None)
                if r.status == 429:
                    await asyncio.sleep(data.get("retry_after_ms", 100) / 1000)
                    continue
                if r.status != 200:
                    raise RuntimeError(f"{method} {path} -> {r.status} {data}")
                return data
        raise RuntimeError(f"{method} {path}: still rate limited")

    async def register(self, s: aiohttp.ClientSession, name: str) -> tuple[str, str]:
        nonce = (await self.call(s, "GET", "/_synapse/admin/v1/register"))["nonce"]
        password = "bench password " + name
        body = {"nonce": nonce, "username": name, "password": password, "admin": False, "mac": registration_mac(self.secret, nonce, name, password, False)}
        data = await self.call(s, "POST", "/_synapse/admin/v1/register", body=body)
        return data["user_id"], data["access_token"]

    async def setup(self, s: aiohttp.ClientSession) -> None:
        a = self.args
        prefix = "b" + uuid.uuid4().hex[:6]
        sem = asyncio.Semaphore(8)

        async def reg(i: int) -> tuple[str, str]:
            async with sem:
                return await self.register(s, f"{prefix}u{i}")

        users = await asyncio.gather(*(reg(i) for i in range(a.users)))
        self.user_ids = [u for u, _ in users]
        self.tokens = [t for _, t in users]
        for r in range(a.rooms):
            room = await self.call(s, "POST", "/_matrix/client/v3/createRoom", self.tokens[0], {"preset": "public_chat", "name": f"bench {r}"})
            self.rooms.append(room["room_id"])

        async def join(tok: str, room: str) -> None:
            async with sem:
                await self.call(s, "POST", f"/_matrix/client/v3/join/{room}", tok, {})

        await asyncio.gather(*(join(t, r) for t in self.tokens[1:] for r in self.rooms))

    async def syncer(self, s: aiohttp.ClientSession, idx: int, since: str, expected: int) -> None:
        token = self.tokens[idx]
        got: dict[str, list[float]] = {}
        self.received.append(got)
        last_seq: dict[tuple[str, str], int] = {}
        filt = '{"room":{"timeline":{"limit":1000},"state":{"lazy_load_members":true},"ephemeral":{"types":[]}},"presence":{"types":[]},"account_data":{"types":[]}}'
        deadline = None
        while True:
            if self.sending_done and deadline is None:
                deadline = time.monotonic() + self.args.drain_seconds
            if deadline is not None and (time.monotonic() > deadline or len(got) >= expected):
                return
            data = await self.call(s, "GET", "/_matrix/client/v3/sync", token, params={"since": since, "timeout": "5000", "filter": filt}, timeout=120)
            now = time.monotonic()
            since = data["next_batch"]
            for room_id, room in data.get("rooms", {}).get("join", {}).items():
                for ev in room.get("timeline", {}).get("events", []):
                    bid = ev.get("content", {}).get("bench_id")
                    if bid is None or bid not in self.sent:
                        continue
                    got.setdefault(bid, []).append(now)
                    _, _, sender, seq = self.sent[bid]
                    key = (room_id, sender)
                    if seq < last_seq.get(key, -1):
                        self.order_errors += 1
                    last_seq[key] = seq

    async def sender(self, s: aiohttp.ClientSession, idx: int, n: int) -> None:
        token = self.tokens[idx]
        for i in range(n):
            room = self.rooms[(idx + i) % len(self.rooms)]
            bid = uuid.uuid4().hex
            # Recorded before the request so a fast sync never sees an unknown id.
            self.sent[bid] = (time.monotonic(), room, self.user_ids[idx], i)
            t0 = time.monotonic()
            await self.call(s, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{bid}", token, {"msgtype": "m.text", "body": f"message {i}", "bench_id": bid})
            self.send_latency.append(time.monotonic() - t0)

    async def run(self, pids_fn) -> dict[str, Any]:
        a = self.args
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            await self.setup(s)
            syncer_ids = list(range(min(a.syncers, len(self.tokens))))
            sender_ids = [len(self.tokens) - 1 - i for i in range(min(a.senders, len(self.tokens)))]
            primes = await asyncio.gather(*(self.call(s, "GET", "/_matrix/client/v3/sync", self.tokens[i], params={"timeout": "0", "filter": '{"room":{"timeline":{"limit":1}}}'}) for i in syncer_ids))
            expected = len(sender_ids) * a.messages
            sync_tasks = [asyncio.create_task(self.syncer(s, i, p["next_batch"], expected)) for i, p in zip(syncer_ids, primes)]
            pids = pids_fn()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            by_label0 = cpu_by_label(pids)
            await asyncio.gather(*(self.sender(s, i, a.messages) for i in sender_ids))
            send_elapsed = time.monotonic() - t0
            self.sending_done = True
            await asyncio.gather(*sync_tasks)
            cpu = cpu_seconds(pids_fn()) - cpu0
            by_label = {k: (v - by_label0.get(k, 0.0)) * 1000 / expected for k, v in cpu_by_label(pids_fn()).items()}
        delivery = [ts[0] - self.sent[bid][0] for got in self.received for bid, ts in got.items()]
        missing = sum(expected - len(got) for got in self.received)
        dupes = sum(len(ts) - 1 for got in self.received for ts in got.values())
        return {
            "events": expected,
            "send_rate": expected / send_elapsed,
            "send_p50_ms": pct(self.send_latency, 50) * 1000,
            "send_p99_ms": pct(self.send_latency, 99) * 1000,
            "deliver_p50_ms": pct(delivery, 50) * 1000,
            "deliver_p99_ms": pct(delivery, 99) * 1000,
            "cpu_ms_per_event": cpu * 1000 / expected,
            "missing": missing,
            "duplicates": dupes,
            "order_errors": self.order_errors,
            # Per process (PostgreSQL and Redis are outside the tree: not counted).
            "cpu_ms_per_event_by_process": {k: round(v, 2) for k, v in sorted(by_label.items()) if v > 0},
        }


def main() -> int:
    p = argparse.ArgumentParser(description="send/sync load benchmark")
    p.add_argument("--targets", default="estuary-single", help="comma list: estuary-single, estuary-three, estuary-eight, synapse")
    p.add_argument("--synapse-venv", default=os.environ.get("SYNAPSE_VENV"))
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--senders", type=int, default=8)
    p.add_argument("--syncers", type=int, default=8)
    p.add_argument("--messages", type=int, default=50, help="per sender")
    p.add_argument("--drain-seconds", type=float, default=30.0)
    args = p.parse_args()

    results: dict[str, dict[str, Any]] = {}
    for name in args.targets.split(","):
        workdir = tempfile.mkdtemp(prefix=f"bench-{name}-")
        os.chmod(workdir, 0o755)
        if name.startswith("estuary-"):
            target: Any = EstuaryTarget(name.split("-", 1)[1], workdir)
        elif name == "synapse":
            if not args.synapse_venv:
                print("synapse: skipped (no --synapse-venv)", file=sys.stderr)
                continue
            target = SynapseTarget(args.synapse_venv, workdir)
        else:
            raise SystemExit(f"unknown target {name}")
        print(f"== {name}: starting", flush=True)
        target.start()
        try:
            load = Load(target.base, target.secret, args)
            results[name] = asyncio.run(load.run(target.pids))
        finally:
            target.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"   {results[name]}", flush=True)

    keys = ["send_rate", "send_p50_ms", "send_p99_ms", "deliver_p50_ms", "deliver_p99_ms", "cpu_ms_per_event", "missing", "duplicates", "order_errors"]
    names = list(results)
    print()
    print(f"{'metric':<18}" + "".join(f"{n:>16}" for n in names))
    for k in keys:
        print(f"{k:<18}" + "".join(f"{results[n][k]:>16.2f}" for n in names))
    if len(names) > 1:
        ref = names[-1]
        print(f"\nratios against {ref}:")
        for n in names[:-1]:
            print(f"  {n}: cpu/event x{results[n]['cpu_ms_per_event'] / results[ref]['cpu_ms_per_event']:.2f}, "
                  f"deliver p99 x{results[n]['deliver_p99_ms'] / results[ref]['deliver_p99_ms']:.2f}, "
                  f"send rate x{results[n]['send_rate'] / results[ref]['send_rate']:.2f}")
    print("\nCPU ms per event by process:")
    for n in names:
        print(f"  {n}: {results[n]['cpu_ms_per_event_by_process']}")
    bad = [n for n in names if results[n]["missing"] or results[n]["duplicates"] or results[n]["order_errors"]]
    if bad:
        print(f"\nCORRECTNESS FAILURE: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
