"""Graceful stop of an instance: in-flight requests finish, or get a 503 after the drain time."""

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool

from workers.app import EstuaryProcess, draining_site


class Held(resource.Resource):
    """``/slow`` waits until the test releases it; ``/fast`` answers at once."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.held = []

    def render_GET(self, request):
        if request.path == b"/fast":
            return b"fast"
        self.held.append(request)
        return server.NOT_DONE_YET


class GracefulStopTests(unittest.TestCase):
    def setUp(self):
        self.root = Held()
        site = draining_site(self.root, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(lambda: port.stopListening() if port.connected else None)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.process = EstuaryProcess(reactor, None, None)
        self.process.sites = [site]
        self.process.ports = [port]
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = treq.client.HTTPClient(Agent(reactor, pool=pool))

    @defer.inlineCallbacks
    def _held(self):
        response = self.client.get(self.base + "/slow", timeout=10)
        while not self.root.held:
            yield treq.get(self.base + "/fast", persistent=False)
        return response

    @defer.inlineCallbacks
    def test_in_flight_request_finishes_before_stop(self):
        """stop() waits for a request in flight; the client gets its answer."""
        response = yield self._held()
        stopping = defer.ensureDeferred(self.process.stop(drain_seconds=10))
        self.assertNoResult(stopping)
        self.root.held[0].write(b"done")
        self.root.held[0].finish()
        yield stopping
        resp = yield response
        self.assertEqual((resp.code, (yield resp.content())), (200, b"done"))

    @defer.inlineCallbacks
    def test_request_past_drain_time_gets_503(self):
        """A request still running when the drain time is over is answered 503 by the stopping process."""
        response = yield self._held()
        yield defer.ensureDeferred(self.process.stop(drain_seconds=0.2))
        resp = yield response
        body = yield resp.json()
        self.assertEqual((resp.code, body["errcode"]), (503, "M_UNKNOWN"))
