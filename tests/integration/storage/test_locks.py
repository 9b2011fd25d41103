"""Advisory-lock exclusivity against a real PostgreSQL."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from storage.locks import SessionLock, lock_key
from tests.utils.services import create_test_database
from tests.utils.wait import wait_until


class SessionLockTests(unittest.TestCase):
    def test_lock_key_stable(self):
        """Keys are stable signed 64-bit integers."""
        self.assertEqual(lock_key("estuary:background"), lock_key("estuary:background"))
        self.assertNotEqual(lock_key("a"), lock_key("b"))
        self.assertTrue(-(2**63) <= lock_key("x") < 2**63)

    @defer.inlineCallbacks
    def test_one_holder_and_takeover(self):
        """Of two contenders exactly one holds the lock; when it stops, the other takes over."""
        dsn = create_test_database(self)
        events = []
        a = SessionLock(dsn, reactor, "bg", lambda: events.append("a+"), lambda: events.append("a-"), interval=0.05)
        b = SessionLock(dsn, reactor, "bg", lambda: events.append("b+"), lambda: events.append("b-"), interval=0.05)
        a.start()
        yield wait_until(reactor, lambda: a.held, timeout=10, what="a holds")
        b.start()
        self.addCleanup(b.stop)
        # b keeps trying for a while and never gets it while a holds it.
        yield wait_until(reactor, lambda: b._conn is not None, timeout=10, what="b connected")
        self.assertFalse(b.held)
        yield a.stop()
        yield wait_until(reactor, lambda: b.held, timeout=10, what="b takes over")
        self.assertEqual(events, ["a+", "a-", "b+"])
