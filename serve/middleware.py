"""One ASGI wrapper around the app: request metrics and the upload size cap.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream copy per request,
which matters when the whole search takes a few milliseconds. The body cap counts the bytes
as they arrive (a chunked upload has no Content-Length to trust), so an oversized upload is
refused before it is buffered.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.metrics import SearchMetrics


class UploadTooLarge(Exception):
    """The request body passed the configured cap (answered 413)."""


class ObserveRequests:
    def __init__(self, app: ASGIApp, metrics: SearchMetrics, *, max_body_bytes: int) -> None:
        self.app = app
        self._metrics = metrics
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await _refuse(send, self._max)
            self._count(scope, 413, 0.0)
            return
        status = 500
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max:
                raise UploadTooLarge(f"the request body is over {self._max} bytes")
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

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or (
            "/static" if str(scope.get("path", "")).startswith("/static/") else "unmatched")
        self._metrics.requests.labels(endpoint, str(status)).inc()
        self._metrics.duration.labels(endpoint).observe(seconds)


async def _refuse(send: Send, limit: int) -> None:
    body = (b'{"error":{"code":"upload_too_large","message":"the request body is over '
            + str(limit).encode() + b' bytes"}}')
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
