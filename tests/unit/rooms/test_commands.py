"""Room write commands: requester encoding and the local dispatcher."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from homeserver.errors import MatrixError
from homeserver.handlers.auth import Requester
from homeserver.handlers.rooms.commands import COMMANDS, LocalDispatcher, RoomCommands, requester_from_json, requester_to_json


class FakeRooms:
    """Records what the owner side was asked."""

    def __init__(self):
        self.calls = []

    async def leave(self, requester, room_id, reason):
        """Record a leave."""
        self.calls.append(("leave", requester, room_id, reason))


class CommandTests(SynchronousTestCase):
    def test_requester_round_trip(self):
        """A requester survives the JSON trip; a command without one is refused."""
        r = Requester("@a:x", "DEV", False, 7, True)
        back = requester_from_json(requester_to_json(r))
        self.assertEqual((back.user_id, back.device_id, back.is_guest, back.access_token_id, back.is_admin),
                         ("@a:x", "DEV", False, 7, True))
        with self.assertRaises(MatrixError):
            requester_from_json({"device_id": "x"})

    def test_local_dispatch_goes_through_json(self):
        """Every command is registered once and runs with JSON-decoded arguments."""
        rooms = FakeRooms()
        dispatcher = LocalDispatcher()
        commands = RoomCommands(dispatcher, rooms, typing=None, receipts=None)
        commands.register()
        self.assertEqual(sorted(dispatcher._handlers), sorted(name for name, _ in COMMANDS))
        with self.assertRaises(ValueError):
            commands.register()
        r = Requester("@a:x", None, False, 3, False)
        self.successResultOf(defer.ensureDeferred(commands.leave(r, "!r:x", "bye")))
        (name, requester, room_id, reason), = rooms.calls
        self.assertEqual((name, room_id, reason, requester.user_id, requester.device_id), ("leave", "!r:x", "bye", "@a:x", None))
        self.assertIsNot(requester, r)
