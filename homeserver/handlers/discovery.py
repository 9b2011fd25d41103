"""Discovery documents built from config (pure)."""

from __future__ import annotations

from typing import Any, Optional


def client_well_known(well_known: Any) -> Optional[dict[str, Any]]:
    """The ``/.well-known/matrix/client`` document, or None when not configured.

    ``well_known`` is the ``well_known`` config section. Login responses
    carry the same document as ``well_known``.
    """
    if well_known.client_base_url is None:
        return None
    body: dict[str, Any] = dict(well_known.client_extra)
    body["m.homeserver"] = {"base_url": well_known.client_base_url}
    return body
