"""The sync handler's batching window for long-polls that find new events at once (fake clock)."""

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from homeserver.handlers.rooms.tokens import StreamToken
from homeserver.handlers.sync.handler import SyncDeps, SyncHandler
from homeserver.handlers.sync.tail import StreamTail

Entry = attrs.make_class("Entry", ["shard", "position", "payload"])


@attrs.frozen
class Row:
    stream_position: int
    room_id: str


def decode(shard, position, payload):
    return Row(position, payload["room_id"])


class _TailCase(SynchronousTestCase):
    """A fake clock, an events tail of two shards, and sync handlers over it."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)
        self.tail = StreamTail(self.clock, "events", 2, None, decode)
        self.tail.start([0, 0])

    def handler(self, window, interval=0.0):
        deps = SyncDeps(
            events_store=None, receipts_store=None, loader=None, events_tail=self.tail, receipts_tail=None,
            typing_tail=None, typing_state=None, notifier=None, shard_counts={"events": 2},
            events_shard_of=None, receipts_shard_of=None, typing_shard_of=None,
        )
        return SyncHandler(self.clock, deps, batch_window=window, min_interval=interval)

    def token(self, events):
        return StreamToken(events=tuple(events), receipts=(), typing=(), account_data=0, presence=(), to_device=())


class HoldTests(_TailCase):

    def test_waits_until_the_window_after_the_first_new_event(self):
        """A long-poll finding an event that arrived 4 ms ago waits the remaining 6 ms of a 10 ms window."""
        self.tail.on_entry(Entry(0, 3, {"room_id": "!a:x"}))
        self.clock.advance(0.004)
        self.tail.on_entry(Entry(1, 2, {"room_id": "!a:x"}))  # a later one does not extend the window
        d = defer.ensureDeferred(self.handler(0.01)._hold(self.token([0, 0]), self.clock.seconds() + 30))
        self.clock.advance(0.0059)
        self.assertNoResult(d)
        self.clock.advance(0.0002)
        self.successResultOf(d)

    def test_no_wait(self):
        """Nothing is held without new events, once the window has passed, with no window, or past the deadline."""
        self.tail.on_entry(Entry(0, 3, {"room_id": "!a:x"}))
        now = self.clock.seconds()
        self.successResultOf(defer.ensureDeferred(self.handler(0.01)._hold(self.token([3, 0]), now + 30)))
        self.successResultOf(defer.ensureDeferred(self.handler(0)._hold(self.token([0, 0]), now + 30)))
        self.successResultOf(defer.ensureDeferred(self.handler(0.01)._hold(self.token([0, 0]), now)))
        self.clock.advance(0.01)
        self.successResultOf(defer.ensureDeferred(self.handler(0.01)._hold(self.token([0, 0]), self.clock.seconds() + 30)))


class MinIntervalTests(_TailCase):
    """``sync.min_interval_ms``: a long-poll continuing from a token answered here waits out the interval."""

    def test_not_before_only_for_tokens_answered_here(self):
        handler = self.handler(0.01, 0.1)
        self.assertIsNone(handler._not_before("s1"))
        handler._remember_answer("s1")
        self.assertEqual(handler._not_before("s1"), self.clock.seconds() + 0.1)
        self.assertIsNone(handler._not_before("s2"))
        off = self.handler(0.01, 0)
        off._remember_answer("s1")
        self.assertIsNone(off._not_before("s1"))

    def test_holds_past_the_window_until_the_interval(self):
        """New events waiting: the answer comes at the later of window end and interval end, never past the deadline."""
        handler = self.handler(0.01, 0.1)
        handler._remember_answer("s1")
        not_before = handler._not_before("s1")
        self.clock.advance(0.02)
        self.tail.on_entry(Entry(0, 3, {"room_id": "!a:x"}))
        d = defer.ensureDeferred(handler._hold(self.token([0, 0]), self.clock.seconds() + 30, not_before))
        self.clock.advance(0.0799)
        self.assertNoResult(d)
        self.clock.advance(0.0002)
        self.successResultOf(d)
        # The deadline bounds it.
        handler._remember_answer("s2")
        d = defer.ensureDeferred(handler._hold(self.token([0, 0]), self.clock.seconds() + 0.03, handler._not_before("s2")))
        self.clock.advance(0.0301)
        self.successResultOf(d)
        # Nothing new: nothing held (the long-poll waits on the notifier instead).
        handler._remember_answer("s3")
        self.successResultOf(defer.ensureDeferred(
            handler._hold(self.token([3, 0]), self.clock.seconds() + 30, handler._not_before("s3"))))

    def test_remembered_tokens_are_bounded(self):
        from homeserver.handlers.sync import handler as module

        handler = self.handler(0, 0.1)
        self.patch(module, "MAX_REMEMBERED_ANSWERS", 2)
        for t in ("a", "b", "c"):
            handler._remember_answer(t)
        self.assertIsNone(handler._not_before("a"))
        self.assertIsNotNone(handler._not_before("c"))
