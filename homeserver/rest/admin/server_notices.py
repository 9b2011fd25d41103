"""``/_synapse/admin/v1/send_server_notice`` (Synapse-compatible admin API)."""

from __future__ import annotations

from typing import Any

from homeserver.handlers.auth import require_admin
from homeserver.http.server import JsonResource, parse_json_object


def register(resource: JsonResource, notices: Any, authenticator: Any) -> None:
    """Mount the send-server-notice endpoints (admins only)."""

    async def send(request: Any, txnId: Any = None) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        body = parse_json_object(request)
        user_id, content, event_type = notices.parse_body(body)
        event_id = await notices.send_notice(user_id, content, event_type, txn_id=txnId)
        return 200, {"event_id": event_id}

    resource.register("POST", "/_synapse/admin/v1/send_server_notice", send, name="admin_send_server_notice")
    resource.register("PUT", "/_synapse/admin/v1/send_server_notice/{txnId}", send, name="admin_send_server_notice_txn")
