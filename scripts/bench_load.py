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
- the same CPU without the built-in router (``estuary router``, which the
  bench sends every request through in every layout; production puts nginx
  there instead), and the router's share separately; the kernel part
  (stime) of the whole;
- bus CPU milliseconds per event (``estuary_bus_cpu_seconds_total`` of every
  instance's /metrics: publish, consume, read-your-writes marks, control),
  requests per event by endpoint, and long-poll wake-ups, wake batches and
  /sync builds per event (Estuary targets);
- with ``--rate R`` the senders send R events per second together (open
  loop) instead of each as fast as it can: below saturation, the CPU per
  event measures the work per event rather than how much CPU the processes
  could grab while syncers re-poll as fast as they are answered;
- correctness: every syncer received every event exactly once, and each
  sender's events in each room in the order sent.

With several targets, ratios are given against ``estuary-single`` (the
one-process layout) when it is among them, else against the last target.
``--runs N`` repeats the whole set N times (targets interleaved) and prints
each run's ratios.

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


def cpu_seconds(pids: list[int], user: bool = True, system: bool = True) -> float:
    """utime + stime (or either) of ``pids``, in seconds."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += ((int(fields[11]) if user else 0) + (int(fields[12]) if system else 0)) / CLK_TCK
        except OSError:
            continue
    return total


def pids_named(comm: str) -> list[int]:
    """Every process whose executable name (``/proc/PID/comm``) is ``comm``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(entry))
            except OSError:
                continue
    return out


def machine_busy_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


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


