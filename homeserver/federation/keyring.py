"""Finding other servers' verify keys: PostgreSQL cache, the server itself, notaries.

Spec: server-server-api "Retrieving server keys". A key is looked up in the
database first; when it is unknown or not valid long enough it is fetched
from ``GET /_matrix/key/v2/server`` on the server itself and, failing that,
from each configured notary (``POST /_matrix/key/v2/query``), whose answers
must carry the notary's pinned signature as well as the origin's own. The
same class answers notary queries from other servers.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Optional, Protocol, Sequence

from twisted.internet import defer

from homeserver.core.auth import required_signature_servers
from homeserver.core.errors import SignatureVerifyError
from homeserver.core.events import Event
from homeserver.core.ids import is_valid_server_name
from homeserver.core.signing import (
    is_key_usable_for_event,
    sign_json,
    signature_key_ids,
    verify_event_signature,
    verify_signed_json,
)
from homeserver.federation.keys import (
    KeyLookupError,
    KeyResponse,
    LocalKeys,
    ServerKey,
    check_notary_signature,
    parse_key_response,
)

logger = logging.getLogger(__name__)


class KeyFetchClient(Protocol):
    """The part of the federation client the keyring needs."""

    async def get_json(self, destination: str, path: str, args: Optional[Mapping[str, Any]] = None, **kw: Any) -> Any: ...

    async def post_json(self, destination: str, path: str, data: Any, **kw: Any) -> Any: ...


class KeyStore(Protocol):
    """What :class:`storage.stores.server_keys.ServerKeyStore` provides."""

    def store_key_response(self, server_name: str, from_server: str, fetched_ts: int, key_json: str, keys: Any) -> Any: ...

    def get_server_keys(self, server_name: str, key_ids: Sequence[str]) -> Any: ...

    def get_key_jsons(self, server_name: str, key_ids: Optional[Sequence[str]] = None) -> Any: ...


class Keyring:
    """Verify keys of every server, fetched on demand and cached in PostgreSQL.

    ``trusted_key_servers`` is a sequence of objects with ``server_name``
    and ``verify_keys`` (key ID -> base64), as in the config.
    ``refetch_after_failure_ms`` stops a server that keeps failing from
    being asked again for every request it (or a forger) sends.
    """

    def __init__(
        self,
        clock: Any,
        local_keys: LocalKeys,
        store: KeyStore,
        client: Optional[KeyFetchClient],
        trusted_key_servers: Sequence[Any] = (),
        key_validity_ms: int = 24 * 3600 * 1000,
        refetch_after_failure_ms: int = 60 * 1000,
    ) -> None:
        self._clock = clock
        self._local = local_keys
        self._store = store
        self._client = client
        self._notaries = tuple(trusted_key_servers)
        self._validity_ms = key_validity_ms
        self._refetch_after_failure_ms = refetch_after_failure_ms
        self._failed_at: dict[str, int] = {}
        self._in_flight: dict[str, list[defer.Deferred]] = {}

    @property
    def server_name(self) -> str:
        return self._local.server_name

    def set_client(self, client: KeyFetchClient) -> None:
        """Late binding: the federation client itself needs the local keys first."""
        self._client = client

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- lookups ----------------------------------------------------------
    async def get_server_key(self, server_name: str, key_id: str, minimum_valid_until_ts: int) -> ServerKey:
        """The best known key ``key_id`` of ``server_name``.

        Fetches when the cached key is missing, or is a current key valid
        for less than ``minimum_valid_until_ts``. Old keys (``expired_ts``)
        are returned as they are; callers decide whether they may be used.
        Raises :class:`KeyLookupError` when no key with that ID is known
        at all. The result may still be stale if every source failed:
        callers check ``valid_until_ts`` themselves.
        """
        now = self.now_ms()
        if server_name == self._local.server_name:
            key = self._local.server_key(key_id, now, self._validity_ms)
            if key is None:
                raise KeyLookupError(f"we have no key {key_id}")
            return key
        if not is_valid_server_name(server_name):
            raise KeyLookupError(f"invalid server name {server_name!r}")
        cached = await self._cached(server_name, key_id)
        if cached is not None and (cached.is_old or cached.valid_until_ts >= minimum_valid_until_ts):
            return cached
        failed_at = self._failed_at.get(server_name)
        if failed_at is None or now - failed_at >= self._refetch_after_failure_ms:
            await self._refresh(server_name, [key_id], minimum_valid_until_ts)
            refreshed = await self._cached(server_name, key_id)
            if refreshed is not None:
                return refreshed
        if cached is not None:
            return cached
        raise KeyLookupError(f"no key {key_id} found for {server_name}")

    async def _cached(self, server_name: str, key_id: str) -> Optional[ServerKey]:
        rows = await self._store.get_server_keys(server_name, [key_id])
        row = rows.get(key_id)
        if row is None:
            return None
        return ServerKey(row.server_name, row.key_id, row.verify_key, row.valid_until_ts, row.expired_ts)

    async def _refresh(self, server_name: str, key_ids: Sequence[str], minimum_valid_until_ts: int) -> None:
        # Concurrent lookups for one server share one fetch.
        waiters = self._in_flight.get(server_name)
        if waiters is not None:
            d: defer.Deferred = defer.Deferred()
            waiters.append(d)
            await d
            return
        self._in_flight[server_name] = []
        try:
            await self._fetch_everywhere(server_name, key_ids, minimum_valid_until_ts)
        finally:
            for waiter in self._in_flight.pop(server_name, []):
                waiter.callback(None)

    async def _fetch_everywhere(self, server_name: str, key_ids: Sequence[str], minimum_valid_until_ts: int) -> None:
        try:
            response = await self.fetch_directly(server_name)
            if _satisfies(response, key_ids, minimum_valid_until_ts):
                self._failed_at.pop(server_name, None)
                return
        except Exception as e:
            logger.info("Fetching keys of %s directly failed: %s", server_name, e)
        for notary in self._notaries:
            if notary.server_name == server_name:
                continue
            try:
                responses = await self.fetch_from_notary(notary, {server_name: key_ids}, minimum_valid_until_ts)
            except Exception as e:
                logger.info("Fetching keys of %s from notary %s failed: %s", server_name, notary.server_name, e)
                continue
            if any(_satisfies(r, key_ids, minimum_valid_until_ts) for r in responses):
                self._failed_at.pop(server_name, None)
                return
        self._failed_at[server_name] = self.now_ms()

    async def fetch_directly(self, server_name: str) -> KeyResponse:
        """``GET /_matrix/key/v2/server`` on the server itself; stores the validated answer."""
        if self._client is None:
            raise KeyLookupError("no federation client")
        obj = await self._client.get_json(server_name, "/_matrix/key/v2/server", ignore_backoff=True)
        response = parse_key_response(obj, server_name, server_name, self.now_ms())
        await self._save(response)
        return response

    async def fetch_from_notary(
        self, notary: Any, wanted: Mapping[str, Sequence[str]], minimum_valid_until_ts: int
    ) -> list[KeyResponse]:
        """Ask a notary for keys; store and return the answers that validate."""
        if self._client is None:
            raise KeyLookupError("no federation client")
        body = {
            "server_keys": {
                server: {key_id: {"minimum_valid_until_ts": minimum_valid_until_ts} for key_id in key_ids}
                for server, key_ids in wanted.items()
            }
        }
        result = await self._client.post_json(notary.server_name, "/_matrix/key/v2/query", body, ignore_backoff=True)
        items = result.get("server_keys") if isinstance(result, dict) else None
        if not isinstance(items, list):
            raise KeyLookupError(f"notary {notary.server_name} sent no server_keys list")
        out = []
        now = self.now_ms()
        for item in items:
            try:
                if not isinstance(item, dict) or item.get("server_name") not in wanted:
                    raise KeyLookupError("unrequested or malformed entry")
                check_notary_signature(item, notary.server_name, notary.verify_keys)
                response = parse_key_response(item, None, notary.server_name, now)
            except KeyLookupError as e:
                logger.warning("Ignoring key response from notary %s: %s", notary.server_name, e)
                continue
            await self._save(response)
            out.append(response)
        return out

    async def _save(self, response: KeyResponse) -> None:
        await self._store.store_key_response(
            response.server_name,
            response.from_server,
            response.fetched_ts,
            response.key_json_bytes().decode("utf-8"),
            [(k.key_id, k.key_base64, k.valid_until_ts, k.expired_ts) for k in response.keys],
        )

    # -- signature checks -----------------------------------------------------
    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], minimum_valid_until_ts: int) -> None:
        """Require a valid signature on ``obj`` by ``server_name`` with a
        current key valid until at least ``minimum_valid_until_ts``.

        Raises :class:`SignatureVerifyError` (bad or missing signature, or
        no usable key).
        """
        key_ids = signature_key_ids(obj, server_name)
        if not key_ids:
            raise SignatureVerifyError(f"not signed by {server_name}")
        problems = []
        for key_id in key_ids:
            try:
                key = await self.get_server_key(server_name, key_id, minimum_valid_until_ts)
            except KeyLookupError as e:
                problems.append(str(e))
                continue
            if key.is_old or key.valid_until_ts < minimum_valid_until_ts:
                problems.append(f"key {key_id} not valid until {minimum_valid_until_ts}")
                continue
            verify_signed_json(obj, server_name, key.verify_key())
            return
        raise SignatureVerifyError(f"no usable key of {server_name}: {'; '.join(problems)}")

    async def verify_event_signatures(self, event: Event) -> None:
        """Check the signatures a received event must carry.

        Spec: server-server-api "Validating hashes and signatures on received
        events" (which servers: :func:`homeserver.core.auth.required_signature_servers`),
        fragment v5-signing-requirements (rooms v5+: the key must be valid at
        the event's ``origin_server_ts``) and old keys that expired before it
        are ignored. Each required server needs one valid signature.
        Raises :class:`SignatureVerifyError`.
        """
        room_version = event.room_version
        pdu = event.get_pdu_json()
        minimum = event.origin_server_ts if room_version.enforce_key_validity else 0
        for server_name in sorted(required_signature_servers(event)):
            key_ids = signature_key_ids(pdu, server_name)
            if not key_ids:
                raise SignatureVerifyError(f"event {event.event_id} is not signed by {server_name}")
            problems = []
            for key_id in key_ids:
                try:
                    key = await self.get_server_key(server_name, key_id, minimum)
                except KeyLookupError as e:
                    problems.append(str(e))
                    continue
                usable = is_key_usable_for_event(
                    room_version,
                    event.origin_server_ts,
                    valid_until_ts=None if key.is_old else key.valid_until_ts,
                    expired_ts=key.expired_ts,
                )
                if not usable:
                    problems.append(f"key {key_id} not valid at {event.origin_server_ts}")
                    continue
                try:
                    verify_event_signature(room_version, pdu, server_name, key.verify_key())
                except SignatureVerifyError as e:
                    problems.append(str(e))
                    continue
                break
            else:
                raise SignatureVerifyError(
                    f"event {event.event_id}: no valid signature by {server_name}: {'; '.join(problems)}"
                )

    # -- notary -------------------------------------------------------------
    async def query_keys_as_notary(
        self, query: Mapping[str, Mapping[str, Any]], default_minimum_valid_until_ts: Optional[int] = None
    ) -> list[dict[str, Any]]:
        """Answer ``/_matrix/key/v2/query``: ``query`` maps server name to
        key ID to query criteria (``{"minimum_valid_until_ts": ts}``); an
        empty mapping asks for every key, valid until at least
        ``default_minimum_valid_until_ts`` (default: now).

        Our own keys come fresh; other servers' come from the cache, fetched
        directly first when nothing cached satisfies the query (never from
        our own notaries: a notary does not launder others' answers). Cached
        answers are served even when stale: that is how the keys of servers
        that are down stay checkable. Every answer is signed by us.
        """
        now = self.now_ms()
        out: list[dict[str, Any]] = []
        for server_name, criteria in query.items():
            if server_name == self._local.server_name:
                out.append(self._local.server_keys_response(now, self._validity_ms))
                continue
            if not is_valid_server_name(server_name):
                continue
            key_ids = list(criteria)
            stored = await self._store.get_key_jsons(server_name, key_ids or None)
            default_min = now if default_minimum_valid_until_ts is None else default_minimum_valid_until_ts
            if not _stored_satisfies(stored, criteria, default_min):
                failed_at = self._failed_at.get(server_name)
                if failed_at is None or now - failed_at >= self._refetch_after_failure_ms:
                    try:
                        await self.fetch_directly(server_name)
                    except Exception as e:
                        self._failed_at[server_name] = now
                        logger.info("Notary fetch of %s's keys failed: %s", server_name, e)
                    stored = await self._store.get_key_jsons(server_name, key_ids or None)
            seen: set[str] = set()
            for row in stored:
                if row.key_json in seen:
                    continue
                seen.add(row.key_json)
                out.append(sign_json(_loads(row.key_json), self._local.server_name, self._local.signing_key))
        return out

    def own_keys_response(self) -> dict[str, Any]:
        """The body of our ``GET /_matrix/key/v2/server``."""
        return self._local.server_keys_response(self.now_ms(), self._validity_ms)


def _satisfies(response: KeyResponse, key_ids: Sequence[str], minimum_valid_until_ts: int) -> bool:
    by_id = {k.key_id: k for k in response.keys}
    for key_id in key_ids:
        k = by_id.get(key_id)
        if k is None or (not k.is_old and k.valid_until_ts < minimum_valid_until_ts):
            return False
    return True


def _stored_satisfies(stored: Sequence[Any], criteria: Mapping[str, Any], default_min: int) -> bool:
    if not stored:
        return False
    wanted = {key_id: _min_ts(c, default_min) for key_id, c in criteria.items()}
    if not wanted:
        return any(_loads(row.key_json).get("valid_until_ts", 0) >= default_min for row in stored)
    for key_id, minimum in wanted.items():
        ok = False
        for row in stored:
            obj = _loads(row.key_json)
            if key_id in obj.get("old_verify_keys", {}):
                ok = True
            elif key_id in obj.get("verify_keys", {}) and obj.get("valid_until_ts", 0) >= minimum:
                ok = True
        if not ok:
            return False
    return True


def _min_ts(criteria: Any, default_min: int) -> int:
    if isinstance(criteria, Mapping):
        value = criteria.get("minimum_valid_until_ts")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default_min


def _loads(text: str) -> dict[str, Any]:
    return json.loads(text)


