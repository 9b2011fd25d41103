"""Drive a real twisted.web ``Site`` through an in-memory transport.

The request is written as raw HTTP/1.1 bytes into the site's protocol and the
response parsed back out of a ``StringTransport``: the whole HTTP stack runs,
no socket is opened, and handlers that finish without waiting on real I/O
answer before :func:`make_request` returns. Handlers that wait on a fake
clock are driven by advancing it and then reading :attr:`FakeResponse.done`.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.server import Site


class FakeResponse:
    """The bytes a site wrote back, parsed once complete."""

    def __init__(self, transport: StringTransport) -> None:
        self._transport = transport

    @property
    def done(self) -> bool:
        raw = self._transport.value()
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = self._header_from(head, b"content-length")
        if length is None:
            return self._transport.disconnecting
        return len(body) >= int(length)

    @staticmethod
    def _header_from(head: bytes, name: bytes) -> Optional[bytes]:
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name:
                return v.strip()
        return None

    def _parts(self) -> tuple[bytes, bytes]:
        if not self.done:
            raise AssertionError("response not complete")
        head, _, body = self._transport.value().partition(b"\r\n\r\n")
        return head, body

    @property
    def code(self) -> int:
        head, _ = self._parts()
        return int(head.split(b"\r\n")[0].split(b" ")[1])

    def header(self, name: str) -> Optional[str]:
        head, _ = self._parts()
        value = self._header_from(head, name.lower().encode("ascii"))
        return None if value is None else value.decode("latin-1")

    @property
    def body(self) -> bytes:
        _, body = self._parts()
        return body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def make_request(
    site: Site,
    method: str,
    path: str,
    body: Union[bytes, str, dict, list, None] = None,
    headers: Optional[dict[str, str]] = None,
    access_token: Optional[str] = None,
    client_ip: str = "127.0.0.1",
) -> FakeResponse:
    """Send one request into ``site`` and return its (possibly pending) response."""
    if isinstance(body, (dict, list)):
        payload = json.dumps(body).encode("utf-8")
    elif isinstance(body, str):
        payload = body.encode("utf-8")
    else:
        payload = body or b""
    hdrs = {"Host": "localhost", "Content-Length": str(len(payload))}
    if access_token is not None:
        hdrs["Authorization"] = f"Bearer {access_token}"
    hdrs.update(headers or {})
    raw = f"{method} {path} HTTP/1.1\r\n".encode("ascii")
    for k, v in hdrs.items():
        raw += f"{k}: {v}\r\n".encode("latin-1")
    raw += b"\r\n" + payload

    proto = site.buildProtocol(IPv4Address("TCP", client_ip, 12345))
    transport = StringTransport(peerAddress=IPv4Address("TCP", client_ip, 12345))
    proto.makeConnection(transport)
    proto.dataReceived(raw)
    return FakeResponse(transport)
