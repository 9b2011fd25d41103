"""This server's signing keys, and validation of other servers' key responses.

Spec: server-server-api "Retrieving server keys" / "Publishing Keys"
(``GET /_matrix/key/v2/server``) and "Querying Keys Through Another Server".
The signing key file uses Synapse's format (one ``ed25519 <version> <seed>``
line per key) so a Synapse key file can be reused as is.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence

import attrs
import nacl.signing

from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import SignatureVerifyError
from homeserver.core.ids import is_valid_server_name
from homeserver.core.signing import (
    OldVerifyKey,
    build_server_keys,
    effective_valid_until_ts,
    encode_verify_key_base64,
    format_signing_key_file,
    generate_signing_key,
    get_verify_key,
    key_id_of,
    parse_signing_key_file,
    verify_key_from_base64,
    verify_signed_json,
)

logger = logging.getLogger(__name__)


class KeyLookupError(Exception):
    """A server's key could not be found or its key response is invalid."""


def load_or_generate_signing_keys(path: str) -> list[nacl.signing.SigningKey]:
    """The signing keys in ``path``, generating a new key file if there is none.

    Safe when several processes of one deployment start together: the new
    file is written aside and linked into place, so exactly one generated
    key wins and every process reads that one. The file is private (0600).
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            return parse_signing_key_file(f.read())
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    key = generate_signing_key()
    fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(format_signing_key_file([key]))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            logger.info("Generated a new signing key %s in %s", key_id_of(key), path)
        except FileExistsError:
            pass  # Another process won the race; use its key.
    finally:
        os.unlink(tmp)
    with open(path, "r", encoding="utf-8") as f:
        return parse_signing_key_file(f.read())


@attrs.frozen
class ServerKey:
    """One verify key of a server, as known to us.

    ``valid_until_ts`` is the effective validity (the lesser of the published
    ``valid_until_ts`` and 7 days after fetching); for a key published under
    ``old_verify_keys`` it equals ``expired_ts``.
    """

    server_name: str
    key_id: str
    key_base64: str
    valid_until_ts: int
    expired_ts: Optional[int] = None

    @property
    def is_old(self) -> bool:
        """Whether the server no longer signs with this key (requests must not use it)."""
        return self.expired_ts is not None

    def verify_key(self) -> nacl.signing.VerifyKey:
        """The decoded verify key."""
        return verify_key_from_base64(self.key_id, self.key_base64)

    def valid_for_request_at(self, now_ms: int) -> bool:
        """Whether it may authenticate a request made at ``now_ms``."""
        return not self.is_old and self.valid_until_ts >= now_ms


@attrs.frozen
class KeyResponse:
    """A validated ``/_matrix/key/v2/server`` response and who delivered it."""

    server_name: str
    #: The server we got it from: ``server_name`` itself or a notary.
    from_server: str
    fetched_ts: int
    #: ``valid_until_ts`` as published (the notary serves it unchanged).
    valid_until_ts: int
    keys: tuple[ServerKey, ...]
    #: The response object as received, signatures included.
    json: Mapping[str, Any]

    def key_json_bytes(self) -> bytes:
        """The response as canonical JSON (how it is stored)."""
        return encode_canonical_json(dict(self.json))


class LocalKeys:
    """This server's signing keys and the old verify keys it still publishes."""

    def __init__(
        self,
        server_name: str,
        signing_keys: Sequence[nacl.signing.SigningKey],
        old_keys: Iterable[OldVerifyKey] = (),
    ) -> None:
        if not signing_keys:
            raise ValueError("at least one signing key is needed")
        self.server_name = server_name
        self.signing_keys = tuple(signing_keys)
        self.old_keys = tuple(old_keys)

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The key used to sign requests and events (the first in the file)."""
        return self.signing_keys[0]

    def server_keys_response(self, now_ms: int, validity_ms: int) -> dict[str, Any]:
        """The signed body of ``GET /_matrix/key/v2/server``."""
        return build_server_keys(self.server_name, self.signing_keys, self.old_keys, now_ms + validity_ms)

    def server_key(self, key_id: str, now_ms: int, validity_ms: int) -> Optional[ServerKey]:
        """One of our keys as a :class:`ServerKey`, or None."""
        for k in self.signing_keys:
            if key_id_of(k) == key_id:
                return ServerKey(
                    self.server_name, key_id, encode_verify_key_base64(get_verify_key(k)), now_ms + validity_ms
                )
        for old in self.old_keys:
            if old.key_id == key_id:
                return ServerKey(self.server_name, key_id, old.key_base64, old.expired_ts, old.expired_ts)
        return None


def parse_key_response(
    obj: Any, expected_server_name: Optional[str], from_server: str, fetched_ts: int
) -> KeyResponse:
    """Validate a server's key response; KeyLookupError if unacceptable.

    Checks the shape (``server_name``, ``verify_keys``, ``old_verify_keys``,
    integer ``valid_until_ts``), that it is for ``expected_server_name``
    (when given), and that it is signed by the server itself: every
    signature the server made with a key listed in ``verify_keys`` must
    verify, and there must be at least one.
    """
    if not isinstance(obj, dict):
        raise KeyLookupError("key response is not a JSON object")
    server_name = obj.get("server_name")
    if not isinstance(server_name, str) or not is_valid_server_name(server_name):
        raise KeyLookupError("key response has no valid server_name")
    if expected_server_name is not None and server_name != expected_server_name:
        raise KeyLookupError(f"key response is for {server_name!r}, expected {expected_server_name!r}")
    valid_until = obj.get("valid_until_ts")
    if isinstance(valid_until, bool) or not isinstance(valid_until, int):
        raise KeyLookupError("key response has no integer valid_until_ts")
    verify_keys = obj.get("verify_keys")
    if not isinstance(verify_keys, dict):
        raise KeyLookupError("key response has no verify_keys object")
    old_verify_keys = obj.get("old_verify_keys", {})
    if not isinstance(old_verify_keys, dict):
        raise KeyLookupError("old_verify_keys is not an object")

    effective = effective_valid_until_ts(valid_until, fetched_ts)
    keys: list[ServerKey] = []
    decoded: dict[str, nacl.signing.VerifyKey] = {}
    for key_id, entry in verify_keys.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeyLookupError(f"verify key {key_id!r} has no key")
        if not key_id.startswith("ed25519:"):
            continue  # Unknown algorithm: not usable, not an error.
        try:
            decoded[key_id] = verify_key_from_base64(key_id, entry["key"])
        except ValueError as e:
            raise KeyLookupError(str(e)) from None
        keys.append(ServerKey(server_name, key_id, entry["key"], effective))
    for key_id, entry in old_verify_keys.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeyLookupError(f"old verify key {key_id!r} has no key")
        expired = entry.get("expired_ts")
        if isinstance(expired, bool) or not isinstance(expired, int):
            raise KeyLookupError(f"old verify key {key_id!r} has no integer expired_ts")
        if not key_id.startswith("ed25519:") or key_id in verify_keys:
            continue
        try:
            verify_key_from_base64(key_id, entry["key"])
        except ValueError as e:
            raise KeyLookupError(str(e)) from None
        keys.append(ServerKey(server_name, key_id, entry["key"], expired, expired))

    signatures = obj.get("signatures")
    own = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(own, dict):
        raise KeyLookupError(f"key response is not signed by {server_name}")
    checked = 0
    for key_id in own:
        if key_id not in decoded:
            continue
        try:
            verify_signed_json(obj, server_name, decoded[key_id])
        except SignatureVerifyError as e:
            raise KeyLookupError(f"bad self-signature on key response of {server_name}: {e}") from None
        checked += 1
    if checked == 0:
        raise KeyLookupError(f"key response of {server_name} is not signed by any of its verify_keys")
    return KeyResponse(server_name, from_server, fetched_ts, valid_until, tuple(keys), obj)


def check_notary_signature(obj: Mapping[str, Any], notary: str, pinned_keys: Mapping[str, str]) -> None:
    """Require a valid signature by ``notary`` with one of its pinned keys."""
    sigs = obj.get("signatures")
    mine = sigs.get(notary) if isinstance(sigs, dict) else None
    if not isinstance(mine, dict):
        raise KeyLookupError(f"response is not signed by notary {notary}")
    for key_id, key_b64 in pinned_keys.items():
        if key_id not in mine:
            continue
        try:
            verify_signed_json(obj, notary, verify_key_from_base64(key_id, key_b64))
            return
        except (SignatureVerifyError, ValueError) as e:
            raise KeyLookupError(f"bad signature by notary {notary}: {e}") from None
    raise KeyLookupError(f"response is not signed by any pinned key of notary {notary}")
