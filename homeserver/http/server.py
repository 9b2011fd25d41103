"""The JSON HTTP edge: routing, body parsing, errors, CORS and metrics.

Every API surface (client, federation, admin, media, internal replication,
health) is a :class:`JsonResource` with handlers registered against
``METHOD`` + path template. A handler is ``async def handler(request,
**path_args)`` returning ``(status, json_body)`` or a :class:`RawResponse`.
Raising :class:`homeserver.errors.MatrixError` produces the spec's error
body; any other exception is logged and answered ``500 M_UNKNOWN`` (a bug
to fix, never an expected path).

Only this package knows ``twisted.web``; handlers receive the request only to
read headers/arguments through the helpers below.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from typing import Any, Awaitable, Callable, Iterable, Optional, Union
from urllib.parse import unquote

import attrs
from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from homeserver.errors import Codes, MatrixError, bad_json, not_json

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "estuary_http_requests_total",
    "HTTP requests served, by endpoint name, method and status code",
    ["endpoint", "method", "code"],
)
REQUEST_LATENCY = Histogram(
    "estuary_http_request_seconds",
    "Time to answer an HTTP request, by endpoint name",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

#: Request bodies larger than this are refused with 413 M_TOO_LARGE unless a
#: route sets its own limit (media uploads do).
DEFAULT_MAX_BODY = 1024 * 1024

CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"Synapse-Trace-Id, Server",
}


@attrs.frozen
class RawResponse:
    """A non-JSON response body (metrics text, media bytes)."""

    code: int
    body: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[..., Awaitable[Union[tuple[int, Any], RawResponse]]]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def compile_path(template: str) -> re.Pattern[str]:
    """Turn ``/rooms/{roomId}/send/{eventType}/{txnId}`` into a regex.

    Each placeholder matches one path segment (no ``/``); the raw segment is
    URL-decoded before the handler sees it. A template ending in ``{name:*}``
    is not supported on purpose: Matrix paths are segment-based.
    """
    pattern = ""
    last = 0
    for m in _PLACEHOLDER.finditer(template):
        pattern += re.escape(template[last : m.start()])
        pattern += f"(?P<{m.group(1)}>[^/]+)"
        last = m.end()
    pattern += re.escape(template[last:])
    return re.compile("^" + pattern + "$")


@attrs.frozen
class Route:
    method: bytes
    pattern: re.Pattern[str]
    handler: Handler
    name: str
    max_body: int


class JsonResource(resource.Resource):
    """A leaf resource dispatching on method and path to async handlers."""

    isLeaf = True

    def __init__(self, clock: Any, cors: bool = True) -> None:
        super().__init__()
        self._clock = clock
        self._routes: list[Route] = []
        self._cors = cors

    def register(
        self,
        method: str,
        templates: Union[str, Iterable[str]],
        handler: Handler,
        name: Optional[str] = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        """Serve ``method`` on every path template given."""
        if isinstance(templates, str):
            templates = [templates]
        for template in templates:
            self._routes.append(
                Route(
                    method=method.encode("ascii"),
                    pattern=compile_path(template),
                    handler=handler,
                    name=name or handler.__name__,
                    max_body=max_body,
                )
            )

    def routes(self) -> list[Route]:
        """The registered routes (for tests and the router's self-checks)."""
        return list(self._routes)

    # -- dispatch -------------------------------------------------------
    def render(self, request: server.Request) -> Any:
        start = time.perf_counter()
        path = request.path.decode("utf-8", "replace")
        method = request.method
        if self._cors:
            for k, v in CORS_HEADERS.items():
                request.setHeader(k, v)

        matched_path = False
        route: Optional[Route] = None
        args: dict[str, str] = {}
        for r in self._routes:
            m = r.pattern.match(path)
            if m is None:
                continue
            matched_path = True
            if r.method == method or (method == b"HEAD" and r.method == b"GET"):
                route = r
                args = {k: unquote(v) for k, v in m.groupdict().items()}
                break

        if route is None:
            if method == b"OPTIONS" and matched_path:
                request.setResponseCode(204)
                return b""
            if matched_path:
                err = MatrixError(405, Codes.UNRECOGNIZED, "Unrecognized request")
                name = "method_not_allowed"
            else:
                err = MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
                name = "unrecognized"
            _write_json(request, err.code, err.to_json())
            _observe(name, method, err.code, start)
            return server.NOT_DONE_YET

        request.estuary_max_body = route.max_body  # type: ignore[attr-defined]
        d = defer.ensureDeferred(_run(route, request, args))

        def done(result: Any) -> None:
            code = result if isinstance(result, int) else 500
            _observe(route.name, method, code, start)

        d.addBoth(done)
        return server.NOT_DONE_YET


async def _run(route: Route, request: server.Request, args: dict[str, str]) -> int:
    try:
        result = await route.handler(request, **args)
    except MatrixError as e:
        result = (e.code, e.to_json())
    except Exception as e:
        if request._disconnected or request.finished:  # type: ignore[attr-defined]
            # Already answered or abandoned (the client left, or a stopping
            # process cut the request after its drain time): the failure is
            # a consequence, e.g. the database pool closing under it.
            logger.info("abandoned request %s %s ended with %r", route.name, request.path, e)
            return 499
        logger.error(
            "Unhandled error serving %s %s", route.name, request.path, exc_info=True
        )
        result = (500, {"errcode": Codes.UNKNOWN, "error": "Internal server error"})
    if request._disconnected or request.finished:  # type: ignore[attr-defined]
        return 499
    if isinstance(result, RawResponse):
        request.setResponseCode(result.code)
        request.setHeader(b"Content-Type", result.content_type)
        for k, v in result.headers:
            request.setHeader(k, v)
        request.setHeader(b"Content-Length", str(len(result.body)).encode())
        if request.method != b"HEAD":
            request.write(result.body)
        request.finish()
        return result.code
    code, body = result
    _write_json(request, code, body)
    return code


def _write_json(request: server.Request, code: int, body: Any) -> None:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(data)).encode())
    request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
    if request.method != b"HEAD":
        request.write(data)
    request.finish()


