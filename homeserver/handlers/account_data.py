"""Account data (global and per room), room tags and filters.

Writes go to the account data store, which assigns each a position of the
``account_data`` stream (see ``storage/stores/account_data.py`` for how
that maps onto per-user shards). In a multi-writer deployment these writes
must run on the shard owner; the forwarding helper lands with the
replication API and wraps :meth:`AccountDataHandler.set_account_data` and
:meth:`AccountDataHandler.set_tag` / ``remove_tag``.
"""

from __future__ import annotations

from typing import Any, Optional

from homeserver.errors import MatrixError, Codes, bad_json, forbidden, invalid_param, not_found
from homeserver.handlers.auth import Requester

#: Types the server manages itself (spec: 405 M_BAD_JSON when clients set them).
SERVER_MANAGED_GLOBAL = frozenset({"m.push_rules"})
SERVER_MANAGED_ROOM = frozenset({"m.fully_read"})
MAX_TYPE_BYTES = 255
MAX_TAG_BYTES = 255


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!") or len(room_id.encode("utf-8")) > 255:
        raise invalid_param("Invalid room ID")


def _check_type(data_type: str) -> None:
    if not data_type or len(data_type.encode("utf-8")) > MAX_TYPE_BYTES:
        raise invalid_param("Invalid account data type")


