"""Tests for the stack supervisor, on fake time and fake processes."""

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from workers.supervisor import STABLE_AFTER_SECONDS, STOP_GRACE_SECONDS, ChildSpec, Supervisor, restart_delay


class FakeTransport:
    _next_pid = [100]

    def __init__(self, proto):
        self.proto = proto
        self.pid = FakeTransport._next_pid[0]
        FakeTransport._next_pid[0] += 1
        self.signals = []

    def closeStdin(self):
        pass

    def signalProcess(self, sig):
        self.signals.append(sig)

    def die(self, code=1, signal=None):
        if signal is None and code == 0:
            self.proto.processEnded(Failure(ProcessDone(0)))
        else:
            self.proto.processEnded(Failure(ProcessTerminated(exitCode=code, signal=signal)))


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, proto, executable, args, env=None, childFDs=None):
        t = FakeTransport(proto)
        self.spawned.append((args, env, t))
        return t


class RestartDelayTests(unittest.TestCase):
    def test_doubles_to_cap(self):
        """Backoff doubles from the base and stops at the cap."""
        self.assertEqual([restart_delay(i) for i in range(8)], [0.5, 1, 2, 4, 8, 16, 30, 30])
        self.assertEqual(restart_delay(1, jitter=0.5), 1.5)


class SupervisorTests(unittest.TestCase):
    def setUp(self):
        self.reactor = FakeReactor()
        self.sup = Supervisor(self.reactor, [ChildSpec("a", ("python", "-m", "workers", "run"), (("X", "1"),)), ChildSpec("b", ("python", "b"))])
        for child in self.sup.children.values():
            child.jitter = lambda: 0.0
        self.sup.start()

    def transport(self, name):
        return self.sup.children[name].transport

    def test_starts_every_child_with_env(self):
        """Each spec becomes one process with the spec's environment added."""
        self.assertEqual(len(self.reactor.spawned), 2)
        args, env, _ = self.reactor.spawned[0]
        self.assertEqual(args, ["python", "-m", "workers", "run"])
        self.assertEqual(env["X"], "1")

    def test_crash_restarts_with_backoff(self):
        """A crashing child restarts after 0.5s, then 1s, then 2s."""
        for expected in (0.5, 1.0, 2.0):
            self.transport("a").die(code=1)
            self.assertIsNone(self.transport("a"))
            self.reactor.advance(expected - 0.01)
            self.assertIsNone(self.transport("a"))
            self.reactor.advance(0.01)
            self.assertIsNotNone(self.transport("a"))
        self.assertEqual(self.sup.children["a"].restarts, 3)

    def test_backoff_resets_after_stable_run(self):
        """A child that ran a while before dying restarts quickly again."""
        self.transport("a").die(code=1)
        self.reactor.advance(0.5)
        self.transport("a").die(code=1)
        self.reactor.advance(1.0)
        self.reactor.advance(STABLE_AFTER_SECONDS)
        self.transport("a").die(signal=9)
        self.reactor.advance(0.5)
        self.assertIsNotNone(self.transport("a"))

    def test_stop_terms_then_kills(self):
        """Stop sends TERM, KILLs what is left after the grace period, and fires when all ended."""
        ta, tb = self.transport("a"), self.transport("b")
        d = self.sup.stop()
        self.assertEqual(ta.signals, ["TERM"])
        self.assertEqual(tb.signals, ["TERM"])
        ta.die(code=0)
        self.assertNoResult(d)
        self.reactor.advance(STOP_GRACE_SECONDS)
        self.assertEqual(tb.signals, ["TERM", "KILL"])
        tb.die(signal=9)
        self.successResultOf(d)
        self.reactor.advance(100)
        self.assertIsNone(self.transport("a"))
        self.assertIsNone(self.transport("b"))

    def test_stop_cancels_pending_restart(self):
        """A child waiting to restart is not restarted once stopping."""
        self.transport("a").die(code=1)
        d = self.sup.stop()
        self.transport("b").die(code=0)
        self.successResultOf(d)
        self.reactor.advance(60)
        self.assertIsNone(self.transport("a"))
