"""Tests for the redaction algorithm of every room version (fragments
v1-redactions, v6-redactions, v9-redactions, v11-redactions)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RedactionRules

ALL_TOP_LEVEL = {
    "event_id": "$e",
    "type": "m.room.message",
    "room_id": "!r:x",
    "sender": "@a:x",
    "state_key": "",
    "content": {"body": "secret"},
    "hashes": {"sha256": "h"},
    "signatures": {"x": {"ed25519:a": "s"}},
    "depth": 1,
    "prev_events": [],
    "prev_state": [],
    "auth_events": [],
    "origin": "x",
    "origin_server_ts": 1,
    "membership": "join",
    "redacts": "$other",
    "custom": "dropped",
    "unsigned": {"age_ts": 5, "replaces_state": "$old", "other": 1},
}

# What each redaction algorithm keeps, per event type: (type, content, kept content).
FULL_MEMBER = {
    "membership": "join",
    "displayname": "A",
    "join_authorised_via_users_server": "@b:x",
    "third_party_invite": {"display_name": "d", "signed": {"mxid": "@a:x", "token": "t"}},
}
FULL_CREATE = {"creator": "@a:x", "room_version": "1", "m.federate": False, "predecessor": {}}
FULL_JOIN_RULES = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1}
FULL_PL = {
    "ban": 50, "events": {}, "events_default": 0, "kick": 50, "redact": 50,
    "state_default": 50, "users": {}, "users_default": 0, "invite": 0,
    "notifications": {"room": 50}, "historical": 100,
}
PL_V1_KEYS = ("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default")


def _pick(content: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: content[k] for k in keys if k in content}


EXPECTED_CONTENT: dict[RedactionRules, dict[str, dict[str, Any]]] = {
    RedactionRules.V1: {
        "m.room.member": {"membership": "join"},
        "m.room.create": {"creator": "@a:x"},
        "m.room.join_rules": {"join_rule": "restricted"},
        "m.room.power_levels": _pick(FULL_PL, PL_V1_KEYS),
        "m.room.aliases": {"aliases": ["#a:x"]},
        "m.room.history_visibility": {"history_visibility": "shared"},
        "m.room.redaction": {},
        "m.room.message": {},
    },
    RedactionRules.V6: {
        "m.room.member": {"membership": "join"},
        "m.room.create": {"creator": "@a:x"},
        "m.room.join_rules": {"join_rule": "restricted"},
        "m.room.power_levels": _pick(FULL_PL, PL_V1_KEYS),
        "m.room.aliases": {},
        "m.room.history_visibility": {"history_visibility": "shared"},
        "m.room.redaction": {},
        "m.room.message": {},
    },
    RedactionRules.V9: {
        "m.room.member": {"membership": "join", "join_authorised_via_users_server": "@b:x"},
        "m.room.create": {"creator": "@a:x"},
        "m.room.join_rules": {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
        "m.room.power_levels": _pick(FULL_PL, PL_V1_KEYS),
        "m.room.aliases": {},
        "m.room.history_visibility": {"history_visibility": "shared"},
        "m.room.redaction": {},
        "m.room.message": {},
    },
    RedactionRules.V11: {
        "m.room.member": {
            "membership": "join",
            "join_authorised_via_users_server": "@b:x",
            "third_party_invite": {"signed": {"mxid": "@a:x", "token": "t"}},
        },
        "m.room.create": FULL_CREATE,
        "m.room.join_rules": {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
        "m.room.power_levels": _pick(FULL_PL, PL_V1_KEYS + ("invite",)),
        "m.room.aliases": {},
        "m.room.history_visibility": {"history_visibility": "shared"},
        "m.room.redaction": {"redacts": "$x"},
        "m.room.message": {},
    },
}

FULL_CONTENT = {
    "m.room.member": FULL_MEMBER,
    "m.room.create": FULL_CREATE,
    "m.room.join_rules": FULL_JOIN_RULES,
    "m.room.power_levels": FULL_PL,
    "m.room.aliases": {"aliases": ["#a:x"], "x": 1},
    "m.room.history_visibility": {"history_visibility": "shared", "x": 1},
    "m.room.redaction": {"redacts": "$x", "reason": "spam"},
    "m.room.message": {"body": "hi", "msgtype": "m.text"},
}


class RedactionTests(SynchronousTestCase):
    """prune_event_dict per room version."""

    def test_content_per_version_and_type(self) -> None:
        """Every room version keeps exactly its algorithm's content keys for
        every special-cased event type."""
        for rv in KNOWN_ROOM_VERSIONS.values():
            for event_type, content in FULL_CONTENT.items():
                pruned = prune_event_dict(rv, {"type": event_type, "content": content})
                self.assertEqual(
                    pruned["content"], EXPECTED_CONTENT[rv.redaction_rules][event_type],
                    "v%s %s" % (rv.identifier, event_type),
                )

    def test_top_level_keys(self) -> None:
        """v1-v10 keep origin, membership and prev_state; v11+ drop them.
        Unknown keys and redacts are always dropped."""
        old_keys = set(ALL_TOP_LEVEL) - {"redacts", "custom"}
        new_keys = old_keys - {"origin", "membership", "prev_state"}
        for rv in KNOWN_ROOM_VERSIONS.values():
            pruned = prune_event_dict(rv, ALL_TOP_LEVEL)
            expected = new_keys if rv.redaction_rules is RedactionRules.V11 else old_keys
            self.assertEqual(set(pruned), expected, rv.identifier)
            self.assertEqual(pruned["unsigned"], {"age_ts": 5, "replaces_state": "$old"})

    def test_version_assignment(self) -> None:
        """v1-v5 use v1 rules, v6-v8 v6, v9-v10 v9, v11-v12 v11."""
        expected = {
            "1": "V1", "2": "V1", "3": "V1", "4": "V1", "5": "V1", "6": "V6", "7": "V6",
            "8": "V6", "9": "V9", "10": "V9", "11": "V11", "12": "V11",
        }
        for identifier, rules in expected.items():
            self.assertEqual(KNOWN_ROOM_VERSIONS[identifier].redaction_rules.name, rules)

    def test_input_untouched_and_robust(self) -> None:
        """The input is not modified; odd shapes do not crash."""
        rv = KNOWN_ROOM_VERSIONS["11"]
        event = {"type": "m.room.member", "content": dict(FULL_MEMBER)}
        prune_event_dict(rv, event)
        self.assertEqual(event["content"], FULL_MEMBER)
        self.assertEqual(prune_event_dict(rv, {"type": 5, "content": "x"}), {"type": 5, "content": {}})
        self.assertEqual(
            prune_event_dict(rv, {"type": "m.room.member", "content": {"third_party_invite": "x"}})["content"], {}
        )
        self.assertEqual(prune_event_dict(rv, {"unsigned": {"other": 1}}), {"content": {}})
