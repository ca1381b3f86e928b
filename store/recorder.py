"""A per-thread recorder: code that serves one request (or one batch) opens ``recording()`` and
collects what the calls it made on that thread noted, while other threads' calls stay out.
The store records its Milvus calls with it, and the HTTP API its embedder calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class ThreadRecorder(Generic[T]):
    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def recording(self) -> Iterator[list[T]]:
        """Collect what this thread notes inside the block (nested blocks restore the outer)."""
        items: list[T] = []
        previous = getattr(self._local, "items", None)
        self._local.items = items
        try:
            yield items
        finally:
            self._local.items = previous

    def note(self, item: T) -> None:
        """Add ``item`` to this thread's open recording, if there is one."""
        items: list[T] | None = getattr(self._local, "items", None)
        if items is not None:
            items.append(item)
