"""Polling with a deadline: how tests wait for real processes, never sleep."""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.internet import defer, task


class Timeout(AssertionError):
    pass


@defer.inlineCallbacks
def wait_until(reactor: Any, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` (may return a Deferred) until true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        ok = yield defer.maybeDeferred(predicate)
        if ok:
            return ok
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what}")
        yield task.deferLater(reactor, interval, lambda: None)
