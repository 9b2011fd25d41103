"""The role registry: what each role mounts, consumes and owns.

A process hosts one or many roles (``instances.<name>.roles``). For each,
:data:`ROLES` says which HTTP surfaces it mounts (through ``mount``, called
with the process context and the instance's JSON resource), which bus
streams it consumes and what it owns. Roles implemented by later work
declare their routes in ``workers/routes.py`` already, so adding their
handlers is the only change they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

from homeserver.config import roles as r

if TYPE_CHECKING:
    from homeserver.http.server import JsonResource
    from workers.app import ProcessContext

#: A mount may be a coroutine function (building some surfaces reads the database first).
Mount = Callable[["ProcessContext", "JsonResource"], Any]


def _nothing(ctx: "ProcessContext", resource: "JsonResource") -> None:
    return None


def account_api(ctx: "ProcessContext") -> Any:
    """The accounts object graph of this process, built on first use."""
    api = ctx.features.get("accounts")
    if api is None:
        import redis.asyncio as aioredis

        from bus.ratelimit import RedisRateLimiter
        from homeserver.config.accounts import AccountsConfig
        from workers.accounts import build_account_api

        client = aioredis.Redis.from_url(ctx.config.redis.url)
        ctx.on_stop(lambda: _close_redis(client))
        api = build_account_api(ctx.reactor, AccountsConfig.from_homeserver_config(ctx.config), ctx.database, RedisRateLimiter(client))
        ctx.features["accounts"] = api
        _wire_caches(ctx, api)
    return api


def _wire_caches(ctx: "ProcessContext", api: Any) -> None:
    """Token cache invalidations over the ``caches`` stream (see ``workers/caches.py``)."""
    from workers.caches import CacheInvalidations, caches_shard, wire_token_invalidation

    names = list(ctx.config.instances)
    invalidations = CacheInvalidations(
        ctx.database, ctx.bus, caches_shard(names, ctx.instance.name), len(names), {},
        api.authenticator.evict_all,
    )
    wire_token_invalidation(api.authenticator, invalidations)
    invalidations.start()
    ctx.on_stop(invalidations.stop)


def _close_redis(client: Any) -> Any:
    import asyncio

    from twisted.internet.defer import Deferred

    return Deferred.fromFuture(asyncio.ensure_future(client.aclose()))


def _mount_accounts(ctx: "ProcessContext", resource: "JsonResource") -> None:
    """Discovery, registration, login, devices, profiles, account data, filters.

    Mounted once per process even when several client roles share it; the
    router decides which of those requests reach this instance.
    """
    if ctx.features.get("accounts_mounted"):
        return
    from homeserver.rest.client import register_account_api

    register_account_api(resource, account_api(ctx), admin=r.ADMIN in ctx.instance.roles)
    ctx.features["accounts_mounted"] = True


def federation_api(ctx: "ProcessContext") -> Any:
    """The federation object graph of this process, built on first use."""
    fed = ctx.features.get("federation")
    if fed is None:
        from bus.signals import RedisSignals
        from workers.federation import build_federation

        # Pub/sub channels are shared by every database of a Redis server:
        # the server name keeps two deployments on one Redis apart.
        signals = RedisSignals(ctx.config.redis.url, prefix=f"estuary:{ctx.config.server_name}:signal:")
        ctx.on_stop(signals.close)
        fed = build_federation(ctx.reactor, ctx.config, ctx.database, ctx.instance.name, signals=signals)
        ctx.features["federation"] = fed
    return fed


def federation_rooms(ctx: "ProcessContext") -> Any:
    """The room side of federation (needs the rooms graph built first), built on first use."""
    rooms = ctx.features.get("federation_rooms")
    if rooms is None:
        from workers.federation import build_federation_rooms

        fed = federation_api(ctx)
        rooms = build_federation_rooms(
            ctx.reactor, ctx.config.server_name, ctx.database, ctx.features["rooms"].rooms, ctx.dispatcher,
            fed.keyring, fed.client, fed.queue, ephemeral=ctx.features["rooms"].ephemeral,
            profiles=account_api(ctx).profiles, instance_name=ctx.instance.name,
        )
        ctx.features["federation_rooms"] = rooms
        directory = ctx.features.get("directory")
        if directory is not None:
            directory.api.directory.remote_public_rooms = rooms.query_public_rooms
    return rooms


async def _mount_federation_inbound(ctx: "ProcessContext", resource: "JsonResource") -> None:
    from workers.federation import mount_federation_inbound, mount_federation_rooms, start_federation_inbound

    fed = federation_api(ctx)
    mount_federation_inbound(fed, resource)
    await _mount_rooms(ctx, resource)
    rooms = federation_rooms(ctx)
    mount_federation_rooms(resource, rooms, fed.authenticator)
    # PDUs staged by an instance that died before processing them.
    start_federation_inbound(rooms, ctx.on_stop)
    keys = ctx.features["rooms"].keys
    if keys is not None:
        from homeserver.rest.federation.rooms import register_federation_keys

        register_federation_keys(resource, keys.keys, fed.authenticator)


def _start_federation_sender(ctx: "ProcessContext", resource: "JsonResource") -> None:
    from workers.federation import start_federation_sender

    start_federation_sender(federation_api(ctx), ctx.on_stop)


async def _mount_rooms(ctx: "ProcessContext", resource: "JsonResource") -> None:
    """Rooms, events, relations, directory and search, typing/receipts on
    client readers and writers; /sync on sync workers.

    Built and mounted once per process whatever combination of those roles
    it holds (``RoomsProcess.mount`` picks the surfaces by role).
    """
    if ctx.features.get("rooms") is not None:
        return
    from workers.directory import build_directory_process
    from workers.rooms import build_rooms_process

    accounts = account_api(ctx)
    rooms = await build_rooms_process(ctx, accounts)
    ctx.features["rooms"] = rooms
    # Relations, aliases, directory, search and reports wrap the room API;
    # the wrapped surfaces are what gets mounted.
    served = build_directory_process(ctx, accounts, rooms)
    ctx.features["directory"] = served
    served.mount(resource, accounts.authenticator, ctx.instance.roles)
    ctx.on_stop(served.stop)
    # Profile changes re-send the user's member events (on each room's owner).
    from homeserver.handlers.profile_members import ProfileMemberUpdater

    updater = ProfileMemberUpdater(rooms.rooms.rooms, ctx.dispatcher)
    accounts.profiles.observers.append(updater.on_profile_change)
    # Deactivated accounts leave their rooms (through each room's shard owner).
    from workers.rooms import part_on_deactivation

    part_on_deactivation(accounts, rooms.rooms, rooms.commands)
    _mount_server_notices(ctx, resource, accounts, rooms)
    if r.ADMIN in ctx.instance.roles:
        _mount_admin_rooms(resource, accounts, rooms.rooms)
    # Received PDUs and remote joins run on the events writer; its local
    # events go out to the other servers of their rooms.
    fed_rooms = federation_rooms(ctx)
    if rooms.keys is not None:
        # Remote keys are queried and claimed over federation; device list EDUs go out and come in.
        rooms.keys.keys.attach_federation(federation_api(ctx).client, federation_api(ctx).queue, fed_rooms.edu_handlers)


def _mount_admin_rooms(resource: "JsonResource", accounts: Any, room_api: Any) -> None:
    """The admin API's room endpoints (reads of PostgreSQL; any instance can serve them)."""
    from homeserver.handlers.admin import AdminRooms
    from homeserver.rest.admin.rooms import register

    register(resource, AdminRooms(accounts.admin_store, room_api.store, room_api.loader), accounts.authenticator)