def _observe(name: str, method: bytes, code: int, start: float) -> None:
    REQUESTS.labels(name, method.decode("ascii", "replace"), str(code)).inc()
    REQUEST_LATENCY.labels(name).observe(time.perf_counter() - start)


# -- request helpers (handlers use these, never twisted.web directly) ----


def read_body(request: IRequest) -> bytes:
    """The raw request body, refusing one over the route's size limit."""
    limit = getattr(request, "estuary_max_body", DEFAULT_MAX_BODY)
    content = request.content
    if content is None:
        return b""
    if content.closed:
        # The client went away before the handler read the body (twisted
        # closes it on connection loss): nobody reads the answer, but the
        # request must end as a Matrix error, not an unhandled exception.
        raise MatrixError(400, Codes.UNKNOWN, "The request body is gone: the client disconnected")
    content.seek(0)
    data = content.read(limit + 1)
    if len(data) > limit:
        raise MatrixError(413, Codes.TOO_LARGE, "Request body too large")
    return data


def parse_json_value(request: IRequest, allow_empty: bool = False) -> Any:
    """The request body as JSON, or ``M_NOT_JSON``.

    Refuses the non-standard constants ``NaN``/``Infinity`` that Python's
    json module would otherwise accept. ``allow_empty`` turns an empty body
    into ``None``.
    """
    data = read_body(request)
    if not data.strip():
        if allow_empty:
            return None
        raise not_json()
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError):
        raise not_json()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def parse_json_object(request: IRequest, allow_empty: bool = False) -> dict[str, Any]:
    """The request body, which must be a JSON object (``M_BAD_JSON`` if not).

    An empty body is ``{}`` when ``allow_empty`` is set (several endpoints,
    e.g. ``/join``, allow posting nothing).
    """
    value = parse_json_value(request, allow_empty=allow_empty)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_json("Content must be a JSON object.")
    return value


def query_arg(request: IRequest, name: str, default: Optional[str] = None) -> Optional[str]:
    """The last value of query parameter ``name``, decoded, or ``default``."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} is not UTF-8")


def query_args(request: IRequest, name: str) -> list[str]:
    """Every value of query parameter ``name``."""
    try:
        return [v.decode("utf-8") for v in request.args.get(name.encode("ascii"), [])]
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} is not UTF-8")


def query_int(
    request: IRequest,
    name: str,
    default: Optional[int] = None,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
) -> Optional[int]:
    """An integer query parameter, ``M_INVALID_PARAM`` if it is not one.

    Values above ``maximum`` are clamped (as servers do for ``limit``);
    values below ``minimum`` are refused.
    """
    raw = query_arg(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be an integer")
    if minimum is not None and value < minimum:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        value = maximum
    return value


def header(request: IRequest, name: str) -> Optional[str]:
    """A request header as text, or ``None``."""
    value = request.getHeader(name)
    if value is None:
        return None
    return value if isinstance(value, str) else value.decode("latin-1")


def access_token(request: IRequest) -> Optional[str]:
    """The access token from ``Authorization: Bearer`` or ``?access_token``.

    Follows "Using access tokens" in the client-server API: the header is
    preferred; the query parameter is deprecated but still accepted.
    """
    auth = header(request, "Authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    values = request.args.get(b"access_token")
    if values:
        return values[-1].decode("utf-8", "replace")
    return None


#: Proxies whose ``X-Forwarded-For`` is believed when a site sets none (``router.trusted_proxies``).
DEFAULT_TRUSTED_PROXIES: tuple[Any, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_trusted_proxies(values: Any) -> tuple[Any, ...]:
    """IP networks from addresses or CIDR strings (ValueError for anything else)."""
    return tuple(ipaddress.ip_network(str(v).strip(), strict=False) for v in values)


def _address(text: str) -> Optional[Any]:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_ip(request: IRequest) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.

    Entries left of it were written by the client and prove nothing; a peer
    that is not a trusted proxy (``site.trusted_proxies``, loopback by
    default) cannot claim any address but its own.
    """
    peer = getattr(request.getClientAddress(), "host", None) or "unknown"
    site = getattr(request, "site", None) or getattr(getattr(request, "channel", None), "site", None)
    trusted = getattr(site, "trusted_proxies", DEFAULT_TRUSTED_PROXIES)

    def is_trusted(address: Optional[Any]) -> bool:
        return address is not None and any(address in net for net in trusted)

    if not is_trusted(_address(peer)):
        return peer
    fwd = header(request, "X-Forwarded-For")
    if not fwd:
        return peer
    client = peer
    for entry in reversed(fwd.split(",")):
        address = _address(entry)
        if address is None:
            break  # garbage: believe nothing further left
        client = str(address)
        if not is_trusted(address):
            break
    return client


class NotFoundResource(resource.Resource):
    """Answers every request with ``404 M_UNRECOGNIZED``."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"errcode": Codes.UNRECOGNIZED, "error": "Unrecognized request"}).encode()


def make_site(root: resource.Resource, reactor: Any) -> server.Site:
    """A ``Site`` on ``reactor`` that does not log every request."""
    site = server.Site(root, reactor=reactor)
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
