"""The per-room linearizer and history visibility (pure)."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from homeserver.handlers.rooms.linearizer import Linearizer
from homeserver.handlers.rooms.visibility import VisibilityHistory


class LinearizerTests(SynchronousTestCase):
    """Per-key FIFO serialisation."""
    def test_one_holder_per_key_in_fifo_order(self):
        """Holders of one key run one at a time in arrival order; other keys are independent."""
        lin = Linearizer()
        log = []
        gates = {name: defer.Deferred() for name in ("a1", "a2", "a3", "b1")}

        async def hold(key, name):
            """Hold the key until released."""
            async with lin.lock(key):
                log.append(f"in {name}")
                await gates[name]
                log.append(f"out {name}")

        ds = [defer.ensureDeferred(hold("a", n)) for n in ("a1", "a2", "a3")]
        ds.append(defer.ensureDeferred(hold("b", "b1")))
        self.assertEqual(log, ["in a1", "in b1"])
        gates["a2"].callback(None)  # a2 finishing early changes nothing: it has not started
        self.assertEqual(log, ["in a1", "in b1"])
        gates["a1"].callback(None)
        self.assertEqual(log, ["in a1", "in b1", "out a1", "in a2", "out a2", "in a3"])
        gates["a3"].callback(None)
        gates["b1"].callback(None)
        for d in ds:
            self.successResultOf(d)
        self.assertFalse(lin.is_queued("a"))
        self.assertFalse(lin.is_queued("b"))

    def test_cancelled_waiter_keeps_the_order(self):
        """A waiter cancelled while queued lets the next one in only after its predecessor leaves."""
        lin = Linearizer()
        log = []
        gate = defer.Deferred()

        async def hold(name, wait=None):
            """Hold the key until released."""
            async with lin.lock("k"):
                log.append(name)
                if wait is not None:
                    await wait

        first = defer.ensureDeferred(hold("first", gate))
        second = defer.ensureDeferred(hold("second"))
        third = defer.ensureDeferred(hold("third"))
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.assertEqual(log, ["first"])
        gate.callback(None)
        self.successResultOf(first)
        self.successResultOf(third)
        self.assertEqual(log, ["first", "third"])

    def test_exception_releases(self):
        """A holder that raises releases the key."""
        lin = Linearizer()

        async def boom():
            """Raise inside the lock."""
            async with lin.lock("k"):
                raise ValueError("x")

        async def ok():
            """Take the lock and return."""
            async with lin.lock("k"):
                return 1

        self.failureResultOf(defer.ensureDeferred(boom()), ValueError)
        self.assertEqual(self.successResultOf(defer.ensureDeferred(ok())), 1)


class VisibilityTests(SynchronousTestCase):
    """History visibility rules."""
    def test_shared(self):
        """shared: members see history from before they joined, not after they left."""
        h = VisibilityHistory(memberships=((10, "join"), (20, "leave")), visibilities=())
        self.assertTrue(h.visible(5))
        self.assertTrue(h.visible(15))
        self.assertFalse(h.visible(25))
        never = VisibilityHistory(memberships=(), visibilities=())
        self.assertFalse(never.visible(5))

    def test_joined_and_invited(self):
        """joined: only while joined; invited: from the invite on; own membership events always."""
        joined = VisibilityHistory(memberships=((10, "join"),), visibilities=((1, "joined"),))
        self.assertFalse(joined.visible(5))
        self.assertTrue(joined.visible(11))
        self.assertTrue(joined.visible(10, is_own_membership=True))
        invited = VisibilityHistory(memberships=((10, "invite"), (20, "join")), visibilities=((1, "invited"),))
        self.assertFalse(invited.visible(5))
        self.assertTrue(invited.visible(15))
        self.assertTrue(invited.visible(25))

    def test_world_readable_and_changes(self):
        """world_readable shows everything; the visibility in force before each event applies."""
        h = VisibilityHistory(memberships=(), visibilities=((1, "world_readable"), (50, "joined")))
        self.assertTrue(h.visible(10))
        self.assertTrue(h.visible(50))  # judged by the state before the change
        self.assertFalse(h.visible(51))
