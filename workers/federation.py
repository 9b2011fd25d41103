"""Builds the federation object graph (issue 8) from the config.

``workers`` is the one place that knows storage, the HTTP client and the
handlers together. :func:`build_federation` composes them once per
process; :func:`mount_federation_inbound` and :func:`start_federation_sender`
are the ``mount`` functions of the ``federation_inbound`` and
``federation_sender`` roles (``workers/roles.py``).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from homeserver.config import roles as r
from homeserver.config.federation import FederationConfig
from homeserver.core.signing import OldVerifyKey
from homeserver.federation.backoff import BackoffPolicy
from homeserver.federation.destinations import DestinationBackoff
from homeserver.federation.discovery import ServerResolver
from homeserver.federation.ip_filter import DEFAULT_BLOCKED_RANGES, AddressFilter, parse_networks
from homeserver.federation.keyring import Keyring
from homeserver.federation.keys import LocalKeys, load_or_generate_signing_keys
from homeserver.federation.sender import FederationQueue, FederationSender
from homeserver.http.federation_client import FederationClient, HttpWellKnownFetcher, TlsPolicy, TwistedDnsResolver
from homeserver.http.server import JsonResource
from homeserver.rest.federation.auth import FederationAuthenticator
from homeserver.rest.federation.keys import register_key_server, register_version
from storage.stores.federation import FederationQueueStore
from storage.stores.server_keys import ServerKeyStore


@attrs.define
class Federation:
    """The federation pieces of one process, wired together."""

    config: FederationConfig
    local_keys: LocalKeys
    keyring: Keyring
    client: FederationClient
    backoff: DestinationBackoff
    queue_store: FederationQueueStore
    authenticator: FederationAuthenticator
    dns: Any
    #: Where PDUs and EDUs for other servers are queued (any process).
    queue: FederationQueue
    #: Only on processes with the ``federation_sender`` role.
    sender: Optional[FederationSender] = None


#: The signal naming a destination that has queued work (see :func:`build_federation`).
WAKE_SIGNAL = "federation_wake"


def build_federation(
    reactor: Any,
    homeserver_config: Any,
    database: Any,
    instance_name: str,
    dns: Any = None,
    well_known: Any = None,
    signals: Any = None,
) -> Federation:
    """Compose keys, keyring, client, backoff, authenticator and (on sender
    instances) the transaction sender. ``dns`` / ``well_known`` default to the
    real resolvers; tests pass fakes.

    ``signals`` (a ``bus.signals.RedisSignals``): a process that queues work
    for a destination owned by a sender elsewhere signals it, and sender
    instances listen, so a transaction leaves at once rather than at the
    sender's next poll (which still finds anything a lost signal missed).
    """
    config: FederationConfig = homeserver_config.sections["federation"]
    server_name = homeserver_config.server_name
    signing_keys = load_or_generate_signing_keys(homeserver_config.signing_key_path)
    old = [OldVerifyKey(k.key_id, k.key_base64, k.expired_ts) for k in config.old_signing_keys]
    local_keys = LocalKeys(server_name, signing_keys, old)

    tls = TlsPolicy.from_config(config.verify_certificates, config.ca_certificates_path)
    blocked = DEFAULT_BLOCKED_RANGES if config.ip_range_blocklist is None else config.ip_range_blocklist
    address_filter = AddressFilter(parse_networks(blocked), parse_networks(config.ip_range_allowlist))
    dns = dns or TwistedDnsResolver(reactor)
    well_known = well_known or HttpWellKnownFetcher(reactor, tls, dns, address_filter=address_filter)
    queue_store = FederationQueueStore(database)
    backoff = DestinationBackoff(
        reactor,
        queue_store,
        BackoffPolicy(
            min_interval_ms=config.destination_min_retry_interval_ms,
            max_interval_ms=config.destination_max_retry_interval_ms,
            multiplier=config.destination_retry_multiplier,
        ),
    )
    client = FederationClient(
        reactor,
        server_name,
        local_keys.signing_key,
        ServerResolver(reactor, dns, well_known),
        dns,
        tls,
        backoff=backoff,
        timeout=config.request_timeout_seconds,
        address_filter=address_filter,
    )
    keyring = Keyring(
        reactor,
        local_keys,
        ServerKeyStore(database),
        client,
        config.trusted_key_servers,
        key_validity_ms=config.key_refresh_interval_ms,
    )

    sender = None
    senders = sorted(i.name for i in homeserver_config.instances_with_role(r.FEDERATION_SENDER))
    if instance_name in senders:
        sender = FederationSender(
            reactor,
            server_name,
            instance_name,
            senders,
            queue_store,
            client,
            backoff,
            poll_interval_seconds=config.sender_poll_interval_seconds,
            catch_up_threshold=config.sender_catch_up_threshold,
        )
    authenticator = FederationAuthenticator(
        server_name, keyring, on_origin_seen=sender.destination_is_up if sender is not None else None
    )
    queue = sender.queue if sender is not None else FederationQueue(reactor, server_name, queue_store)
    if signals is not None and senders:
        local = sender

        def on_queued(destination: str) -> None:
            if local is not None and local.owns(destination):
                local.wake(destination)
            else:
                signals.publish(WAKE_SIGNAL, destination)

        queue.set_on_queued(on_queued)
        if sender is not None:
            signals.listen(WAKE_SIGNAL, sender.wake)
    return Federation(config, local_keys, keyring, client, backoff, queue_store, authenticator, dns, queue, sender)


def mount_federation_inbound(federation: Federation, resource: JsonResource) -> None:
    """The key server, notary and version endpoints (unauthenticated by spec).
    Later inbound endpoints wrap their handlers with
    ``federation.authenticator.wrap``."""
    register_key_server(resource, federation.keyring)
    register_version(resource)


def start_federation_sender(federation: Federation, on_stop: Any) -> None:
    """Start delivering queued transactions; ``on_stop`` registers the shutdown hook."""
    if federation.sender is None:
        raise ValueError("this instance has no federation_sender role")
    federation.sender.start()
    on_stop(federation.sender.stop)
    on_stop(federation.client.close)
    if hasattr(federation.dns, "close"):
        on_stop(federation.dns.close)


def build_federation_rooms(
    reactor: Any, server_name: str, database: Any, room_api: Any, dispatcher: Any, keyring: Any, client: Any, queue: Any,
    ephemeral: Any = None, profiles: Any = None, instance_name: str = "main",
    inbound_options: Optional[dict[str, Any]] = None,
) -> Any:
    """The room side of federation for one process (``FederationRooms``).

    Registers the shard-owner commands on ``dispatcher`` (received PDUs and
    send_join/send_leave run on the room's events writer), makes every
    event created locally by ``room_api.creator`` queued for the other
    servers of its room in the transaction that persists it (and the local
    sender woken through ``queue``), and builds the staging of received
    PDUs (``rooms.inbound``; its sweep is started by
    :func:`start_federation_inbound` on ``federation_inbound`` instances).
    Aliases and (with ``profiles``, the ``ProfileHandler``) profiles of
    other servers are asked of them.
    """
    from homeserver.federation.queries import RemoteQueries
    from homeserver.federation.events import FederationEventHandler
    from homeserver.federation.inbound import InboundPduProcessor
    from homeserver.federation.rooms import FederationRooms
    from storage.stores.federation_events import FederationEventStore
    from storage.stores.federation_inbound import InboundStagingStore

    fed_store = FederationEventStore(database)
    handler = FederationEventHandler(reactor, room_api.creator, room_api.store, fed_store, keyring, client)
    rooms = FederationRooms(reactor, server_name, handler, dispatcher, room_api.store, fed_store, queue)
    rooms.register_commands()
    rooms.inbound_store = InboundStagingStore(database)
    rooms.inbound = InboundPduProcessor(reactor, instance_name, rooms.inbound_store, rooms.process_staged_pdu,
                                        **(inbound_options or {}))
    room_api.creator.outbound_for = rooms.outbound_pdu
    room_api.creator.observers.append(rooms.on_local_event)
    room_api.rooms.remote_join = rooms.join_remote
    room_api.rooms.remote_invite = rooms.invite_remote
    room_api.rooms.remote_leave = rooms.leave_remote
    room_api.rooms.remote_knock = rooms.knock_remote
    room_api.rooms.remote_restricted_join = rooms.join_authorised_remotely
    room_api.rooms.remote_backfill = lambda room_id, limit: handler.backfill(room_id, server_name, limit)
    rooms.profile_lookup = getattr(room_api.rooms, "_profile", None)
    queries = RemoteQueries(reactor, client)
    room_api.rooms.remote_alias = queries.alias
    if profiles is not None:
        profiles.remote = queries
    # /publicRooms, /timestamp_to_event and /openid/userinfo read shared tables:
    # stateless handlers over this process's database.
    from homeserver.handlers.directory import DirectoryHandler
    from homeserver.handlers.openid import OpenIdHandler
    from storage.stores.directory import DirectoryStore
    from storage.stores.openid import OpenIdTokenStore
    from storage.stores.room_lookups import RoomLookupStore

    rooms.public_rooms = DirectoryHandler(server_name, room_api.rooms, room_api.store, DirectoryStore(database)).public_rooms
    rooms.lookup_store = RoomLookupStore(database)
    rooms.openid = OpenIdHandler(reactor, server_name, OpenIdTokenStore(database))
    hierarchy = getattr(room_api, "hierarchy", None)
    if hierarchy is not None:
        rooms.hierarchy = hierarchy
        hierarchy.remote_hierarchy = rooms.fetch_hierarchy
    if ephemeral is not None:
        rooms.attach_ephemeral(ephemeral.typing, ephemeral.receipts)
        writer = getattr(ephemeral, "presence_writer", None)
        if writer is not None and writer.enabled and getattr(ephemeral, "presence_commands", None) is not None:
            rooms.attach_presence(writer, ephemeral.presence_store)
        if getattr(ephemeral, "to_device_commands", None) is not None:
            rooms.attach_to_device(ephemeral.to_device_commands)
    return rooms


def start_federation_inbound(rooms: Any, on_stop: Any) -> None:
    """Process staged PDUs left by crashed instances (at start and periodically); ``on_stop`` registers the shutdown hook."""
    rooms.inbound.start()
    on_stop(rooms.inbound.stop)


def mount_federation_rooms(resource: JsonResource, rooms: Any, authenticator: Any) -> None:
    """Mount the authenticated room endpoints (``/send``, state, backfill, joins...)."""
    from homeserver.rest.federation.rooms import register_federation_rooms

    from homeserver.rest.federation.directory import register_federation_directory

    register_federation_rooms(resource, rooms, authenticator)
    register_federation_directory(resource, rooms, authenticator)