class AccountDataHandler:
    """``/user/{userId}/account_data``, ``/rooms/{roomId}/account_data`` and ``/tags``."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def use_writer(self, writer: "AccountDataCommands") -> None:
        """Send writes through ``writer`` (to the owner of each user's shard)."""
        self._store = writer

    @staticmethod
    def _own(requester: Requester, user_id: str, what: str) -> None:
        if requester.user_id != user_id:
            raise forbidden(f"Cannot {what} account data for other users.")

    async def set_account_data(
        self, requester: Requester, user_id: str, room_id: Optional[str], data_type: str, content: dict[str, Any]
    ) -> int:
        """Replace one type's content; returns the stream position written."""
        self._own(requester, user_id, "add")
        _check_type(data_type)
        if room_id is not None:
            _check_room_id(room_id)
        managed = SERVER_MANAGED_ROOM if room_id is not None else SERVER_MANAGED_GLOBAL
        if data_type in managed:
            raise MatrixError(405, Codes.BAD_JSON, f"Cannot set {data_type} through this API.")
        return await self._store.set_account_data(user_id, room_id, data_type, content)

    async def get_account_data(self, requester: Requester, user_id: str, room_id: Optional[str], data_type: str) -> dict[str, Any]:
        """One type's content, 404 if never set."""
        self._own(requester, user_id, "get")
        if room_id is not None:
            _check_room_id(room_id)
        content = await self._store.get_account_data(user_id, room_id, data_type)
        if content is None:
            raise not_found("Account data not found")
        return content

    async def get_tags(self, requester: Requester, user_id: str, room_id: str) -> dict[str, Any]:
        """``GET /user/{userId}/rooms/{roomId}/tags``."""
        self._own(requester, user_id, "get")
        _check_room_id(room_id)
        content = await self._store.get_account_data(user_id, room_id, "m.tag")
        tags = content.get("tags") if isinstance(content, dict) else None
        return {"tags": tags if isinstance(tags, dict) else {}}

    async def set_tag(self, requester: Requester, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> int:
        """``PUT .../tags/{tag}``: ``order`` must be a number when present."""
        self._own(requester, user_id, "add")
        _check_room_id(room_id)
        if not tag or len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise invalid_param("Invalid tag")
        order = body.get("order")
        if "order" in body and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise bad_json("'order' must be a number")
        return await self._store.update_tags(user_id, room_id, tag, body)

    async def remove_tag(self, requester: Requester, user_id: str, room_id: str, tag: str) -> int:
        """``DELETE .../tags/{tag}`` (succeeds if the tag was absent)."""
        self._own(requester, user_id, "remove")
        _check_room_id(room_id)
        return await self._store.update_tags(user_id, room_id, tag, None)


# -- filters ------------------------------------------------------------------

_EVENT_FILTER_LISTS = ("not_senders", "not_types", "senders", "types")
_ROOM_EVENT_FILTER_LISTS = _EVENT_FILTER_LISTS + ("not_rooms", "rooms")
_ROOM_EVENT_FILTER_BOOLS = ("lazy_load_members", "include_redundant_members", "unread_thread_notifications", "contains_url")


def _string_list(value: Any, where: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{where}' must be a list of strings")


def _event_filter(value: Any, where: str, room_event: bool) -> None:
    if not isinstance(value, dict):
        raise bad_json(f"'{where}' must be an object")
    if "limit" in value:
        limit = value["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise bad_json(f"'{where}.limit' must be a positive integer")
    for key in _ROOM_EVENT_FILTER_LISTS if room_event else _EVENT_FILTER_LISTS:
        if key in value:
            _string_list(value[key], f"{where}.{key}")
    if room_event:
        for key in _ROOM_EVENT_FILTER_BOOLS:
            if key in value and not isinstance(value[key], bool):
                raise bad_json(f"'{where}.{key}' must be a boolean")


def validate_filter(body: dict[str, Any]) -> None:
    """400 ``M_BAD_JSON`` unless ``body`` has the shape of a sync filter (``sync_filter.yaml``).

    Unknown keys are allowed (the schema does not forbid them), wrong types
    of known keys are not.
    """
    if "event_fields" in body:
        _string_list(body["event_fields"], "event_fields")
    if "event_format" in body and body["event_format"] not in ("client", "federation"):
        raise bad_json("'event_format' must be 'client' or 'federation'")
    for key in ("presence", "account_data"):
        if key in body:
            _event_filter(body[key], key, room_event=False)
    if "room" in body:
        room = body["room"]
        if not isinstance(room, dict):
            raise bad_json("'room' must be an object")
        for key in ("rooms", "not_rooms"):
            if key in room:
                _string_list(room[key], f"room.{key}")
        if "include_leave" in room and not isinstance(room["include_leave"], bool):
            raise bad_json("'room.include_leave' must be a boolean")
        for key in ("ephemeral", "state", "timeline", "account_data"):
            if key in room:
                _event_filter(room[key], f"room.{key}", room_event=True)


class FilterHandler:
    """``POST/GET /user/{userId}/filter``."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def create(self, requester: Requester, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Validate and store a filter: ``{"filter_id": "N"}``."""
        if requester.user_id != user_id:
            raise forbidden("Cannot create filters for other users")
        validate_filter(body)
        filter_id = await self._store.add_filter(user_id, body)
        return {"filter_id": str(filter_id)}

    async def get(self, requester: Requester, user_id: str, filter_id: str) -> dict[str, Any]:
        """A stored filter; 404 for ids that are unknown or not numbers."""
        if requester.user_id != user_id:
            raise forbidden("Cannot get filters for other users")
        if not filter_id.isdigit() or len(filter_id) > 18:
            raise not_found("Filter not found")
        found = await self._store.get_filter(user_id, int(filter_id))
        if found is None:
            raise not_found("Filter not found")
        return found


class AccountDataCommands:
    """Account data writes, run on the owner of the user's ``account_data`` shard.

    Stands in for the store where writes happen (the account data handler,
    read markers, server notices): ``set_account_data`` and ``update_tags``
    become the ``account_data.set`` / ``account_data.tags`` commands of the
    dispatcher; reads go to the store. Retries are harmless: both writes
    set a value rather than add to one.
    """

    def __init__(self, dispatcher: Any, store: Any) -> None:
        self._dispatcher = dispatcher
        self._store = store
        self.observers = store.observers

    def register(self) -> None:
        self._dispatcher.register("account_data.set", "account_data", self._set)
        self._dispatcher.register("account_data.tags", "account_data", self._tags)

    async def set_account_data(self, user_id: str, room_id: Optional[str], data_type: str, content: dict[str, Any]) -> int:
        result = await self._dispatcher.run("account_data.set", user_id, {
            "user_id": user_id, "room_id": room_id, "type": data_type, "content": content})
        return int(result["stream_id"])

    async def update_tags(self, user_id: str, room_id: str, tag: str, content: Optional[dict[str, Any]]) -> int:
        result = await self._dispatcher.run("account_data.tags", user_id, {
            "user_id": user_id, "room_id": room_id, "tag": tag, "content": content})
        return int(result["stream_id"])

    def get_account_data(self, user_id: str, room_id: Optional[str], data_type: str) -> Any:
        return self._store.get_account_data(user_id, room_id, data_type)

    def get_changes_since(self, user_id: str, since: int) -> Any:
        return self._store.get_changes_since(user_id, since)

    async def _set(self, args: dict[str, Any]) -> dict[str, Any]:
        content = args.get("content")
        if not isinstance(content, dict):
            raise bad_json("content must be an object")
        room_id = args.get("room_id")
        stream_id = await self._store.set_account_data(str(args["user_id"]), room_id if isinstance(room_id, str) else None,
                                                       str(args["type"]), content)
        return {"stream_id": stream_id}

    async def _tags(self, args: dict[str, Any]) -> dict[str, Any]:
        content = args.get("content")
        if content is not None and not isinstance(content, dict):
            raise bad_json("content must be an object")
        stream_id = await self._store.update_tags(str(args["user_id"]), str(args["room_id"]), str(args["tag"]), content)
        return {"stream_id": stream_id}
