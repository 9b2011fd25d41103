"""Signing keys, JSON signatures, event hashes and event / room IDs.

Spec: appendices "Signing JSON", "Signing Details", "Checking for a
Signature", "Cryptographic key representation", "Cryptographic Test Vectors";
server-server-api "Signing Events", "Calculating the reference hash for an
event", "Calculating the content hash for an event", "Retrieving server keys";
room version fragments v1-event-ids, v4-event-ids, room v3 "Event IDs" and
v12 room IDs (appendices "Room IDs").

Key objects are signedjson / PyNaCl keys (``nacl.signing.SigningKey`` with
``alg`` and ``version`` attributes), so they interoperate with any code using
signedjson. Encoding for signatures and hashes goes through our own canonical
JSON encoder, which is byte-for-byte the spec's.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Any, Iterable, Mapping

import attrs
import nacl.exceptions
import nacl.signing
from signedjson.key import (
    NACL_ED25519,
    decode_signing_key_base64,
    decode_verify_key_bytes,
    encode_signing_key_base64,
    encode_verify_key_base64,
    get_verify_key,
)
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import SignatureVerifyError
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import EventFormat, RoomVersion

__all__ = [
    "NACL_ED25519",
    "OldVerifyKey",
    "generate_signing_key",
    "get_verify_key",
    "parse_signing_key_file",
    "format_signing_key_file",
    "signing_key_from_seed",
    "key_id_of",
    "verify_key_from_base64",
    "encode_verify_key_base64",
    "sign_json",
    "verify_signed_json",
    "compute_content_hash",
    "compute_reference_hash",
    "compute_event_id",
    "compute_room_id",
    "add_hashes_and_signatures",
    "check_content_hash",
    "build_server_keys",
    "parse_old_verify_keys",
    "verify_event_signature",
    "effective_valid_until_ts",
    "is_key_usable_for_event",
]

_KEY_VERSION_CHARS = string.ascii_letters + string.digits + "_"


# --- Keys ------------------------------------------------------------------


def generate_signing_key(version: str | None = None) -> nacl.signing.SigningKey:
    """Generate a new ed25519 server signing key.

    Spec: server-server-api "Retrieving server keys" (key IDs are
    ``ed25519:<version>``). Without ``version``, one like Synapse's is made:
    ``a_`` followed by four random letters/digits.
    """
    if version is None:
        version = "a_" + "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(4)
        )
    _check_key_version(version)
    key = nacl.signing.SigningKey.generate()
    key.version = version  # type: ignore[attr-defined]
    key.alg = NACL_ED25519  # type: ignore[attr-defined]
    return key


def signing_key_from_seed(version: str, seed: bytes) -> nacl.signing.SigningKey:
    """Build an ed25519 signing key from its 32-byte seed (appendices
    "Cryptographic Test Vectors" uses a fixed seed)."""
    _check_key_version(version)
    return decode_signing_key_base64(NACL_ED25519, version, encode_base64(seed))


def _check_key_version(version: str) -> None:
    # Key versions appear in key IDs `ed25519:<version>`; the spec restricts
    # them to [a-zA-Z0-9_] (server-server-api "Retrieving server keys").
    if not version or not all(c in _KEY_VERSION_CHARS for c in version):
        raise ValueError("Key version %r must be non-empty [a-zA-Z0-9_]" % (version,))


def key_id_of(key: Any) -> str:
    """The key ID ``<algorithm>:<version>`` of a signing or verify key."""
    return "%s:%s" % (key.alg, key.version)


def parse_signing_key_file(text: str) -> list[nacl.signing.SigningKey]:
    """Parse a signing key file: one ``ed25519 <version> <base64 seed>`` per
    non-blank line, the format Synapse reads and writes. Raises ValueError
    naming the bad line."""
    keys = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(
                "Signing key file line %d: expected 'ed25519 <version> <seed>'" % lineno
            )
        algorithm, version, seed_b64 = parts
        if algorithm != NACL_ED25519:
            raise ValueError(
                "Signing key file line %d: unsupported algorithm %r" % (lineno, algorithm)
            )
        _check_key_version(version)
        try:
            seed = decode_base64(seed_b64)
        except Exception:
            raise ValueError("Signing key file line %d: invalid base64" % lineno) from None
        if len(seed) != 32:
            raise ValueError("Signing key file line %d: seed must be 32 bytes" % lineno)
        keys.append(signing_key_from_seed(version, seed))
    if not keys:
        raise ValueError("Signing key file contains no keys")
    return keys


def format_signing_key_file(keys: Iterable[nacl.signing.SigningKey]) -> str:
    """Serialise signing keys in the ``ed25519 <version> <base64 seed>``
    one-per-line format (inverse of :func:`parse_signing_key_file`)."""
    return "".join(
        "%s %s %s\n" % (key.alg, key.version, encode_signing_key_base64(key))  # type: ignore[attr-defined]
        for key in keys
    )


def verify_key_from_base64(key_id: str, key_base64: str) -> nacl.signing.VerifyKey:
    """Decode a published verify key (``verify_keys`` entries of
    ``/_matrix/key/v2/server``). Raises ValueError for unsupported algorithms
    or bad encodings."""
    try:
        key_bytes = decode_base64(key_base64)
    except Exception:
        raise ValueError("Invalid base64 for key %s" % key_id) from None
    try:
        return decode_verify_key_bytes(key_id, key_bytes)
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError) as e:
        raise ValueError("Invalid verify key %s: %s" % (key_id, e)) from None


@attrs.frozen
class OldVerifyKey:
    """A verify key this server no longer signs with, published under
    ``old_verify_keys`` with the time it expired (server-server-api
    "Publishing Keys")."""

    key_id: str
    key_base64: str
    expired_ts: int

    def verify_key(self) -> nacl.signing.VerifyKey:
        """The decoded verify key."""
        return verify_key_from_base64(self.key_id, self.key_base64)


def parse_old_verify_keys(config: Mapping[str, Any]) -> list[OldVerifyKey]:
    """Parse old verify keys from configuration in Synapse's
    ``old_signing_keys`` shape: ``{key_id: {"key": base64, "expired_ts":
    ms}}``. Validates every key; raises ValueError naming the bad entry."""
    result = []
    for key_id, entry in config.items():
        if not isinstance(key_id, str) or not key_id.startswith(NACL_ED25519 + ":"):
            raise ValueError("Old verify key ID %r must be ed25519:<version>" % (key_id,))
        _check_key_version(key_id.split(":", 1)[1])
        if not isinstance(entry, Mapping):
            raise ValueError("Old verify key %s must be an object" % key_id)
        key_b64 = entry.get("key")
        expired_ts = entry.get("expired_ts")
        if not isinstance(key_b64, str):
            raise ValueError("Old verify key %s needs a base64 'key'" % key_id)
        if type(expired_ts) is not int:
            raise ValueError("Old verify key %s needs an integer 'expired_ts'" % key_id)
        old = OldVerifyKey(key_id, key_b64, expired_ts)
        old.verify_key()  # raises ValueError if the key does not decode
        result.append(old)
    return result


def build_server_keys(
    server_name: str,
    signing_keys: Iterable[nacl.signing.SigningKey],
    old_keys: Iterable[OldVerifyKey],
    valid_until_ts: int,
) -> dict[str, Any]:
    """Build the signed body of ``GET /_matrix/key/v2/server``.

    Spec: server-server-api "Publishing Keys": ``server_name``,
    ``verify_keys`` (key ID -> ``{"key": base64}``), ``old_verify_keys``
    (key ID -> ``{"key", "expired_ts"}``), ``valid_until_ts``, signed by every
    current signing key.
    """
    signing_keys = list(signing_keys)
    body: dict[str, Any] = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {
            key_id_of(k): {"key": encode_verify_key_base64(get_verify_key(k))}
            for k in signing_keys
        },
        "old_verify_keys": {
            k.key_id: {"key": k.key_base64, "expired_ts": k.expired_ts}
            for k in old_keys
        },
    }
    for key in signing_keys:
        body = sign_json(body, server_name, key)
    return body


# --- JSON signatures -------------------------------------------------------


def _signable_bytes(json_object: Mapping[str, Any]) -> bytes:
    unsigned_copy = {
        k: v for k, v in json_object.items() if k not in ("signatures", "unsigned")
    }
    # Old room versions may contain floats or large integers; what is signed
    # is whatever the sender encoded, so encode leniently.
    return encode_canonical_json(unsigned_copy, allow_floats=True)


def sign_json(
    json_object: Mapping[str, Any], signature_name: str, signing_key: nacl.signing.SigningKey
) -> dict[str, Any]:
    """Return a copy of ``json_object`` with a signature by ``signing_key``
    added under ``signatures[signature_name][key_id]``.

    Spec: appendices "Signing Details": ``signatures`` and ``unsigned`` are
    excluded from the signed bytes, the canonical JSON is signed with ed25519
    and the signature stored in unpadded base64. Existing signatures are kept.
    """
    signature = signing_key.sign(_signable_bytes(json_object)).signature
    result = dict(json_object)
    signatures = {
        name: dict(sigs) for name, sigs in (json_object.get("signatures") or {}).items()
    }
    signatures.setdefault(signature_name, {})[key_id_of(signing_key)] = encode_base64(
        signature
    )
    result["signatures"] = signatures
    return result


def verify_signed_json(
    json_object: Mapping[str, Any], signature_name: str, verify_key: nacl.signing.VerifyKey
) -> None:
    """Check that ``json_object`` carries a valid signature by
    ``signature_name`` with ``verify_key``.

    Spec: appendices "Checking for a Signature". Raises
    :class:`SignatureVerifyError` when the signature is missing, not valid
    base64, or does not verify.
    """
    key_id = key_id_of(verify_key)
    try:
        signature_b64 = json_object["signatures"][signature_name][key_id]
    except (KeyError, TypeError):
        raise SignatureVerifyError(
            "Missing signature for %s with key %s" % (signature_name, key_id)
        ) from None
    if not isinstance(signature_b64, str):
        raise SignatureVerifyError("Signature for %s is not a string" % signature_name)
    try:
        signature = decode_base64(signature_b64)
    except Exception:
        raise SignatureVerifyError(
            "Invalid base64 in signature for %s" % signature_name
        ) from None
    try:
        message = _signable_bytes(json_object)
    except ValueError as e:
        raise SignatureVerifyError("Cannot encode signed object: %s" % e) from None
    try:
        verify_key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise SignatureVerifyError(
            "Invalid signature for %s with key %s" % (signature_name, key_id)
        ) from None


def signature_key_ids(json_object: Mapping[str, Any], signature_name: str) -> list[str]:
    """The key IDs with supported algorithms (ed25519) that
    ``signature_name`` signed ``json_object`` with (appendices "Checking for a
    Signature", step 2)."""
    sigs = json_object.get("signatures")
    if not isinstance(sigs, Mapping):
        return []
    mine = sigs.get(signature_name)
    if not isinstance(mine, Mapping):
        return []
    return sorted(k for k in mine if isinstance(k, str) and k.startswith(NACL_ED25519 + ":"))


# --- Event hashes and IDs --------------------------------------------------

# Synapse also strips these legacy top-level keys before computing the content
# hash; follow it so our hashes match on events it builds. Spec
# (server-server-api "Calculating the content hash") lists only unsigned,
# signatures and hashes.
_CONTENT_HASH_EXCLUDED = ("unsigned", "signatures", "hashes", "age_ts", "outlier", "destinations")


def compute_content_hash(event_dict: Mapping[str, Any]) -> bytes:
    """The sha256 content hash of an event.

    Spec: server-server-api "Calculating the content hash for an event":
    remove ``unsigned``, ``signatures`` and ``hashes`` (and, as Synapse does,
    the legacy ``age_ts``, ``outlier``, ``destinations``), encode as
    canonical JSON and hash with SHA-256. Returns the raw 32-byte digest.
    """
    stripped = {k: v for k, v in event_dict.items() if k not in _CONTENT_HASH_EXCLUDED}
    return hashlib.sha256(encode_canonical_json(stripped, allow_floats=True)).digest()


def compute_reference_hash(room_version: RoomVersion, event_dict: Mapping[str, Any]) -> bytes:
    """The sha256 reference hash of an event.

    Spec: server-server-api "Calculating the reference hash for an event":
    redact per the room version, drop ``signatures`` and ``unsigned``, encode
    as canonical JSON and hash with SHA-256. Returns the raw 32-byte digest.
    """
    pruned = prune_event_dict(room_version, event_dict)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    pruned.pop("age_ts", None)
    return hashlib.sha256(encode_canonical_json(pruned, allow_floats=True)).digest()


def compute_event_id(room_version: RoomVersion, event_dict: Mapping[str, Any]) -> str:
    """The event ID of an event in a room of ``room_version``.

    Spec: room v3 "Event IDs" (``$`` + unpadded standard base64 of the
    reference hash), fragment v4-event-ids (URL-safe unpadded base64, rooms
    v4+). Rooms v1 and v2 (fragment v1-event-ids) carry the ID in the event
    itself; it is returned from ``event_dict["event_id"]`` (ValueError if
    absent). For v3+ any ``event_id`` key in ``event_dict`` is ignored.
    """
    if room_version.event_format is EventFormat.V1:
        event_id = event_dict.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("Events in room version %s carry an event_id" % room_version.identifier)
        return event_id
    if "event_id" in event_dict:
        event_dict = {k: v for k, v in event_dict.items() if k != "event_id"}
    digest = compute_reference_hash(room_version, event_dict)
    url_safe = room_version.event_format is not EventFormat.V2
    return "$" + encode_base64(digest, urlsafe=url_safe)


def compute_room_id(room_version: RoomVersion, create_event_dict: Mapping[str, Any]) -> str:
    """The room ID of a room whose ID is derived from its create event
    (room v12; appendices "Room IDs"): the create event's event ID with the
    sigil ``!`` instead of ``$``. Raises ValueError for other room versions."""
    if not room_version.room_id_is_create_event_hash:
        raise ValueError(
            "Room IDs are not derived from the create event in room version %s"
            % room_version.identifier
        )
    return "!" + compute_event_id(room_version, create_event_dict)[1:]


def add_hashes_and_signatures(
    room_version: RoomVersion,
    event_dict: Mapping[str, Any],
    signature_name: str,
    signing_key: nacl.signing.SigningKey,
) -> dict[str, Any]:
    """Return a copy of ``event_dict`` with its content hash and this
    server's signature added.

    Spec: server-server-api "Adding hashes and signatures to outgoing
    events": compute the content hash into ``hashes.sha256``, redact the
    event, sign the redacted form and copy the signature back.
    """
    result = dict(event_dict)
    result["hashes"] = {"sha256": encode_base64(compute_content_hash(result))}
    redacted = prune_event_dict(room_version, result)
    signed = sign_json(redacted, signature_name, signing_key)
    result["signatures"] = signed["signatures"]
    return result


def check_content_hash(event_dict: Mapping[str, Any]) -> bool:
    """Whether the ``hashes.sha256`` of a received event matches its content.

    Spec: server-server-api "Validating hashes and signatures on received
    events": on mismatch the receiver must use the redacted form instead.
    """
    hashes = event_dict.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    expected_b64 = hashes.get("sha256")
    if not isinstance(expected_b64, str):
        return False
    try:
        expected = decode_base64(expected_b64)
    except Exception:
        return False
    try:
        actual = compute_content_hash(event_dict)
    except ValueError:
        return False
    return secrets.compare_digest(expected, actual)



def verify_event_signature(
    room_version: RoomVersion,
    event_dict: Mapping[str, Any],
    server_name: str,
    verify_key: nacl.signing.VerifyKey,
) -> None:
    """Check ``server_name``'s signature on an event.

    Spec: server-server-api "Validating hashes and signatures on received
    events": the event is redacted per its room version and the redacted form
    checked (so this succeeds on full and redacted copies alike). Raises
    :class:`SignatureVerifyError`.
    """
    verify_signed_json(prune_event_dict(room_version, event_dict), server_name, verify_key)


# fragment v5-signing-requirements: servers use the lesser of valid_until_ts
# and 7 days after fetching.
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000


def effective_valid_until_ts(valid_until_ts: int, fetched_at_ms: int) -> int:
    """The validity limit to store for a fetched server key: the lesser of its
    ``valid_until_ts`` and 7 days after it was fetched (fragment
    v5-signing-requirements)."""
    return min(valid_until_ts, fetched_at_ms + MAX_KEY_VALIDITY_MS)


def is_key_usable_for_event(
    room_version: RoomVersion,
    origin_server_ts: int,
    valid_until_ts: int | None = None,
    expired_ts: int | None = None,
) -> bool:
    """Whether a server key may verify an event sent at ``origin_server_ts``.

    Spec: fragment v5-signing-requirements (rooms v5+: the key's
    ``valid_until_ts`` must be at least ``origin_server_ts``) and
    server-server-api "Validating hashes and signatures on received events"
    (old keys that expired before ``origin_server_ts`` are ignored).
    ``valid_until_ts`` is for current keys, ``expired_ts`` for old keys.
    """
    if expired_ts is not None and expired_ts < origin_server_ts:
        return False
    if (
        room_version.enforce_key_validity
        and valid_until_ts is not None
        and valid_until_ts < origin_server_ts
    ):
        return False
    return True
