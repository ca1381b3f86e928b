"""One ASGI wrapper around the app: request metrics and the upload size cap.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream copy per request,
which matters when the whole search takes a few milliseconds. The body cap counts the bytes
as they arrive (a chunked upload has no Content-Length to trust), so an oversized upload is
refused before it is buffered.

Requests are counted by route template (``/v1/products/{product_id}/similar``, never the
product id): the one the router matched, or, for a body refused by its Content-Length before
routing, the one it would have matched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import error_response
from serve.metrics import SearchMetrics


class UploadTooLarge(Exception):
    """The request body passed the configured cap (answered 413)."""


class ObserveRequests:
    """``routes``: the app's (``app.routes``), to name the route of a request refused before
    routing."""

    def __init__(self, app: ASGIApp, metrics: SearchMetrics, *, max_body_bytes: int,
                 routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self._metrics = metrics
        self._max = max_body_bytes
        self._routes = routes
        self._too_large = f"the request body is over {max_body_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            refusal = error_response(413, "upload_too_large", self._too_large)
            await refusal(scope, receive, send)
            self._count(scope, 413, 0.0, route=self._route_for(scope))
            return
        status = 500
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max:
                raise UploadTooLarge(self._too_large)
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        self._metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            self._metrics.in_flight.dec()
            self._count(scope, status, time.perf_counter() - started)

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
               route: BaseRoute | None = None) -> None:
        endpoint = getattr(route or scope.get("route"), "path", None) or (
            "/static" if str(scope.get("path", "")).startswith("/static/") else "unmatched")
        self._metrics.requests.labels(endpoint, str(status)).inc()
        self._metrics.duration.labels(endpoint).observe(seconds)
