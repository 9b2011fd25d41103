"""The presence config switch: parsing, and what a disabled presence does on the read side."""

from __future__ import annotations

import copy
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from homeserver.config import ConfigError, load_config
from homeserver.core.presence import UserPresence
from homeserver.handlers.presence.handler import PresenceReader
from homeserver.handlers.sync.presence import PresenceSource
from storage.stores.presence import PresenceRow
from tests.unit.config.test_config import BASE


class ConfigTests(unittest.TestCase):
    """presence.enabled."""

    def test_default_and_switch(self) -> None:
        """Absent: enabled; ``enabled: false`` turns it off; a non-boolean is a config error."""
        self.assertTrue(load_config(copy.deepcopy(BASE), env={}).sections["presence"].enabled)
        off = load_config({**copy.deepcopy(BASE), "presence": {"enabled": False}}, env={})
        self.assertFalse(off.sections["presence"].enabled)
        self.assertRaises(ConfigError, load_config, {**copy.deepcopy(BASE), "presence": {"enabled": "no"}}, env={})


class _Store:
    def __init__(self) -> None:
        self.rows = {"@a:x": PresenceRow(0, 1, UserPresence("@a:x", "online", None, 1000, 1000))}

    def get_presence(self, users: Any) -> Any:
        return defer.succeed({u: self.rows[u] for u in users if u in self.rows})

    def get_room_mates(self, user_id: str) -> Any:
        return defer.succeed({user_id, "@a:x"})

    def shares_room(self, a: str, b: str) -> Any:
        return defer.succeed(True)

    def get_joined_rooms(self, user_id: str) -> Any:
        return defer.succeed([])


class _Tail:
    def add_listener(self, listener: Any) -> None:
        pass

    def current(self) -> tuple[int, ...]:
        return (1,)

    def rows(self, shard: int, after: int, upto: int) -> Any:
        return None


class DisabledReadTests(unittest.TestCase):
    """Reads with presence off."""

    def test_sync_and_get_show_nothing(self) -> None:
        """Disabled: /sync presence is empty and GET /status says offline, even with stored rows; enabled shows them."""
        clock = task.Clock()
        store = _Store()
        off = PresenceSource(clock, store, _Tail(), notifier=None, enabled=False)
        self.assertEqual(self.successResultOf(defer.ensureDeferred(off.events("@b:x", None, (1,)))), [])
        on = PresenceSource(clock, store, _Tail(), notifier=None, enabled=True)
        events = self.successResultOf(defer.ensureDeferred(on.events("@b:x", None, (1,))))
        self.assertEqual([e["sender"] for e in events], ["@a:x"])

        class Req:
            user_id = "@b:x"

        reader = PresenceReader(clock, store, enabled=False)
        self.assertEqual(self.successResultOf(defer.ensureDeferred(reader.get_status(Req(), "@a:x"))), {"presence": "offline"})
        reader = PresenceReader(clock, store, enabled=True)
        self.assertEqual(self.successResultOf(defer.ensureDeferred(reader.get_status(Req(), "@a:x")))["presence"], "online")
