"""One ASGI wrapper around the app: request metrics and the limits on request bodies.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream copy per request,
which matters when the whole search takes a few milliseconds. The body caps count the bytes
as they arrive (a chunked upload has no Content-Length to trust), so an oversized upload is
refused before it is buffered: a multipart upload may carry ``max_body_bytes``, any other body
(the JSON queries, a few KiB) ``max_json_bytes``. Which cap a body has and how serve/api.py
reads it are one decision (:func:`is_multipart`): a request with more than one Content-Type
header is refused before its body is read (the cap read the last one and the API the first,
so a JSON body declared as JSON, then as multipart, passed the JSON cap). A body must also
arrive in time: within ``body_timeout_s`` of the request's headers, with no pause longer than
``body_idle_s``, or it is a 408 and the connection is closed; a client that stalls or drips
its body held a connection and the bytes it had sent for as long as it liked (20 stalled
19 MiB bodies: ~400 MB for 75 s and more). A client that goes away before its answer is
counted with status 499 (no answer can reach it), not as a 500 with a traceback: one gone
before its body was read, and one whose search was dropped or stopped because it left
(serve/api.py, ``run``).

Requests are counted by route template (``/v1/products/{product_id}/similar``, never the
product id, and without a path parameter's converter: ``{product_id:path}`` is counted as
``{product_id}``): the one the router matched, or, for a body refused by its Content-Length
or its Content-Types before routing, the one it would have matched. The in-flight gauge
leaves out the scrapes of ``/metrics``: a scrape read itself, so an idle server showed one
request in flight.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import error_response
from serve.metrics import SearchMetrics

log = logging.getLogger(__name__)

CLIENT_GONE = 499
"""The status counted for a request whose client went away before its answer (nginx's code for
it): before its body was read, or while its search waited or ran. No answer is sent, and it is
not the server's failure."""


_CONVERTER = re.compile(r"\{(\w+):\w+\}")
"""A path parameter's converter in a route template (``{product_id:path}``)."""


class BodyRefused(Exception):
    """A request body refused while it arrives: answered ``status`` with ``code`` in the
    API's error shape, and the connection closed (the rest of the body is not read)."""

    status = 400
    code = "bad_body"


class UploadTooLarge(BodyRefused):
    """The request body passed its cap."""

    status = 413
    code = "upload_too_large"


class BodyTooSlow(BodyRefused):
    """The request body did not arrive in time."""

    status = 408
    code = "body_timeout"


class TwoContentTypes(BodyRefused):
    """The request says its body's type more than once."""

    code = "bad_request"


MULTIPART = "multipart/form-data"


def media_type(content_type: bytes | str | None) -> str:
    """A Content-Type's media type, lowercased, without its parameters or the whitespace
    around it (RFC 9110 §8.3.1: ``Multipart/Form-Data ; boundary=x`` is
    ``multipart/form-data``); "" for none."""
    if content_type is None:
        return ""
    text = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
    return text.partition(";")[0].strip(" \t").lower()


def is_multipart(content_type: bytes | str | None) -> bool:
    """Whether a body of this Content-Type is an upload: the one test for the body's cap
    (here) and for how serve/api.py reads it."""
    return media_type(content_type) == MULTIPART


def refusal(exc: BodyRefused) -> Response:
    return error_response(exc.status, exc.code, str(exc), headers={"Connection": "close"})


