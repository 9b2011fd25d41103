"""The background runner on fake time with a fake lock."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from workers.background import BackgroundRunner, Job


class FakeLock:
    def __init__(self, on_acquired, on_lost):
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.started = False

    def start(self):
        self.started = True

    def stop(self):
        from twisted.internet import defer

        return defer.succeed(None)


class BackgroundRunnerTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.runs = []

        async def job():
            self.runs.append(self.clock.seconds())

        self.runner = BackgroundRunner(self.clock, lambda a, l: self.__setattr__("lock", FakeLock(a, l)) or self.lock, [Job("j", 10, job)])
        self.runner.start()

    def test_jobs_run_only_while_lock_held(self):
        """Nothing runs before the lock; jobs run on schedule while held and stop when lost."""
        self.assertTrue(self.lock.started)
        self.clock.advance(100)
        self.assertEqual(self.runs, [])
        self.lock.on_acquired()
        self.assertTrue(self.runner.active)
        for _ in range(25):
            self.clock.advance(1)
        self.assertEqual(self.runs, [100, 110, 120])
        self.lock.on_lost()
        self.assertFalse(self.runner.active)
        self.clock.advance(100)
        self.assertEqual(len(self.runs), 3)

    def test_failing_job_keeps_running(self):
        """A job that raises is logged and runs again at its next tick."""
        calls = []

        async def bad():
            calls.append(1)
            raise RuntimeError("x")

        runner = BackgroundRunner(self.clock, lambda a, l: FakeLock(a, l), [Job("bad", 5, bad)])
        runner._activate()
        for _ in range(10):
            self.clock.advance(1)
        self.assertEqual(len(calls), 3)
        runner._deactivate()
