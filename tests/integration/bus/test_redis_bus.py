"""The bus against a real Redis (run with ``--reactor=asyncio``).

Most tests use the shared test Redis (a logical database of their own);
the restart tests spawn a private ``redis-server`` so they can kill it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from bus import GAP_EPOCH, GAP_MISSED, Backoff, Bus, BusUnavailable, ShardId, stream_key
from tests.utils.services import redis_test_url

EV0 = ShardId("events", 0)
KEY0 = stream_key("events", 0)
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _reactor():
    from twisted.internet import reactor

    return reactor


async def wait_for(predicate, timeout=5.0, what="condition"):
    """Poll ``predicate`` every 10 ms until true; fail after ``timeout`` seconds."""
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


class Recorder:
    """Collects entries and gaps delivered by a subscription."""

    def __init__(self):
        self.entries = []
        self.gaps = []

    def on_entry(self, entry):
        self.entries.append((entry.position, entry.prev, dict(entry.payload)))

    def on_gap(self, gap):
        self.gaps.append((gap.after, gap.before, gap.reason))

    def positions(self):
        return [e[0] for e in self.entries]


FAST = dict(
    backoff=Backoff(initial=0.02, factor=2, maximum=0.2, jitter=lambda: 1.0),
    block_seconds=0.2,
    epoch_check_interval=0.2,
)


class RedisBusTests(TestCase):
    def setUp(self):
        self.url = redis_test_url(self)
        self.sync = redis.Redis.from_url(self.url)
        self.addCleanup(self.sync.close)

    def make_bus(self, url=None, **kwargs):
        bus = Bus.from_url(url or self.url, _reactor(), **{**FAST, **kwargs})
        self.addCleanup(bus.close)
        return bus

    async def test_wire_format(self):
        """Entries land under the hash-tagged key with IDs <position>-0 and v/prev/data fields."""
        bus = self.make_bus()
        for p in (1, 2, 5):
            await bus.publish("events", 0, p, {"p": p})
        rows = self.sync.xrange(KEY0)
        self.assertEqual([r[0] for r in rows], [b"1-0", b"2-0", b"5-0"])
        self.assertEqual(rows[0][1], {b"v": b"1", b"data": b'{"p":1}'})
        self.assertEqual(rows[2][1], {b"v": b"1", b"prev": b"2", b"data": b'{"p":5}'})

    async def test_tail_from_position(self):
        """A subscription delivers entries after its position, then live ones."""
        bus = self.make_bus()
        for p in (1, 2, 5):
            await bus.publish("events", 0, p, {"p": p})
        rec = Recorder()
        sub = bus.subscribe({EV0: 1}, rec.on_entry, rec.on_gap)
        await wait_for(lambda: rec.positions() == [2, 5], what="backlog")
        await bus.publish("events", 0, 9, {"p": 9})
        await wait_for(lambda: rec.positions() == [2, 5, 9], what="live entry")
        self.assertEqual(rec.gaps, [])
        self.assertEqual(sub.positions, {EV0: 9})

    async def test_trimmed_stream(self):
        """A consumer older than the oldest kept entry gets a gap, then the rest."""
        bus = self.make_bus()
        for p in range(1, 11):
            await bus.publish("events", 0, p, {})
        self.sync.xtrim(KEY0, maxlen=3, approximate=False)
        rec = Recorder()
        bus.subscribe({EV0: 2}, rec.on_entry, rec.on_gap)
        await wait_for(lambda: rec.positions() == [8, 9, 10], what="entries")
        self.assertEqual(rec.gaps, [(2, 8, GAP_MISSED)])

    async def test_approximate_maxlen(self):
        """Publishing applies approximate MAXLEN trimming."""
        bus = self.make_bus(maxlen=10)
        for p in range(1, 400):
            await bus.publish("events", 0, p, {})
        length = self.sync.xlen(KEY0)
        self.assertGreaterEqual(length, 10)
        self.assertLess(length, 399)

    async def test_flush_mid_stream(self):
        """FLUSHDB while tailing a quiet shard is reported as an epoch gap."""
        bus = self.make_bus()
        rec = Recorder()
        bus.subscribe({EV0: 0}, rec.on_entry, rec.on_gap)
        await bus.publish("events", 0, 1, {})
        await wait_for(lambda: rec.positions() == [1], what="first entry")
        self.sync.flushdb()
        await wait_for(lambda: rec.gaps, what="epoch gap")
        self.assertEqual(rec.gaps, [(1, None, GAP_EPOCH)])
        await bus.publish("events", 0, 2, {})
        await wait_for(lambda: rec.positions() == [1, 2], what="entry after flush")
        self.assertEqual(len(rec.gaps), 1)

    async def test_dead_consumer_entry_redelivered(self):
        """An entry whose consumer dies before acking is redelivered to another consumer."""
        bus = self.make_bus()
        hung = []

        def stuck(entry):
            d = Deferred()
            hung.append((entry.position, d))
            return d

        dead = bus.consume_group([EV0], "g", "dead", stuck, claim_idle=0.3, claim_interval=0.1)
        await bus.publish("events", 0, 1, {"job": 1})
        await wait_for(lambda: hung, what="delivery to the doomed consumer")
        handled = []
        bus.consume_group([EV0], "g", "alive", lambda e: handled.append(e.position),
                          claim_idle=0.3, claim_interval=0.1)
        await bus.publish("events", 0, 2, {"job": 2})
        await wait_for(lambda: sorted(handled) == [1, 2], what="redelivery")
        self.assertEqual(self.sync.xpending(KEY0, "g")["pending"], 0)
        hung[0][1].callback(None)  # let the abandoned loop finish so close() can stop it
        await dead.stop()

    async def test_group_flush_mid_stream(self):
        """FLUSHDB under a blocked group consumer: the group is recreated, one gap is reported."""
        bus = self.make_bus()
        handled, gaps = [], []
        bus.consume_group([EV0], "g", "c", lambda e: handled.append(e.position),
                          lambda g: gaps.append(g.reason), claim_idle=5)
        await bus.publish("events", 0, 1, {})
        await wait_for(lambda: handled == [1], what="first entry")
        self.sync.flushdb()
        await wait_for(lambda: gaps, what="gap after flush")
        await bus.publish("events", 0, 2, {})
        await wait_for(lambda: handled == [1, 2], what="entry after flush")
        self.assertEqual(gaps, [GAP_EPOCH])

    async def test_group_reads_own_pending_after_restart(self):
        """A restarted consumer handles its own unacknowledged entries first."""
        bus = self.make_bus()
        self.sync.xgroup_create(KEY0, "g", id="0", mkstream=True)
        await bus.publish("events", 0, 1, {})
        # Deliver entry 1 to consumer "c" without acknowledging it.
        self.sync.xreadgroup("g", "c", {KEY0: ">"})
        handled = []
        bus.consume_group([EV0], "g", "c", lambda e: handled.append(e.position), claim_idle=3600)
        await wait_for(lambda: handled == [1], what="pending entry")
        self.assertEqual(self.sync.xpending(KEY0, "g")["pending"], 0)

    async def test_ping(self):
        """ping() answers on a live server and fails with BusUnavailable on a dead port."""
        bus = self.make_bus()
        await bus.ping()
        dead = self.make_bus(url=f"redis://127.0.0.1:{free_port()}/0")
        with self.assertRaises(BusUnavailable):
            await dead.ping()
        with self.assertRaises(BusUnavailable):
            await dead.connect(timeout=0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A throwaway redis-server without persistence, on a free port."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="estuary-redis-")
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                c = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                c.ping()
                c.close()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.01)  # set-up only: waiting for a child process to listen

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RestartTests(TestCase):
    def setUp(self):
        if not os.path.exists(REDIS_SERVER):
            raise SkipTest("redis-server not installed")
        self.server = PrivateRedis()
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.bus = Bus.from_url(self.server.url, _reactor(), **FAST)
        self.addCleanup(self.bus.close)

    async def test_restart_mid_stream(self):
        """Redis restarted empty mid-stream: publisher retries, consumer reports an epoch gap."""
        rec = Recorder()
        self.bus.subscribe({EV0: 0}, rec.on_entry, rec.on_gap)
        await self.bus.publish("events", 0, 1, {})
        await wait_for(lambda: rec.positions() == [1], what="first entry")
        self.server.stop()
        published = self.bus.publish("events", 0, 2, {})
        await deferLater(_reactor(), 0.1, lambda: None)
        self.assertFalse(published.called)
        self.server.start()
        await published
        await wait_for(lambda: rec.positions() == [1, 2], timeout=10, what="entry after restart")
        self.assertEqual(rec.gaps, [(1, None, GAP_EPOCH)])

    async def test_group_survives_restart(self):
        """A consumer group is recreated after Redis restarts empty and keeps working."""
        handled, gaps = [], []
        self.bus.consume_group([EV0], "g", "c", lambda e: handled.append(e.position),
                               lambda g: gaps.append(g.reason), claim_idle=5)
        await self.bus.publish("events", 0, 1, {})
        await wait_for(lambda: handled == [1], what="first entry")
        self.server.stop()
        self.server.start()
        await wait_for(lambda: gaps, timeout=10, what="gap after restart")
        await self.bus.publish("events", 0, 2, {})
        await wait_for(lambda: handled == [1, 2], timeout=10, what="entry after restart")
        self.assertEqual(gaps, [GAP_EPOCH])