class ObserveRequests:
    """``routes``: the app's (``app.routes``), to name the route of a request refused before
    routing."""

    def __init__(self, app: ASGIApp, metrics: SearchMetrics, *, max_body_bytes: int,
                 max_json_bytes: int, body_timeout_s: float, body_idle_s: float,
                 routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self._metrics = metrics
        self._max_upload = max_body_bytes
        self._max_json = max_json_bytes
        self._timeout_s = body_timeout_s
        self._idle_s = body_idle_s
        self._routes = routes

    def _cap(self, content_type: bytes | None) -> tuple[int, str]:
        if is_multipart(content_type):
            return self._max_upload, f"the request body is over {self._max_upload} bytes"
        return self._max_json, (f"a body that is not multipart/form-data (a JSON query) is "
                                f"over {self._max_json} bytes; upload images as "
                                "multipart/form-data")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        types = [value for name, value in scope.get("headers", ())
                 if name.lower() == b"content-type"]
        if len(types) > 1:
            await self._refuse(TwoContentTypes(
                f"the request has more than one Content-Type header ({len(types)}); send "
                "one: application/json, or multipart/form-data for an upload"), scope, receive,
                send)
            return
        cap, too_large = self._cap(types[0] if types else None)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await self._refuse(UploadTooLarge(too_large), scope, receive, send)
            return
        status = 500
        seen = 0
        body_done = False
        started = time.perf_counter()

        async def counting_receive() -> Message:
            """The next part of the body, within the deadlines; once the body is whole,
            ``receive`` as it is (a streaming answer may wait on it for a disconnect)."""
            nonlocal seen, body_done
            if body_done:
                return await receive()
            left = self._timeout_s - (time.perf_counter() - started)
            wait = min(self._idle_s, left)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(
                    f"the request body did not arrive within {self._timeout_s:g} s"
                    if wait == left else
                    f"no part of the request body came for {self._idle_s:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            seen += len(message.get("body", b""))
            if seen > cap:
                raise UploadTooLarge(too_large)
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        asked = dict(scope)  # routing rewrites the scope's root_path (a mount's)
        in_flight = scope["path"] != "/metrics"
        if in_flight:
            self._metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, recording_send)
        except ClientDisconnect:  # the body stream's, or a search stopped: the client is gone
            log.debug("client gone before its answer: %s %s", scope["method"], scope["path"])
            status = CLIENT_GONE
        finally:
            if in_flight:
                self._metrics.in_flight.dec()
            self._count(scope, status, time.perf_counter() - started, asked=asked)

    async def _refuse(self, exc: BodyRefused, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """Refused before routing, by the headers: counted under the route it would take."""
        await refusal(exc)(scope, receive, send)
        self._count(scope, exc.status, 0.0, route=self._route_for(scope))

    def _route_for(self, scope: Scope) -> BaseRoute | None:
        """The route the router would pick: the first full match, else the first partial one
        (a method it does not take), as ``starlette.routing.Router`` picks it."""
        partial = None
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial

    def _count(self, scope: Scope, status: int, seconds: float,
               route: BaseRoute | None = None, asked: Scope | None = None) -> None:
        """``asked``: the scope as it came, before routing. FastAPI's routes name themselves
        in the scope; Starlette's (/docs, /openapi.json, the /static mount) do not, and were
        all counted as "unmatched"."""
        found = route or scope.get("route") or self._route_for(asked or scope)
        endpoint = _CONVERTER.sub(r"{\1}", getattr(found, "path", None) or "unmatched")
        self._metrics.requests.labels(endpoint, str(status)).inc()
        self._metrics.duration.labels(endpoint).observe(seconds)


PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
               "img-src 'self' https: http: blob:; connect-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
"""The search page's Content-Security-Policy: its own script and style, catalog images from
this server or http(s) URLs, as catalogs may name either (previews of the photos picked are
``blob:``), fetches only to this API, and no framing. Inline scripts and other origins'
scripts are blocked."""

_EVERY_ANSWER = [(b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"no-referrer"),
                 (b"x-frame-options", b"DENY")]
_POLICY = [(b"content-security-policy", PAGE_POLICY.encode())]


class SecurityHeaders:
    """Headers that keep browsers strict: no MIME sniffing, no framing (clickjacking), no
    Referer (a shopper's browser loading sellers' images told their hosts which page and
    query it came from), and :data:`PAGE_POLICY` on everything but ``/docs``, which loads
    Swagger UI from a CDN. An answer's own header of the same name is kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = _EVERY_ANSWER if str(scope["path"]).startswith("/docs") else \
            _EVERY_ANSWER + _POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in added if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
