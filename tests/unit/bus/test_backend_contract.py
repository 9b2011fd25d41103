"""The backend contract against the in-memory broker."""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from bus.memory import MemoryBackend, MemoryBroker

from .backend_contract import BackendContract


class MemoryBackendContractTests(BackendContract, TestCase):
    def setUp(self):
        self.broker = MemoryBroker(Clock())

    def make_backend(self):
        return MemoryBackend(self.broker)

    def trim(self, key, maxlen):
        self.broker.trim(key, maxlen)


class MemoryMarksExpiryTests(TestCase):
    def test_marks_expire(self):
        """A scope's marks vanish ttl after the last raise, which renews them."""
        clock = Clock()
        backend = MemoryBackend(MemoryBroker(clock))
        backend.raise_marks("k", {"events.0": 5}, 1000)
        clock.advance(0.9)
        backend.raise_marks("k", {"events.1": 1}, 1000)
        clock.advance(0.9)
        self.assertEqual(self.successResultOf(backend.get_marks("k")), {"events.0": 5, "events.1": 1})
        clock.advance(0.2)
        self.assertEqual(self.successResultOf(backend.get_marks("k")), {})
