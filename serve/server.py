"""Uvicorn on a background thread: for ``lookalike run`` (ingest owns the main thread and its
signals), ``lookalike serve`` (the main thread waits for the stop signal), the tests and the
HTTP bench."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lookalike import signals
from lookalike.settings import ServeSettings
from lookalike.stopping import hand_over

if TYPE_CHECKING:
    from serve.metrics import ConnectionMetrics

log = logging.getLogger(__name__)

_SERVE = ServeSettings()
KEEP_ALIVE_S = 5
"""How long an idle keep-alive connection stays open after an answer (uvicorn's default)."""
MAX_HEADER_BYTES = 16 * 1024
"""The most bytes of a request's line and headers (h11's default bound): more is a ``431``
(:class:`HeadBound`)."""


class ServerStartError(RuntimeError):
    """The API cannot listen (the port is taken, the address is not local...) or did not
    start; the message says which, in one line."""


def address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:8080``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``port`` on every address ``host`` resolves to, as uvicorn's own
    ``create_server`` binds them; a :class:`ServerStartError` saying why not. Binding before
    the app and the model are built makes a taken port or a wrong host one line at once."""
    where = f"the API cannot listen on {address(host, port)}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ServerStartError(f"{where}: {why_not_listening(exc, host, port)}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, bound_to in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(bound_to)
            sock.listen()
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ServerStartError(f"{where}: {why_not_listening(exc, host, port)}") from None
    return sockets


def why_not_listening(exc: OSError | UnicodeError, host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on, in words, from what resolving or binding it
    raised (for the API here, and ingest's metrics endpoint)."""
    if isinstance(exc, (socket.gaierror, UnicodeError)):
        why = exc.strerror if isinstance(exc, OSError) else exc
        return f"{host!r} is neither an IP address nor a host name that resolves ({why})"
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use by another process"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"permission denied{' (ports below 1024 need privileges)' if port < 1024 else ''}"
    return exc.strerror or str(exc)


class HeadBound(h11.Connection):
    """h11's server side with a request's line and headers bounded in size however they
    arrive. h11 bounds only a head still incomplete (``max_incomplete_event_size``): one that
    came whole in one read passed at any size (a 100,000-byte header was answered 200). Here
    a complete head is measured too, by what it took of the receive buffer, so a body or a
    pipelined request after it is never counted. Either refusal is h11's
    ``RemoteProtocolError`` (uvicorn answers it: :meth:`HeaderDeadline.send_400_response`)
    with :attr:`head_too_large` set."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.head_too_large = False

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        if self.their_state is not h11.IDLE:  # a body, or a request waiting its turn
            return super().next_event()
        buffered = len(self.trailing_data[0])  # all of it the head's, and what follows it
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.head_too_large = exc.error_status_hint == 431  # h11's: an incomplete head
            raise
        if isinstance(event, h11.Request):
            head = buffered - len(self.trailing_data[0])
            if head > self.max_head_bytes:
                self.head_too_large = True
                raise h11.RemoteProtocolError(f"a request head of {head} bytes",
                                              error_status_hint=431)
        return event


class HeaderDeadline(H11Protocol):
    """Uvicorn's h11 protocol with the header phase bounded in time: a request's line and
    headers must arrive within :attr:`header_timeout_s` of the connection's opening (its first
    request) or of their first byte (a later one, on a kept-alive connection), else the
    connection is closed: with a ``408`` in the API's error shape when part of the request
    came, without a word when none did (there is no request: a browser's unused preconnect),
    one warning line and :attr:`metrics`' ``header_timeouts`` counted either way. Uvicorn bounded
    headers in size (h11's 16 KiB, and that only while incomplete), not in time: a client
    sending nothing, or a byte every few seconds, held its connection, one of
    ``limit_concurrency``, for ever. In size, a request's line and headers are bounded here
    to :attr:`max_header_bytes` however they arrive (:class:`HeadBound`): more is a ``431``
    in the API's error shape, and the connection is closed (uvicorn's answer was a plain
    ``400``, and only to a head still incomplete).

    The wait between requests stays uvicorn's (``timeout_keep_alive``), and a request's body
    the app's (serve/middleware.py): the deadline ends when the headers are complete. Built
    per server by :func:`header_deadline`, as uvicorn builds the protocol itself."""

    header_timeout_s: ClassVar[float] = _SERVE.header_timeout_s
    max_header_bytes: ClassVar[int] = MAX_HEADER_BYTES
    metrics: ClassVar[ConnectionMetrics | None] = None
    _header_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = HeadBound(self.max_header_bytes)
        self.conn = self._head

    def send_400_response(self, msg: str) -> None:
        """Uvicorn's answer to a request h11 refuses: a ``431`` in the API's error shape for
        one whose head is too large, its plain ``400`` for any other."""
        if not self._head.head_too_large:
            super().send_400_response(msg)
            return
        log.warning("refused a request of %s: its line and headers are over %d bytes",
                    address(*self.client) if self.client else "a client",
                    self.max_header_bytes)
        self._send_error(431, b"Request Header Fields Too Large", "headers_too_large",
                         f"the request line and headers are over {self.max_header_bytes:,} "
                         "bytes")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or refused: 400, 431)
            self._disarm()
        elif self._header_timer is None:  # the first bytes of a request after keep-alive
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial = bool(self.conn.trailing_data[0])
        # a connection that never sent a byte is most often a browser's or a proxy's spare
        # one: INFO; a request started and not finished is the slow client: WARNING
        log.log(logging.WARNING if partial else logging.INFO,
                "closed the connection of %s: %s within %g s (serve.header_timeout_s)",
                address(*self.client) if self.client else "a client",
                "its request line and headers did not arrive" if partial else
                "it sent no request", self.header_timeout_s)
        if self.metrics is not None:
            self.metrics.header_timeouts.inc()
        if partial and self.conn.our_state is h11.IDLE:
            self._send_error(408, b"Request Timeout", "header_timeout",
                             f"the request line and headers did not arrive within "
                             f"{self.header_timeout_s:g} s")
        self.transport.close()

    def _send_error(self, status: int, reason: bytes, code: str, message: str) -> None:
        """An answer in the API's error shape with ``Connection: close``, as uvicorn's own 400
        for a request it cannot parse is sent (no request to answer: the app never saw it);
        the caller closes the connection."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        try:
            for event in (h11.Response(status_code=status, headers=headers, reason=reason),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:  # h11 will not send it now: the close says enough
            pass


def header_deadline(timeout_s: float,
                    metrics: ConnectionMetrics | None = None) -> type[HeaderDeadline]:
    """A :class:`HeaderDeadline` for one server (uvicorn builds one per connection from
    the class it is given): ``timeout_s`` (``serve.header_timeout_s``), counted into
    ``metrics`` when given."""

    class Bounded(HeaderDeadline):
        pass

    Bounded.header_timeout_s = timeout_s
    Bounded.metrics = metrics
    return Bounded


class BackgroundServer:
    """Serves ``app`` on ``host:port`` (0: any free port) until :meth:`stop`; on ``sockets``
    when the caller has bound them already (:func:`listen`), else it binds them at
    :meth:`start`. Either way it closes them when it stops.

    Off the main thread uvicorn installs no signal handlers, so the caller's own handlers (the
    ingest runner's) keep working.

    ``max_connections`` (``serve.max_connections``) bounds the open connections and requests:
    uvicorn answers a request beyond them 503 at once. A request's line and headers must
    arrive within ``header_timeout_s`` (``serve.header_timeout_s``) of the connection's
    opening or of their first byte, else the connection is closed (:class:`HeaderDeadline`;
    counted in ``metrics``, the process's :class:`~serve.metrics.ConnectionMetrics`, when
    given); in size, to :data:`MAX_HEADER_BYTES` (then 431). An idle connection between
    requests is closed after ``timeout_keep_alive`` (:data:`KEEP_ALIVE_S`). Bodies are bounded
    in time and size by the app (serve/middleware.py). Connections per client and TLS are left
    to a proxy in front (docs/hardening.md).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 sockets: list[socket.socket] | None = None, *,
                 max_connections: int = _SERVE.max_connections,
                 header_timeout_s: float = _SERVE.header_timeout_s,
                 metrics: ConnectionMetrics | None = None) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", limit_concurrency=max_connections,
                                timeout_keep_alive=KEEP_ALIVE_S,
                                http=header_deadline(header_timeout_s, metrics))
        self._server = uvicorn.Server(config)
        self._sockets = sockets
        self._thread = threading.Thread(target=self._run, name="api", daemon=True)
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port

    @property
    def url(self) -> str:
        return f"http://{address(self.host, self.port)}"

    def _run(self) -> None:
        self._server.run(sockets=self._sockets)

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        if self._sockets is None:
            self._sockets = listen(self.host, self.port)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerStartError(f"the API did not start on {address(self.host, self.port)}"
                                       " (see the log above)")
            time.sleep(0.02)
        self.port = self._sockets[0].getsockname()[1]
        return self

    def serve_until_signalled(self) -> str:
        """Serve until SIGTERM or SIGINT (from the main thread), then stop gracefully; returns
        the signal's name. Unlike ``uvicorn.run``, which re-raises the signal after its
        shutdown, the process can then exit 0 like the other commands. A signal that came
        while the command started (held: lookalike/stopping.py) stops it before it serves."""
        received: list[str] = []
        stop = threading.Event()

        def handler(signum: int, _frame: FrameType | None) -> None:
            received.append(signal.Signals(signum).name)
            stop.set()

        with signals.handling(handler) as previous:
            received.extend(name for old in previous.values()
                            if (name := hand_over(old)) is not None)
            try:
                if received:
                    return received[0]
                self.start()
                while not stop.wait(0.5) and self._thread.is_alive():
                    pass
            finally:
                self.stop()
        return received[0] if received else "server exited"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        for sock in self._sockets or ():
            sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
