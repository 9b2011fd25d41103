"""CPU accounting of a coroutine's own steps (bus overhead metrics)."""

import asyncio
import time

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from bus.cputime import timed, timed_call


def burn(seconds):
    """Spend about ``seconds`` of this thread's CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class TimedTests(SynchronousTestCase):
    def test_counts_the_steps_not_the_suspensions(self):
        """CPU spent by others while the coroutine is suspended is not counted; its own steps are."""
        spent = []
        gate: defer.Deferred = defer.Deferred()

        async def work():
            burn(0.02)
            value = await gate
            burn(0.02)
            return value + 1

        async def outer():
            return await timed(work(), spent.append)

        d = defer.ensureDeferred(outer())
        self.assertNoResult(d)
        burn(0.1)  # someone else's work while suspended
        gate.callback(41)
        self.assertEqual(self.successResultOf(d), 42)
        self.assertEqual(len(spent), 2)
        self.assertGreaterEqual(sum(spent), 0.035)
        self.assertLess(sum(spent), 0.09)

    def test_exceptions_are_forwarded_and_counted(self):
        """An error raised into or out of the coroutine propagates; its step is still counted."""
        spent = []
        gate: defer.Deferred = defer.Deferred()
        caught = []

        async def work():
            try:
                await gate
            except KeyError as e:
                caught.append(e)
                burn(0.01)
                raise ValueError("after") from e

        d = defer.ensureDeferred(_drive(timed(work(), spent.append)))
        self.assertNoResult(d)
        gate.errback(KeyError("in"))
        failure = self.failureResultOf(d, ValueError)
        self.assertEqual(str(failure.value), "after")
        self.assertEqual(len(caught), 1)
        self.assertGreaterEqual(sum(spent), 0.009)

    def test_runs_under_asyncio(self):
        """The wrapper passes asyncio futures through (redis-py commands run as asyncio tasks)."""
        spent = []

        async def work():
            await asyncio.sleep(0)
            burn(0.005)
            return "ok"

        async def main():
            return await timed(work(), spent.append)

        loop = asyncio.new_event_loop()
        try:
            self.assertEqual(loop.run_until_complete(main()), "ok")
        finally:
            loop.close()
        self.assertGreaterEqual(sum(spent), 0.004)

    def test_timed_call(self):
        """A synchronous call's CPU is added, also when it raises."""
        spent = []
        self.assertEqual(timed_call(lambda a: (burn(0.005), a)[1], spent.append, 3), 3)
        self.assertRaises(ZeroDivisionError, timed_call, lambda: 1 / 0, spent.append)
        self.assertEqual(len(spent), 2)
        self.assertGreaterEqual(spent[0], 0.004)


async def _drive(awaitable):
    return await awaitable
