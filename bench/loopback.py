"""Loopback-only network fixtures for the fault harness (bench/faults.py).

* :class:`ImageServer`: an HTTP server on a loopback address that counts every request it
  receives (the SSRF probe: anything counted was fetched), answers ``/redirect/...`` with a
  302 to another loopback URL, and ``/slow/...`` by dribbling an image one byte at a time.
* :class:`SilentServer`: accepts connections, reads the requests and never answers: the image
  host a fetch can only wait out (the ``hung`` scenario; tests/test_ingest_slow_image.py).
* :class:`OutageProxy`: a TCP forwarder in front of the broker, so the harness can take the
  broker away (refuse and reset every connection) and bring it back with its log intact;
  the local Tansu keeps its log in memory, so stopping the process itself would also erase
  every topic and committed offset.

Every socket here binds a loopback address (127.0.0.1, another of 127.0.0.0/8 where a test
needs a second host name, or ::1), never a wildcard address.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar


class _V6HTTPServer(HTTPServer):
    address_family = socket.AF_INET6


class ImageServer:
    """Counts requests; serves ``image`` for any path, redirects ``/redirect/<port>/<path>``
    to ``http://127.0.0.1:<port>/<path>``, dribbles ``/slow/...`` one byte per
    ``dribble_s``."""

    def __init__(self, host: str, port: int, image: bytes, dribble_s: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.image = image
        self.dribble_s = dribble_s
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # keep the harness output clean
                return

            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests.append(self.path)
                if self.path.startswith("/redirect/"):
                    _, _, port, rest = self.path.split("/", 3)
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{int(port)}/{rest}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.image
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not self.path.startswith("/slow/"):
                    self.wfile.write(body)
                    return
                for i in range(len(body)):
                    if outer._stop.wait(outer.dribble_s):
                        return
                    try:
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return

        server_cls = _V6HTTPServer if ":" in host else HTTPServer
        self._server = server_cls((host, port), Handler)
        self.port = int(self._server.server_address[1])  # the bound one when port is 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        # ThreadingMixIn is not used by HTTPServer; one thread per request keeps a dribbling
        # response from blocking the counting of the others.
        self._server.socket.settimeout(0.2)
        while not self._stop.is_set():
            try:
                request, address = self._server.get_request()
            except (TimeoutError, OSError):
                continue
            threading.Thread(
                target=self._handle, args=(request, address), daemon=True
            ).start()

    def _handle(self, request: socket.socket, address: Any) -> None:
        try:
            self._server.finish_request(request, address)
        except OSError:
            pass
        finally:
            self._server.shutdown_request(request)

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._server.server_close()


class SilentServer:
    """Accepts connections on ``host``, reads what the client sends and never answers. Counts
    the connections it accepted and those the client gave up on (closed)."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0) -> None:
        if not host.startswith("127."):
            raise ValueError(f"{host}: loopback only")
        self._listener = socket.create_server((host, port), backlog=256)
        self._listener.settimeout(0.1)
        self.base = f"http://{host}:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._accepted = 0
        self._closed = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def closed(self) -> int:
        with self._lock:
            return self._closed

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self._accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with suppress(OSError):
            while conn.recv(65536):
                pass
        with self._lock:
            self._closed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class OutageProxy:
    """Forwards ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port``. ``outage()`` closes
    the listening socket and resets every open connection (clients see what a stopped broker
    gives them: refused connections); ``restore()`` listens again."""

    BUFFER: ClassVar[int] = 65536
    CONNECT_TIMEOUT_S: ClassVar[float] = 5.0

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    def restore(self) -> None:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                try:
                    upstream = socket.create_connection(
                        ("127.0.0.1", proxy.target_port), proxy.CONNECT_TIMEOUT_S)
                except OSError:
                    return
                # The timeout above is for connecting only. Left on the socket it would end
                # the upstream pump whenever the broker is silent that long -- and Tansu holds
                # a JoinGroup answer for half the session timeout (5 s by default) -- leaving
                # the client waiting on a dead connection for its 305 s JoinGroup timeout.
                upstream.settimeout(None)
                with proxy._lock:
                    proxy._conns.update((client, upstream))
                pump = threading.Thread(target=proxy._pump, args=(upstream, client), daemon=True)
                pump.start()
                proxy._pump(client, upstream)
                pump.join(1)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.listen_port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    def _pump(self, source: socket.socket, dest: socket.socket) -> None:
        try:
            while True:
                data = source.recv(self.BUFFER)
                if not data:
                    break
                dest.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown() before close(): a bare close() of a socket that the other pump is
            # blocked reading sends nothing (the blocked recv keeps it open), so the peer
            # would never learn that the connection is gone.
            for s in (source, dest):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    s.close()
            with self._lock:
                self._conns.discard(source)
                self._conns.discard(dest)

    def outage(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.outage()


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.25) -> float | None:
    """Seconds until ``predicate()`` is true, or None after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval_s)
    return None
