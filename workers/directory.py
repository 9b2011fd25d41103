"""Builds the part-B areas of issue 6: relations, directory, user directory, search, reports.

Composition only: stores over the shared database, handlers over the room
area built by :func:`workers.rooms.build_room_api`, and ``register_*``
functions mounting each surface on a ``JsonResource``. To serve bundled
aggregations, mount the room and sync APIs returned by
:func:`extend_room_api` instead of the plain ones.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.rooms.relations import RelationsHandler
from homeserver.handlers.rooms.served import IgnoredLookup, ServedRoomHandler, ServedSyncHandler, make_ignored_lookup
from homeserver.handlers.search import ReportHandler, SearchHandler, UserDirectoryHandler
from storage.stores.directory import DirectoryStore
from storage.stores.relations import RelationStore


@attrs.define
class DirectoryApi:
    """The part-B handlers, wired."""

    relations: RelationsHandler
    relation_store: RelationStore
    directory: DirectoryHandler
    directory_store: DirectoryStore
    search: SearchHandler
    user_directory: UserDirectoryHandler
    reports: ReportHandler
    #: ``ignored(user_id)``: the senders a user ignores (None: ignore lists not honoured).
    ignored: Optional[IgnoredLookup] = None


def build_directory_api(server_name: str, database: Any, room_api: Any,
                        account_data_store: Optional[Any] = None) -> DirectoryApi:
    """Compose the part-B handlers over ``room_api`` (a ``workers.rooms.RoomApi``).

    ``account_data_store`` (``AccountApi.account_data_store``) lets served
    events honour each user's ``m.ignored_user_list``.
    """
    ignored = make_ignored_lookup(account_data_store) if account_data_store is not None else None
    relation_store = RelationStore(database)
    relations = RelationsHandler(room_api.rooms, relation_store, room_api.store, ignored)
    directory_store = DirectoryStore(database)
    directory = DirectoryHandler(server_name, room_api.rooms, room_api.store, directory_store)
    return DirectoryApi(
        relations=relations, relation_store=relation_store, directory=directory, directory_store=directory_store,
        search=SearchHandler(room_api.rooms, relations, relation_store, room_api.store),
        user_directory=UserDirectoryHandler(directory_store),
        reports=ReportHandler(room_api.rooms, room_api.store, directory_store, server_name),
        ignored=ignored,
    )


def extend_room_api(api: DirectoryApi, room_api: Any, sync_api: Optional[Any] = None) -> tuple[Any, Any]:
    """``(room_api, sync_api)`` serving events with ``unsigned.m.relations``, without senders the
    requester ignores (see :func:`build_directory_api`), and validating ``m.room.canonical_alias``
    state against the alias table.

    Pass the results to ``register_room_api`` / ``register_sync_api``, and set the
    room commands' handler (``RoomCommands.rooms``) to the returned room handler.
    """
    ignored = api.ignored
    rooms = attrs.evolve(room_api, rooms=ServedRoomHandler(room_api.rooms, api.relations, api.directory, ignored))
    sync = None
    if sync_api is not None:
        sync = attrs.evolve(sync_api, handler=ServedSyncHandler(sync_api.handler, api.relations, ignored))
    return rooms, sync


def register_legacy_sync_api(resource: Any, api: DirectoryApi, served_room_api: Any, served_sync_api: Any,
                             authenticator: Any, account_data_store: Optional[Any] = None) -> None:
    """Mount GET /initialSync, /events and /rooms/{roomId}/initialSync (the ``sync`` role serves them)
    over the APIs returned by :func:`extend_room_api`."""
    from homeserver.handlers.legacy import LegacySyncHandler
    from homeserver.rest.client.legacy import register_legacy

    legacy = LegacySyncHandler(served_sync_api.handler, served_room_api.rooms, served_room_api.store, api.directory_store,
                               account_data_store)
    register_legacy(resource, legacy, authenticator)


def register_directory_api(resource: Any, api: DirectoryApi, authenticator: Any) -> None:
    """Mount the part-B endpoints of ``api`` on ``resource``."""
    from homeserver.rest.client.directory import register_directory
    from homeserver.rest.client.relations import register_relations
    from homeserver.rest.client.search import register_search

    register_relations(resource, api.relations, authenticator)
    register_directory(resource, api.directory, authenticator)
    register_search(resource, api.search, api.user_directory, api.reports, authenticator)


# -- one process -------------------------------------------------------------------


@attrs.define
class DirectoryProcess:
    """Part B for one process: its handlers and the rooms surfaces they extend."""

    api: DirectoryApi
    #: ``workers.rooms.RoomsProcess`` whose room and sync handlers serve part B's additions.
    rooms: Any
    account_data_store: Any

    def mount(self, resource: Any, authenticator: Any, roles: frozenset[str]) -> None:
        """Mount the rooms surfaces (extended) and part B's endpoints per ``roles``.

        Call this *instead of* ``RoomsProcess.mount``: part B's endpoints on
        client readers and writers, the legacy sync endpoints on sync workers.
        """
        from homeserver.config import roles as r

        self.rooms.mount(resource, authenticator, roles)
        if roles & {r.CLIENT_READER, r.CLIENT_WRITER}:
            register_directory_api(resource, self.api, authenticator)
        if self.rooms.sync is not None:
            register_legacy_sync_api(resource, self.api, self.rooms.rooms, self.rooms.sync, authenticator,
                                     self.account_data_store)

    def stop(self) -> Any:
        """Stop what the rooms process runs."""
        return self.rooms.stop()


def build_directory_process(ctx: Any, account_api: Any, rooms_process: Any) -> DirectoryProcess:
    """Part B over ``rooms_process`` (from ``workers.rooms.build_rooms_process``) for the process of ``ctx``."""
    api = build_directory_api(ctx.config.server_name, ctx.database, rooms_process.rooms, account_api.account_data_store)
    rooms_api, sync_api = extend_room_api(api, rooms_process.rooms, rooms_process.sync)
    # Writes run as commands on the shard owner: with the served handler's checks.
    rooms_process.commands.rooms = rooms_api.rooms
    served = attrs.evolve(rooms_process, rooms=rooms_api, sync=sync_api)
    return DirectoryProcess(api=api, rooms=served, account_data_store=account_api.account_data_store)
