"""The redaction algorithm of each room version.

Spec: room version fragments v1-redactions (rooms v1-v5), v6-redactions
(v6-v8), v9-redactions (v9, v10) and v11-redactions (v11, v12); the
client-server-api "Redactions" section points at these.
"""

from __future__ import annotations

from typing import Any, Mapping

from homeserver.core.room_versions import RedactionRules, RoomVersion

_V1_TOP_LEVEL_KEYS = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# v11-redactions: `origin`, `membership` and `prev_state` are no longer kept.
_V11_TOP_LEVEL_KEYS = _V1_TOP_LEVEL_KEYS - {"origin", "membership", "prev_state"}

_PL_KEYS_V1 = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)

# Content keys kept per event type, per redaction algorithm. A value of None
# means "keep the whole content".
_CONTENT_KEYS: dict[RedactionRules, dict[str, tuple[str, ...] | None]] = {
    RedactionRules.V1: {
        "m.room.member": ("membership",),
        "m.room.create": ("creator",),
        "m.room.join_rules": ("join_rule",),
        "m.room.power_levels": _PL_KEYS_V1,
        "m.room.aliases": ("aliases",),
        "m.room.history_visibility": ("history_visibility",),
    },
    RedactionRules.V6: {
        "m.room.member": ("membership",),
        "m.room.create": ("creator",),
        "m.room.join_rules": ("join_rule",),
        "m.room.power_levels": _PL_KEYS_V1,
        "m.room.history_visibility": ("history_visibility",),
    },
    RedactionRules.V9: {
        "m.room.member": ("membership", "join_authorised_via_users_server"),
        "m.room.create": ("creator",),
        "m.room.join_rules": ("join_rule", "allow"),
        "m.room.power_levels": _PL_KEYS_V1,
        "m.room.history_visibility": ("history_visibility",),
    },
    RedactionRules.V11: {
        "m.room.member": ("membership", "join_authorised_via_users_server"),
        "m.room.create": None,
        "m.room.join_rules": ("join_rule", "allow"),
        "m.room.power_levels": _PL_KEYS_V1 + ("invite",),
        "m.room.history_visibility": ("history_visibility",),
        "m.room.redaction": ("redacts",),
    },
}

# Synapse keeps these `unsigned` entries when redacting (they are server-side
# bookkeeping, not covered by hashes or signatures); we do the same so that
# redacted events we serve look like Synapse's.
_KEPT_UNSIGNED_KEYS = ("age_ts", "replaces_state")


def prune_event_dict(room_version: RoomVersion, pdu: Mapping[str, Any]) -> dict[str, Any]:
    """Return the redacted form of the event ``pdu`` for ``room_version``.

    Spec: the redaction algorithm of the room version (fragments
    v1-redactions, v6-redactions, v9-redactions, v11-redactions). Top-level
    keys not in the version's list are dropped, and ``content`` is stripped to
    the keys the event type keeps. ``pdu`` is not modified; the result shares
    no mutable containers with it at the top level or in ``content``, but kept
    nested values are the same objects (deep-copy if you will mutate them).
    """
    rules = room_version.redaction_rules
    top_keys = _V11_TOP_LEVEL_KEYS if rules is RedactionRules.V11 else _V1_TOP_LEVEL_KEYS
    pruned: dict[str, Any] = {k: v for k, v in pdu.items() if k in top_keys}

    event_type = pdu.get("type")
    content = pdu.get("content")
    if not isinstance(content, Mapping):
        content = {}
    kept = _CONTENT_KEYS[rules].get(event_type, ()) if isinstance(event_type, str) else ()
    if kept is None:
        new_content = dict(content)
    else:
        new_content = {k: content[k] for k in kept if k in content}
    if rules is RedactionRules.V11 and event_type == "m.room.member":
        # v11-redactions: the `signed` key of `third_party_invite` is kept.
        tpi = content.get("third_party_invite")
        if isinstance(tpi, Mapping) and "signed" in tpi:
            new_content["third_party_invite"] = {"signed": tpi["signed"]}
    pruned["content"] = new_content

    unsigned = pdu.get("unsigned")
    if isinstance(unsigned, Mapping):
        kept_unsigned = {k: unsigned[k] for k in _KEPT_UNSIGNED_KEYS if k in unsigned}
        if kept_unsigned:
            pruned["unsigned"] = kept_unsigned
    return pruned
