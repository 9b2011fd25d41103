"""Presence: the pure state machine and the writer on a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from homeserver.core import presence as p
from homeserver.handlers.presence.handler import PresenceCommands, PresenceWriter, parse_status_body
from homeserver.errors import MatrixError


class StateMachineTests(unittest.TestCase):
    """homeserver.core.presence."""

    def test_set_status_online_marks_activity(self) -> None:
        """Setting online records the time as last activity; unavailable keeps the older activity."""
        u = p.set_status(p.UserPresence("@a:x"), p.ONLINE, "hi", 1000)
        self.assertEqual((u.state, u.status_msg, u.last_active_ts, u.last_seen_ts), (p.ONLINE, "hi", 1000, 1000))
        v = p.set_status(u, p.UNAVAILABLE, None, 5000)
        self.assertEqual((v.state, v.status_msg, v.last_active_ts, v.last_seen_ts), (p.UNAVAILABLE, None, 1000, 5000))

    def test_sync_offline_changes_nothing(self) -> None:
        """set_presence=offline leaves presence alone; online and unavailable apply."""
        u = p.UserPresence("@a:x")
        self.assertIsNone(p.on_sync(u, p.OFFLINE, 10))
        self.assertEqual(p.on_sync(u, p.ONLINE, 10).state, p.ONLINE)
        self.assertEqual(p.on_sync(u, p.UNAVAILABLE, 10).state, p.UNAVAILABLE)

    def test_timeouts(self) -> None:
        """Online goes unavailable after the idle timeout and offline after the sync timeout."""
        u = p.set_status(p.UserPresence("@a:x"), p.ONLINE, None, 0)
        self.assertIsNone(p.on_timer(u, p.IDLE_TIMEOUT_MS - 1))
        self.assertEqual(p.next_deadline(u), p.IDLE_TIMEOUT_MS)
        idle = p.on_timer(u, p.IDLE_TIMEOUT_MS)
        self.assertEqual(idle.state, p.UNAVAILABLE)
        self.assertEqual(p.next_deadline(idle), p.SYNC_TIMEOUT_MS)
        self.assertIsNone(p.on_timer(idle, p.SYNC_TIMEOUT_MS - 1))
        self.assertEqual(p.on_timer(idle, p.SYNC_TIMEOUT_MS).state, p.OFFLINE)
        self.assertIsNone(p.next_deadline(p.UserPresence("@a:x")))

    def test_to_client(self) -> None:
        """last_active_ago, status_msg and currently_active as clients see them."""
        u = p.set_status(p.UserPresence("@a:x"), p.ONLINE, "busy", 1000)
        self.assertEqual(p.to_client(u, 2000), {"presence": "online", "last_active_ago": 1000, "status_msg": "busy",
                                                "currently_active": True})
        self.assertFalse(p.to_client(u, 1000 + p.CURRENTLY_ACTIVE_MS)["currently_active"])
        self.assertEqual(p.to_client(p.UserPresence("@b:x"), 5), {"presence": "offline"})

    def test_is_change(self) -> None:
        """Only state, message or a return to activity are announced."""
        u = p.set_status(p.UserPresence("@a:x"), p.ONLINE, None, 0)
        self.assertFalse(p.is_change(u, p.on_sync(u, p.ONLINE, 10)))
        self.assertTrue(p.is_change(u, p.on_sync(u, p.ONLINE, p.CURRENTLY_ACTIVE_MS)))
        self.assertTrue(p.is_change(u, p.set_status(u, p.ONLINE, "x", 10)))

    def test_parse_status_body(self) -> None:
        """Bad presence values and status messages are refused."""
        self.assertEqual(parse_status_body({"presence": "online"}), ("online", None))
        for body in ({"presence": "away"}, {}, {"presence": "online", "status_msg": 3},
                     {"presence": "online", "status_msg": "x" * 2000}):
            self.assertRaises(MatrixError, parse_status_body, body)


class _Allocator:
    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.position = 0
        self.attached: list[tuple[int, Any]] = []

    def allocate(self, txn: Any) -> int:
        self.position += 1
        return self.position

    def attach(self, position: int, payload: Any) -> None:
        self.attached.append((position, payload))


class _Store:
    def __init__(self) -> None:
        from storage.stores.presence import PresenceRow

        self.row = PresenceRow
        self.rows: dict[str, Any] = {}

    def upsert(self, allocator: Any, presence: p.UserPresence, on_row: Any = None) -> Any:
        row = self.row(allocator.shard, allocator.allocate(None), presence)
        self.rows[presence.user_id] = row
        if on_row is not None:
            on_row(row)
        return defer.succeed(row)

    def get_presence(self, user_ids: Any) -> Any:
        return defer.succeed({u: self.rows[u] for u in user_ids if u in self.rows})

    def get_not_offline(self, shard: int) -> Any:
        return defer.succeed([r for r in self.rows.values() if r.presence.state != p.OFFLINE])


class WriterTests(unittest.TestCase):
    """PresenceWriter on a fake clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = _Store()
        self.allocator = _Allocator(0)
        self.writer = PresenceWriter(self.clock, self.store, {0: self.allocator}, lambda u: 0)
        self.successResultOf(defer.ensureDeferred(self.writer.start()))
        self.addCleanup(self.writer.stop)

    def test_idle_then_offline_on_the_timer(self) -> None:
        """A syncing user goes unavailable after the idle timeout and offline when syncs stop, each published once."""
        self.successResultOf(defer.ensureDeferred(self.writer.user_syncing("@a:x", "online")))
        self.assertEqual(self.store.rows["@a:x"].presence.state, p.ONLINE)
        self.clock.advance(p.IDLE_TIMEOUT_MS / 1000 + 5)
        self.assertEqual(self.store.rows["@a:x"].presence.state, p.UNAVAILABLE)
        self.clock.advance((p.SYNC_TIMEOUT_MS - p.IDLE_TIMEOUT_MS) / 1000 + 5)
        self.assertEqual(self.store.rows["@a:x"].presence.state, p.OFFLINE)
        self.assertEqual([payload["state"] for _, payload in self.allocator.attached], ["online", "unavailable", "offline"])

    def test_syncing_keeps_online_without_writes(self) -> None:
        """Syncs every 20s keep the user online; the row is rewritten once a minute, not per sync."""
        for _ in range(10):
            self.successResultOf(defer.ensureDeferred(self.writer.user_syncing("@a:x", "online")))
            self.clock.advance(20)
        self.assertEqual(self.store.rows["@a:x"].presence.state, p.ONLINE)
        # Written when going online, then once per CURRENTLY_ACTIVE_MS of activity (0s, 60s, 120s, 180s).
        self.assertEqual(len(self.allocator.attached), 4)

    def test_disabled_writes_nothing(self) -> None:
        """With presence disabled the writer stores nothing and commands do not run."""
        writer = PresenceWriter(self.clock, self.store, {0: self.allocator}, lambda u: 0, enabled=False)
        self.successResultOf(defer.ensureDeferred(writer.set_status("@b:x", "online", None)))
        self.assertNotIn("@b:x", self.store.rows)

        class Dispatcher:
            ran: list = []

            def register(self, *a: Any) -> None:
                pass

            async def run(self, *a: Any) -> Any:
                self.ran.append(a)

        dispatcher = Dispatcher()
        commands = PresenceCommands(dispatcher, writer)

        class Req:
            user_id = "@b:x"

        self.successResultOf(defer.ensureDeferred(commands.set_status(Req(), "@b:x", {"presence": "online"})))
        self.assertEqual(dispatcher.ran, [])
        failure = self.failureResultOf(defer.ensureDeferred(commands.set_status(Req(), "@c:x", {"presence": "online"})))
        self.assertEqual(failure.value.code, 403)

    def test_restart_reloads_users_to_time_out(self) -> None:
        """A new writer picks up users who are not offline and still times them out."""
        self.successResultOf(defer.ensureDeferred(self.writer.set_status("@a:x", "online", None)))
        self.writer.stop()
        fresh = PresenceWriter(self.clock, self.store, {0: self.allocator}, lambda u: 0)
        self.successResultOf(defer.ensureDeferred(fresh.start()))
        self.addCleanup(fresh.stop)
        self.clock.advance(p.SYNC_TIMEOUT_MS / 1000 + 10)
        self.assertEqual(self.store.rows["@a:x"].presence.state, p.OFFLINE)


class SyncReportTests(unittest.TestCase):
    """PresenceCommands.user_syncing throttling."""

    def test_same_report_forwarded_at_most_every_interval(self) -> None:
        """Repeated syncs with the same set_presence are forwarded once per interval; a change goes at once; offline never."""
        from homeserver.handlers.presence.handler import SYNC_REPORT_INTERVAL_S

        clock = task.Clock()
        writer = PresenceWriter(clock, _Store(), {}, lambda u: 0)

        class Dispatcher:
            def __init__(self) -> None:
                self.ran: list = []

            def register(self, *a: Any) -> None:
                pass

            async def run(self, command: str, key: str, args: Any) -> Any:
                self.ran.append(args["set_presence"])

        dispatcher = Dispatcher()
        commands = PresenceCommands(dispatcher, writer, clock)

        def sync(value: str) -> None:
            self.successResultOf(defer.ensureDeferred(commands.user_syncing("@a:x", value)))

        sync("online")
        sync("online")
        sync("offline")
        sync("unavailable")
        clock.advance(SYNC_REPORT_INTERVAL_S - 1)
        sync("unavailable")
        clock.advance(1)
        sync("unavailable")
        self.assertEqual(dispatcher.ran, ["online", "unavailable", "unavailable"])
