"""Pure part-B logic: edit choice, relation parsing, directory entries and filters, highlights, ignore lists."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.core.relations import relation_of
from homeserver.handlers.directory import directory_entry
from homeserver.handlers.rooms.relations import choose_replacement
from homeserver.handlers.rooms.served import ignored_users_from, without_senders
from homeserver.handlers.search import highlight_terms
from storage.stores.directory import PublishedRoom


def msg(event_id: str, sender: str = "@a:x", ts: int = 1, **content: object) -> dict:
    return {"event_id": event_id, "sender": sender, "type": "m.room.message", "origin_server_ts": ts,
            "content": dict(content)}


class ChooseReplacementTest(unittest.TestCase):
    def test_latest_then_largest_event_id(self) -> None:
        """The newest edit wins; equal timestamps fall back to the largest event ID."""
        original = msg("$o")
        new = {"m.new_content": {"body": "x"}}
        edits = [msg("$b", ts=5, **new), msg("$a", ts=5, **new), msg("$c", ts=4, **new)]
        self.assertEqual(choose_replacement(original, edits)["event_id"], "$b")

    def test_invalid_edits_ignored(self) -> None:
        """Other senders, other types, state events, missing m.new_content and edits of edits are ignored."""
        new = {"m.new_content": {"body": "x"}}
        original = msg("$o")
        other_sender = msg("$1", sender="@b:x", **new)
        other_type = dict(msg("$2", **new), type="m.sticker")
        state = dict(msg("$3", **new), state_key="")
        no_new_content = msg("$4")
        self.assertIsNone(choose_replacement(original, [other_sender, other_type, state, no_new_content]))
        edit_of_edit = msg("$e", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
        self.assertIsNone(choose_replacement(edit_of_edit, [msg("$5", **new)]))
        self.assertIsNone(choose_replacement(dict(original, state_key=""), [msg("$6", **new)]))


class RelationOfTest(unittest.TestCase):
    def test_parsing(self) -> None:
        """Only string rel_type and event_id make a relation; keys only for annotations; NULs refused."""
        self.assertEqual(relation_of({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$p", "key": "👍"}}),
                         ("m.annotation", "$p", "👍"))
        self.assertEqual(relation_of({"m.relates_to": {"rel_type": "m.thread", "event_id": "$p", "key": "k"}}),
                         ("m.thread", "$p", None))
        for bad in ({}, {"m.relates_to": "x"}, {"m.relates_to": {"rel_type": 1, "event_id": "$p"}},
                    {"m.relates_to": {"rel_type": "m.thread"}}, {"m.relates_to": {"rel_type": "a\x00", "event_id": "$p"}},
                    {"m.relates_to": {"m.in_reply_to": {"event_id": "$p"}}}):
            self.assertIsNone(relation_of(bad))


class DirectoryEntryTest(unittest.TestCase):
    def test_entry(self) -> None:
        """Directory entries carry the room's set fields and derive world_readable / guest_can_join."""
        room = PublishedRoom("!r:x", 4, name="Cats", topic="", history_visibility="world_readable",
                             guest_access="can_join", room_type="m.space")
        self.assertEqual(directory_entry(room), {"room_id": "!r:x", "num_joined_members": 4, "world_readable": True,
                                                 "guest_can_join": True, "name": "Cats", "room_type": "m.space"})
        self.assertEqual(directory_entry(PublishedRoom("!s:x", 0)), {
            "room_id": "!s:x", "num_joined_members": 0, "world_readable": False, "guest_can_join": False})


class MiscTest(unittest.TestCase):
    def test_highlights(self) -> None:
        """Highlights are the lowercase words of the term without operators or excluded words."""
        self.assertEqual(highlight_terms('Roses or "red tulips" -weeds'), ["roses", "red", "tulips"])

    def test_ignored_users(self) -> None:
        """Malformed ignore lists are empty; senders on the list are dropped."""
        self.assertEqual(ignored_users_from({"ignored_users": {"@m:x": {}}}), frozenset({"@m:x"}))
        for bad in (None, {}, {"ignored_users": ["@m:x"]}):
            self.assertEqual(ignored_users_from(bad), frozenset())
        events = [{"sender": "@m:x"}, {"sender": "@a:x"}, {"sender": "@m:x", "state_key": ""}]
        self.assertEqual(without_senders(events, frozenset({"@m:x"})),
                         [{"sender": "@a:x"}, {"sender": "@m:x", "state_key": ""}])


class EncryptedEditTest(unittest.TestCase):
    def test_encrypted_replacement_needs_no_cleartext_new_content(self) -> None:
        """m.new_content of an encrypted edit is inside the ciphertext, so it is not required."""
        original = dict(msg("$o"), type="m.room.encrypted")
        edit = dict(msg("$e", ts=2), type="m.room.encrypted")
        self.assertEqual(choose_replacement(original, [edit])["event_id"], "$e")
