"""ToDeviceSource.take skips PostgreSQL when the tail shows nothing for the device."""

from __future__ import annotations

import random
from typing import Any, Optional

from twisted.internet import defer
from twisted.trial import unittest

from homeserver.handlers.sync.to_device import ToDeviceSource
from storage.stores.device_inbox import InboxRow

USER, OTHER, DEVICE = "@u:hs", "@o:hs", "D1"


class Inbox:
    """The store's ``take`` over a dict, counting calls."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
        self.calls = 0

    def add(self, user: str, device: str, position: int) -> None:
        self.rows.setdefault((user, device), []).append((position, {"type": "m.test", "content": {"n": position}}))

    def take(self, user: str, device: str, ack_upto: int, after: int, upto: int, limit: int) -> Any:
        self.calls += 1
        key = (user, device)
        self.rows[key] = [r for r in self.rows.get(key, []) if r[0] > ack_upto]
        return defer.succeed([r for r in self.rows[key] if after < r[0] <= upto][:limit])


class Tail:
    """Rows of one shard from ``floor`` on."""

    def __init__(self) -> None:
        self.held: list[InboxRow] = []
        self.floor = 0
        self.position = 0

    def add_listener(self, fn: Any) -> None:
        pass

    def current(self) -> tuple[int, ...]:
        return (self.position,)

    def rows_for(self, after: int, upto: int) -> Optional[list[InboxRow]]:
        if after < self.floor:
            return None
        return [r for r in self.held if after < r.stream_position <= upto]

    def rows(self, shard: int, after: int, upto: int) -> Optional[list[InboxRow]]:
        return self.rows_for(after, upto)


class Notifier:
    def notify_user(self, user_id: str) -> None:
        pass


def make(tail: Tail, inbox: Inbox) -> ToDeviceSource:
    return ToDeviceSource(inbox, tail, Notifier(), lambda user_id: 0)


def write(tail: Tail, inbox: Inbox, user: str, device: str = DEVICE) -> None:
    tail.position += 1
    inbox.add(user, device, tail.position)
    tail.held.append(InboxRow(0, tail.position, user))


class TakeTests(unittest.TestCase):
    async def test_skips_the_database_only_when_nothing_is_pending(self) -> None:
        tail, inbox = Tail(), Inbox()
        source = make(tail, inbox)
        write(tail, inbox, USER)
        events, now = await source.take(USER, DEVICE, (0,), tail.current())
        self.assertEqual((len(events), inbox.calls), (1, 1))
        # The message still has to be acknowledged (deleted): the next sync asks PostgreSQL.
        events, now = await source.take(USER, DEVICE, now, tail.current())
        self.assertEqual((events, inbox.calls), ([], 2))
        self.assertEqual(inbox.rows[(USER, DEVICE)], [])
        # Nothing new, nothing to delete: no database read.
        await source.take(USER, DEVICE, now, tail.current())
        self.assertEqual(inbox.calls, 2)
        # Another user's message does not concern this device.
        write(tail, inbox, OTHER)
        events, now = await source.take(USER, DEVICE, now, tail.current())
        self.assertEqual((events, inbox.calls), ([], 2))
        # A message for the user does.
        write(tail, inbox, USER)
        events, now = await source.take(USER, DEVICE, now, tail.current())
        self.assertEqual((len(events), inbox.calls), (1, 3))

    async def test_reads_when_the_tail_lacks_the_range_or_the_device_is_unknown(self) -> None:
        tail, inbox = Tail(), Inbox()
        source = make(tail, inbox)
        write(tail, inbox, OTHER)
        # Never served here: PostgreSQL, whatever the tail says.
        await source.take(USER, DEVICE, tail.current(), tail.current())
        self.assertEqual(inbox.calls, 1)
        tail.floor = tail.position + 1  # the tail forgot everything
        write(tail, inbox, OTHER)
        await source.take(USER, DEVICE, tail.current(), tail.current())
        self.assertEqual(inbox.calls, 2)
        # Initial syncs always read.
        await source.take(USER, DEVICE, None, tail.current())
        self.assertEqual(inbox.calls, 3)

    async def test_same_messages_as_always_reading(self) -> None:
        """Random writes and syncs (also repeated old tokens): the messages returned are those
        a source that always reads PostgreSQL returns."""
        calls = [0, 0]
        for seed in range(30):
            rng = random.Random(seed)
            tail = Tail()
            inbox_a, inbox_b = Inbox(), Inbox()
            fast, slow = make(tail, inbox_a), make(tail, inbox_b)
            slow._nothing_to_do = lambda *a: False  # type: ignore[method-assign]
            tokens_a: list[Any] = [None]
            tokens_b: list[Any] = [None]
            for _ in range(60):
                op = rng.random()
                if op < 0.35:
                    user = rng.choice([USER, OTHER])
                    device = rng.choice([DEVICE, "D2"])
                    tail.position += 1
                    for inbox in (inbox_a, inbox_b):
                        inbox.add(user, device, tail.position)
                    tail.held.append(InboxRow(0, tail.position, user))
                elif op < 0.4:
                    tail.floor = rng.randint(0, tail.position + 1)
                else:
                    back = rng.random() < 0.15 and len(tokens_a) > 1
                    i = rng.randrange(len(tokens_a)) if back else len(tokens_a) - 1
                    got_a = await fast.take(USER, DEVICE, tokens_a[i], tail.current())
                    got_b = await slow.take(USER, DEVICE, tokens_b[i], tail.current())
                    self.assertEqual(got_a, got_b, f"seed {seed}")
                    tokens_a.append(got_a[1])
                    tokens_b.append(got_b[1])
            calls[0] += inbox_a.calls
            calls[1] += inbox_b.calls
        # The comparison is not vacuous: the skipping source did skip reads.
        self.assertLess(calls[0], calls[1])
