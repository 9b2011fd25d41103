"""The backend contract against a real Redis."""

import redis
from twisted.trial.unittest import TestCase

from bus.backend import RedisBackend
from tests.unit.bus.backend_contract import BackendContract
from tests.utils.services import redis_test_url


class RedisBackendContractTests(BackendContract, TestCase):
    def setUp(self):
        self.url = redis_test_url(self)
        self.sync = redis.Redis.from_url(self.url)
        self.addCleanup(self.sync.close)

    def make_backend(self):
        backend = RedisBackend.from_url(self.url)
        self.addCleanup(backend.close)
        return backend

    def trim(self, key, maxlen):
        self.sync.xtrim(key, maxlen=maxlen, approximate=False)