def scrape(urls: list[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sum over ``urls`` (instances' /metrics) of every counter sample and
    histogram count, by name and labels."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                text = r.read().decode()
        except OSError as e:
            print(f"   (could not read {url}: {e})", file=sys.stderr)
            continue
        for family in text_string_to_metric_families(text):
            if family.type not in ("counter", "histogram"):
                continue
            for sample in family.samples:
                if not sample.name.endswith(("_total", "_count")):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                out[key] = out.get(key, 0.0) + sample.value
    return out


def counter_deltas(before: dict, after: dict, name: str, label: Optional[str] = None) -> dict[str, float]:
    """``after - before`` of counter ``name``, summed per value of ``label`` (``""`` for all)."""
    out: dict[str, float] = {}
    for (n, labels), value in after.items():
        if n != name:
            continue
        key = dict(labels).get(label, "") if label else ""
        out[key] = out.get(key, 0.0) + value - before.get((n, labels), 0.0)
    return out


# -- targets ----------------------------------------------------------------


class EstuaryTarget:
    def __init__(self, layout: str, workdir: str, extra_config: Optional[dict] = None) -> None:
        from tests.utils.services import dsn_for_database, postgres_admin_dsn

        self.extra_config = extra_config or {}
        from workers.embedded import free_port

        self.layout = layout
        self.name = f"estuary-{layout}"
        self.workdir = workdir
        self.dbname = "bench_" + uuid.uuid4().hex[:10]
        self.admin_dsn = postgres_admin_dsn()
        self.dsn = dsn_for_database(self.dbname)
        # A private redis-server per target (started in start()): a shared
        # Redis database is flushed and written by whatever else runs a
        # bench or a stack on it at the same time (other helpers' benches
        # on db 14 made entries collide: "position N is not above the last
        # entry"). It runs outside the stack's process tree, so, as the
        # shared one was, it is not in the CPU figures.
        self.redis_server: Any = None
        self.redis = ""
        self.port = free_port()
        self.secret = "bench-shared-secret-" + uuid.uuid4().hex
        self.process: Optional[subprocess.Popen] = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
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
        from workers.embedded import EmbeddedRedis

        self.redis_server = EmbeddedRedis(os.path.join(self.workdir, "redis"))
        self.redis_server.start()
        self.redis = self.redis_server.url
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
        self.metrics_urls = [f"http://{listen}/metrics" for listen in self.instances]
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
        if self.redis_server is not None:
            self.redis_server.stop()
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
        conn.close()


class SynapseTarget:
    """Synapse in one process (``extra_config`` merged into its homeserver.yaml)."""

    def __init__(self, venv: str, workdir: str, extra_config: Optional[dict] = None) -> None:
        from synapse_peer import SynapsePeer
        from tests.utils.services import dsn_for_database

        self.name = "synapse"
        self.peer = SynapsePeer(venv, os.path.join(workdir, "synapse"), dsn_for_database, server_name="localhost",
                                extra_config=extra_config)

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

    async def sender(self, s: aiohttp.ClientSession, idx: int, n: int, interval: float = 0.0, offset: float = 0.0) -> None:
        token = self.tokens[idx]
        start = time.monotonic() + offset
        for i in range(n):
            if interval:
                # Open loop: send i is due at start + i * interval, however slow the last one was.
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            room = self.rooms[(idx + i) % len(self.rooms)]
            bid = uuid.uuid4().hex
            # Recorded before the request so a fast sync never sees an unknown id.
            self.sent[bid] = (time.monotonic(), room, self.user_ids[idx], i)
            t0 = time.monotonic()
            await self.call(s, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{bid}", token, {"msgtype": "m.text", "body": f"message {i}", "bench_id": bid})
            self.send_latency.append(time.monotonic() - t0)

    async def run(self, pids_fn, metrics_urls: Optional[list[str]] = None) -> dict[str, Any]:
        a = self.args
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            await self.setup(s)
            syncer_ids = list(range(min(a.syncers, len(self.tokens))))
            sender_ids = [len(self.tokens) - 1 - i for i in range(min(a.senders, len(self.tokens)))]
            primes = await asyncio.gather(*(self.call(s, "GET", "/_matrix/client/v3/sync", self.tokens[i], params={"timeout": "0", "filter": '{"room":{"timeline":{"limit":1}}}'}) for i in syncer_ids))
            expected = len(sender_ids) * a.messages
            sync_tasks = [asyncio.create_task(self.syncer(s, i, p["next_batch"], expected)) for i, p in zip(syncer_ids, primes)]
            # /metrics is read outside the CPU window (producing it costs CPU too).
            loop = asyncio.get_running_loop()
            scraped0 = await loop.run_in_executor(None, scrape, metrics_urls) if metrics_urls else {}
            pids = pids_fn()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            client0 = time.process_time()
            pg0 = cpu_seconds(pids_named("postgres"))
            busy0, _ = machine_busy_seconds()
            sys0 = cpu_seconds(pids, user=False)
            by_label0 = cpu_by_label(pids)
            # --rate: the senders together send that many events per second (staggered).
            interval = len(sender_ids) / a.rate if a.rate else 0.0
            await asyncio.gather(*(self.sender(s, i, a.messages, interval, k * interval / len(sender_ids))
                                   for k, i in enumerate(sender_ids)))
            send_elapsed = time.monotonic() - t0
            self.sending_done = True
            await asyncio.gather(*sync_tasks)
            cpu = cpu_seconds(pids_fn()) - cpu0
            client_cpu, elapsed = time.process_time() - client0, time.monotonic() - t0
            pg_cpu = cpu_seconds(pids_named("postgres")) - pg0
            busy = machine_busy_seconds()[0] - busy0
            system = cpu_seconds(pids_fn(), user=False) - sys0
            by_label = {k: (v - by_label0.get(k, 0.0)) * 1000 / expected for k, v in cpu_by_label(pids_fn()).items()}
            scraped1 = await loop.run_in_executor(None, scrape, metrics_urls) if metrics_urls else {}
        delivery = [ts[0] - self.sent[bid][0] for got in self.received for bid, ts in got.items()]
        missing = sum(expected - len(got) for got in self.received)
        dupes = sum(len(ts) - 1 for got in self.received for ts in got.values())
        bus = {op: round(v * 1000 / expected, 3) for op, v in
               sorted(counter_deltas(scraped0, scraped1, "estuary_bus_cpu_seconds_total", "op").items())}
        requests = {ep: round(v / expected, 2) for ep, v in
                    sorted(counter_deltas(scraped0, scraped1, "estuary_http_requests_total", "endpoint").items()) if v}

        db = {name: round(v / expected, 2) for name, v in
              sorted(counter_deltas(scraped0, scraped1, "estuary_db_transaction_duration_seconds_count", "name").items(),
                     key=lambda kv: -kv[1]) if v}

        def per_event(name: str) -> float:
            return sum(counter_deltas(scraped0, scraped1, name).values()) / expected if metrics_urls else float("nan")

        router = by_label.get("router", 0.0)
        return {
            "events": expected,
            "send_rate": expected / send_elapsed,
            "send_p50_ms": pct(self.send_latency, 50) * 1000,
            "send_p99_ms": pct(self.send_latency, 99) * 1000,
            "deliver_p50_ms": pct(delivery, 50) * 1000,
            "deliver_p99_ms": pct(delivery, 99) * 1000,
            "cpu_ms_per_event": cpu * 1000 / expected,
            "cpu_ms_no_router": cpu * 1000 / expected - router,
            "router_cpu_ms": router,
            "kernel_cpu_ms": system * 1000 / expected,
            # The load generator's own CPU (one Python process): near 1.0 of
            # a core, it and not the server bounds rate and latency.
            "client_cores": client_cpu / elapsed,
            # Outside the server's process tree: PostgreSQL's backends (every
            # database of the server) and the whole machine, in cores busy.
            "postgres_cpu_ms": pg_cpu * 1000 / expected,
            "machine_busy_cores": busy / elapsed,
            "bus_cpu_ms_per_event": sum(bus.values()) if metrics_urls else float("nan"),
            "wakeups_per_event": per_event("estuary_sync_wakeups_total"),
            "wake_batches_per_event": per_event("estuary_sync_wake_batches_total"),
            "sync_builds_per_event": per_event("estuary_sync_builds_total"),
            "bus_cpu_ms_by_op": bus,
            "requests_per_event": requests,
            "db_transactions_per_event": db,
            "missing": missing,
            "duplicates": dupes,
            "order_errors": self.order_errors,
            # Per process (PostgreSQL and Redis are outside the tree: not counted).
            "cpu_ms_per_event_by_process": {k: round(v, 2) for k, v in sorted(by_label.items()) if v > 0},
        }


def run_target(name: str, args: argparse.Namespace) -> Optional[dict[str, Any]]:
    workdir = tempfile.mkdtemp(prefix=f"bench-{name}-")
    os.chmod(workdir, 0o755)
    if name.startswith("estuary-"):
        sync_section = {k: v for k, v in (("wake_batch_ms", args.wake_batch_ms), ("min_interval_ms", args.sync_min_interval_ms))
                        if v is not None}
        target: Any = EstuaryTarget(name.split("-", 1)[1], workdir, {"sync": sync_section} if sync_section else None)
    elif name == "synapse":
        if not args.synapse_venv:
            print("synapse: skipped (no --synapse-venv)", file=sys.stderr)
            return None
        target = SynapseTarget(args.synapse_venv, workdir)
    else:
        raise SystemExit(f"unknown target {name}")
    print(f"== {name}: starting", flush=True)
    failed = False
    try:
        target.start()
        load = Load(target.base, target.secret, args)
        result = asyncio.run(load.run(target.pids, getattr(target, "metrics_urls", None)))
        failed = result["missing"] or result["duplicates"] or result["order_errors"]
    except BaseException:
        failed = True
        raise
    finally:
        target.stop()
        log = os.path.join(workdir, "stack.log")
        if failed and os.path.exists(log):
            kept = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1]
            shutil.copyfile(log, kept)
            print(f"   {name} failed: its log is kept in {kept}", file=sys.stderr, flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"   {result}", flush=True)
    return result


KEYS = ["send_rate", "send_p50_ms", "send_p99_ms", "deliver_p50_ms", "deliver_p99_ms", "cpu_ms_per_event",
        "cpu_ms_no_router", "router_cpu_ms", "kernel_cpu_ms", "client_cores", "postgres_cpu_ms", "machine_busy_cores", "bus_cpu_ms_per_event", "wakeups_per_event", "wake_batches_per_event",
        "sync_builds_per_event", "missing", "duplicates", "order_errors"]


def report(results: dict[str, dict[str, Any]], run: int) -> list[str]:
    """Print one run's table; returns the targets that failed the correctness checks."""
    names = list(results)
    print(f"\n-- run {run}")
    print(f"{'metric':<24}" + "".join(f"{n:>16}" for n in names))
    for k in KEYS:
        print(f"{k:<24}" + "".join(f"{results[n][k]:>16.2f}" for n in names))
    if len(names) > 1:
        ref = "estuary-single" if "estuary-single" in names else names[-1]
        print(f"ratios against {ref}:")
        for n in names:
            if n == ref:
                continue
            r, b = results[n], results[ref]
            print(f"  {n}/{ref}: cpu/event x{r['cpu_ms_per_event'] / b['cpu_ms_per_event']:.2f}, "
                  f"without router x{r['cpu_ms_no_router'] / b['cpu_ms_no_router']:.2f}, "
                  f"deliver p99 x{r['deliver_p99_ms'] / b['deliver_p99_ms']:.2f}, "
                  f"send rate x{r['send_rate'] / b['send_rate']:.2f}")
    print("CPU ms per event by process:")
    for n in names:
        print(f"  {n}: {results[n]['cpu_ms_per_event_by_process']}")
    print("bus CPU ms per event by op:")
    for n in names:
        print(f"  {n}: {results[n].get('bus_cpu_ms_by_op')}")
    print("requests per event by endpoint (instances):")
    for n in names:
        print(f"  {n}: {results[n].get('requests_per_event')}")
    print("database transactions per event by name (top 12):")
    for n in names:
        db = results[n].get("db_transactions_per_event") or {}
        print(f"  {n}: total {sum(db.values()):.2f} {dict(list(db.items())[:12])}")
    return [n for n in names if results[n]["missing"] or results[n]["duplicates"] or results[n]["order_errors"]]


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
    p.add_argument("--rate", type=float, default=0.0,
                   help="events per second for all senders together (open loop); 0: each sender sends as fast as it can")
    p.add_argument("--runs", type=int, default=1, help="repeat the set of targets this many times")
    p.add_argument("--wake-batch-ms", type=int, default=None, help="set sync.wake_batch_ms on Estuary targets (default: the config default)")
    p.add_argument("--sync-min-interval-ms", type=int, default=None,
                   help="set sync.min_interval_ms on Estuary targets (default: the config default)")
    args = p.parse_args()

    bad: list[str] = []
    all_runs: list[dict[str, dict[str, Any]]] = []
    for run in range(1, args.runs + 1):
        results: dict[str, dict[str, Any]] = {}
        for name in args.targets.split(","):
            result = run_target(name, args)
            if result is not None:
                results[name] = result
        all_runs.append(results)
        bad += report(results, run)
    if args.runs > 1 and "estuary-single" in all_runs[0]:
        print("\nsummary over runs (multi/single cpu per event; without router):")
        for n in all_runs[0]:
            if n == "estuary-single":
                continue
            ratios = [r[n]["cpu_ms_per_event"] / r["estuary-single"]["cpu_ms_per_event"] for r in all_runs]
            nr = [r[n]["cpu_ms_no_router"] / r["estuary-single"]["cpu_ms_no_router"] for r in all_runs]
            print(f"  {n}: " + " ".join(f"x{x:.2f}" for x in ratios) + f"  (median x{statistics.median(ratios):.2f});"
                  f" without router: " + " ".join(f"x{x:.2f}" for x in nr) + f" (median x{statistics.median(nr):.2f})")
    if bad:
        print(f"\nCORRECTNESS FAILURE: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
