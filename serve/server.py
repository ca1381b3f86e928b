"""Uvicorn on a background thread: for ``lookalike run`` (ingest owns the main thread and its
signals), ``lookalike serve`` (the main thread waits for the stop signal), the tests and the
HTTP bench."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

import uvicorn


class ServerStartError(RuntimeError):
    """uvicorn did not start listening (the port is taken, the address is not local...)."""


class BackgroundServer:
    """Serves ``app`` on ``host:port`` (0: any free port) until :meth:`stop`.

    Off the main thread uvicorn installs no signal handlers, so the caller's own handlers (the
    ingest runner's) keep working.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerStartError(f"the API could not listen on {self.host}:{self.port} "
                                       "(port in use? see the log above)")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def serve_until_signalled(self) -> str:
        """Serve until SIGTERM or SIGINT (from the main thread), then stop gracefully; returns
        the signal's name. Unlike ``uvicorn.run``, which re-raises the signal after its
        shutdown, the process can then exit 0 like the other commands."""
        received: list[str] = []
        stop = threading.Event()

        def handler(signum: int, _frame: FrameType | None) -> None:
            received.append(signal.Signals(signum).name)
            stop.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.wait(0.5) and self._thread.is_alive():
                pass
        finally:
            self.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)
        return received[0] if received else "server exited"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
