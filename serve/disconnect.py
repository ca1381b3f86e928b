"""Noticing, while a request's search runs, that its client went away.

Once a request's body is read, the server's next ASGI message for it is ``http.disconnect``,
sent when the connection closes (uvicorn reads the socket on while the app works). A
:class:`ClientWatch` waits for that message on the event loop while the search runs on the
worker pool, and sets a flag the search asks at its stage boundaries (search/cancel.py): a
client that left while its request waited for a worker, or while it was verified, no longer
holds a worker with work nobody reads. The flag is a ``threading.Event``: set on the loop,
asked on the worker thread, a few hundred nanoseconds a check.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType

from starlette.types import Receive

log = logging.getLogger(__name__)


class ClientWatch:
    """``async with ClientWatch(request.receive) as watch``: :meth:`gone` is true once the
    client has gone away. Enter it after the request's body is read: the watch takes the
    request's next messages (for a request without a body, its empty one first)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def gone(self) -> bool:
        """Whether the client went away (callable from any thread)."""
        return self._gone.is_set()

    async def _listen(self) -> None:
        try:
            while (await self._receive())["type"] != "http.disconnect":
                pass
        except Exception as exc:  # the watch is a saving, never a failure of the request
            log.debug("no watch on the client: %s: %s", type(exc).__name__, exc)
            return
        log.debug("client gone while its request waits or runs")
        self._gone.set()

    async def __aenter__(self) -> ClientWatch:
        self._task = asyncio.get_running_loop().create_task(self._listen())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()  # done or not: it holds nothing once cancelled
