"""Builds the part-B areas of issue 6: relations, directory, user directory, search, reports.

Composition only: stores over the shared database, handlers over the room
area built by :func:`workers.rooms.build_room_api`, and ``register_*``
functions mounting each surface on a ``JsonResource``. To serve bundled
aggregations, mount the room and sync APIs returned by
:func:`with_bundled_relations` instead of the plain ones.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from homeserver.handlers.rooms.relations import BundlingRoomHandler, BundlingSyncHandler, RelationsHandler
from storage.stores.relations import RelationStore


@attrs.define
class DirectoryApi:
    """The part-B handlers, wired."""

    relations: RelationsHandler
    relation_store: RelationStore
    extras: dict[str, Any] = attrs.field(factory=dict)


def build_directory_api(reactor: Any, server_name: str, database: Any, room_api: Any) -> DirectoryApi:
    """Compose relations (and the other part-B handlers) over ``room_api`` (a ``workers.rooms.RoomApi``)."""
    relation_store = RelationStore(database)
    relations = RelationsHandler(room_api.rooms, relation_store, room_api.store)
    return DirectoryApi(relations=relations, relation_store=relation_store)


def with_bundled_relations(api: DirectoryApi, room_api: Any, sync_api: Optional[Any] = None) -> tuple[Any, Any]:
    """``(room_api, sync_api)`` whose served events carry ``unsigned.m.relations``.

    Pass the results to ``register_room_api`` / ``register_sync_api``.
    """
    rooms = attrs.evolve(room_api, rooms=BundlingRoomHandler(room_api.rooms, api.relations))
    sync = attrs.evolve(sync_api, handler=BundlingSyncHandler(sync_api.handler, api.relations)) if sync_api else None
    return rooms, sync


def register_directory_api(resource: Any, api: DirectoryApi, authenticator: Any) -> None:
    """Mount the part-B endpoints of ``api`` on ``resource``."""
    from homeserver.rest.client.relations import register_relations

    register_relations(resource, api.relations, authenticator)
