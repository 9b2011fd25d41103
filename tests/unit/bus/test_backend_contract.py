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
