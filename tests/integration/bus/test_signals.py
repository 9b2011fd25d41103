"""bus.signals against a real Redis: a published signal reaches listeners; publishing never raises."""

from __future__ import annotations

import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from bus.signals import RedisSignals
from tests.utils.services import redis_url
from tests.utils.wait import wait_until


class SignalsTests(unittest.TestCase):
    async def test_publish_reaches_listener(self) -> None:
        """Messages published after a listener subscribed arrive, in order; other channels do not."""
        prefix = f"estuary-test:{uuid.uuid4().hex}:"
        sender = RedisSignals(redis_url(), prefix=prefix)
        listener = RedisSignals(redis_url(), prefix=prefix)
        self.addCleanup(sender.close)
        self.addCleanup(listener.close)
        got: list[str] = []
        listener.listen("wake", got.append)
        # The subscription is asynchronous: publish until the first one lands.
        async def primed() -> bool:
            await sender.publish("wake", "ping")
            return "ping" in got

        await wait_until(reactor, primed, timeout=10, what="listener subscribed")
        got.clear()
        for name in ("a.example", "b.example"):
            await sender.publish("wake", name)
        await sender.publish("other", "c.example")
        await wait_until(reactor, lambda: defer.succeed(len(got) >= 2), timeout=10, what="signals delivered")
        self.assertEqual(got, ["a.example", "b.example"])

    async def test_publish_without_redis_does_not_raise(self) -> None:
        """An unreachable Redis loses the signal quietly (the listener's poll covers it)."""
        signals = RedisSignals("redis://127.0.0.1:1/0")
        self.addCleanup(signals.close)
        await signals.publish("wake", "x")