def _mount_server_notices(ctx: "ProcessContext", resource: "JsonResource", accounts: Any, rooms: Any) -> None:
    """Server notices: the leave guard everywhere rooms run, the admin endpoint on admin instances."""
    from homeserver.config.server_notices import ServerNoticesConfig
    from homeserver.handlers.server_notices import ServerNoticesHandler
    from storage.stores.server_notices import ServerNoticeStore

    config = ctx.config.sections.get("server_notices", ServerNoticesConfig())
    notices = ServerNoticesHandler(
        ctx.reactor, ctx.config.server_name, config, ServerNoticeStore(ctx.database, accounts.account_store),
        rooms.commands, accounts.account_data,
    )
    rooms.rooms.rooms.leave_guards.append(notices.check_leave)
    ctx.features["server_notices"] = notices
    if r.ADMIN in ctx.instance.roles:
        from homeserver.rest.admin.server_notices import register

        register(resource, notices, accounts.authenticator)


def _mount_client(ctx: "ProcessContext", resource: "JsonResource") -> Any:
    _mount_accounts(ctx, resource)
    return _mount_rooms(ctx, resource)


def _start_background(ctx: "ProcessContext", resource: "JsonResource") -> None:
    """Contend for the background lock; run the periodic jobs while holding it."""
    from storage.locks import SessionLock
    from workers.background import LOCK_NAME, BackgroundRunner
    from workers.jobs import background_jobs

    def lock_factory(on_acquired, on_lost):
        return SessionLock(ctx.config.database.dsn, ctx.reactor, LOCK_NAME, on_acquired, on_lost)

    runner = BackgroundRunner(ctx.reactor, lock_factory, background_jobs(ctx))
    runner.start()
    ctx.on_stop(runner.stop)


@attrs.frozen
class RoleSpec:
    name: str
    description: str
    #: Streams whose facts this role reads from the bus.
    consumes: tuple[str, ...] = ()
    #: What the role exclusively owns (shards, locks, queues).
    owns: str = ""
    mount: Mount = _nothing


ROLE_SPECS: dict[str, RoleSpec] = {
    r.CLIENT_READER: RoleSpec(r.CLIENT_READER, "read-only client-server endpoints", consumes=("caches",), mount=_mount_client),
    r.CLIENT_WRITER: RoleSpec(
        r.CLIENT_WRITER,
        "creates and persists events, receipts, account data, to-device, device lists, presence and typing",
        consumes=("caches",),
        owns="the stream shards assigned in instances.<name>.shards",
        mount=_mount_client,
    ),
    r.SYNC: RoleSpec(
        r.SYNC,
        "/sync and sliding sync from in-memory stream tails",
        consumes=("events", "receipts", "typing", "presence", "to_device", "account_data", "device_lists", "push_rules", "caches"),
        mount=_mount_rooms,
    ),
    r.FEDERATION_INBOUND: RoleSpec(
        r.FEDERATION_INBOUND, "the server-server API and key server", consumes=("caches",),
        owns="the processing of received PDUs, per room (leases in federation_inbound_room_leases)",
        mount=_mount_federation_inbound,
    ),
    r.FEDERATION_SENDER: RoleSpec(
        r.FEDERATION_SENDER,
        "outbound federation transactions",
        consumes=("events", "receipts", "typing", "presence", "device_lists", "to_device"),
        owns="destinations hashed to this instance",
        mount=_start_federation_sender,
    ),
    r.MEDIA: RoleSpec(r.MEDIA, "media upload, download and thumbnails"),
    r.PUSHER: RoleSpec(r.PUSHER, "push notifications", consumes=("events", "receipts"), owns="users hashed to this instance"),
    r.BACKGROUND: RoleSpec(
        r.BACKGROUND, "periodic jobs; one active instance (PostgreSQL advisory lock)", owns="the background lock", mount=_start_background
    ),
    r.ADMIN: RoleSpec(r.ADMIN, "the Synapse-compatible admin API", mount=_mount_client),
}

assert set(ROLE_SPECS) == set(r.ROLES)

