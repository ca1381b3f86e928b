"""BLAS (and OpenCV) in one thread for the small matrix products (and images) of a query.

Why (measured, docs/matching.md "Speed round"): numpy's OpenBLAS runs a product of a few
hundred rows on every core and then keeps its helper threads spinning for the next job. On
a busy two-core box each such product then waits for a core and the spin takes the core the
rest of the query needed. `compare_prices` makes a few dozen of them per query (descriptor
distances): with BLAS in one thread its CPU per query on same-item-fresh was ~470 ms
against ~790 with two. Large products (Milvus Lite's copy at 100k rows: 41 -> 21 ms with
two threads) stay outside.

OpenBLAS's thread count is one process-wide setting, so :data:`one_blas_thread` counts the
threads inside: the first to enter sets one thread, the last to leave restores the count
(each restoring its own saved count, concurrent threads would leave one thread behind). A
large product started by another thread meanwhile runs in one thread: slower, the same
result. Without numpy's bundled OpenBLAS (another BLAS, an older build) it does nothing.

:class:`OneThread` is the same guard for any library with a process-wide thread count:
OpenCV's, for the small images a price comparison verifies (``search.features.one_cv_thread``:
a thread pool's hand-off costs more CPU on a 160 px warp or blur than it saves).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_", "openblas_get_num_threads")


def _numpy_openblas() -> tuple[Any, Any] | None:
    """(set, get) of the thread count of the OpenBLAS bundled with numpy's wheel, or None."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same library
        except OSError:
            continue
        setter = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None


ThreadCount = tuple[Callable[[int], None], Callable[[], int]]
"""A library's (set, get) of its process-wide thread count."""


class OneThread:
    """A context in which a library's thread pool runs one thread (see the module doc).
    ``lookup`` gives the library's (set, get) of its thread count, or None where it has none
    to set (then the context does nothing); ``name`` names it in the log."""

    def __init__(self, lookup: Callable[[], ThreadCount | None], name: str) -> None:
        self._lookup, self._name = lookup, name
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = 0
        self._looked_up = False
        self._calls: ThreadCount | None = None

    def _library(self) -> ThreadCount | None:
        if not self._looked_up:
            self._calls, self._looked_up = self._lookup(), True
            if self._calls is None:
                log.debug("%s not found: its threads are left as they are", self._name)
        return self._calls

    def __enter__(self) -> None:
        with self._lock:
            calls = self._library()
            if calls is not None and self._inside == 0:
                setter, getter = calls
                self._saved = int(getter())
                if self._saved != 1:
                    setter(1)
            self._inside += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._inside -= 1
            calls = self._library()
            if calls is not None and self._inside == 0 and self._saved != 1:
                calls[0](self._saved)

    def threads(self) -> int | None:
        """The library's thread count now (None without it)."""
        calls = self._library()
        return None if calls is None else int(calls[1]())


class OneBlasThread(OneThread):
    """numpy's bundled OpenBLAS in one thread."""

    def __init__(self) -> None:
        super().__init__(_numpy_openblas, "numpy's OpenBLAS")


one_blas_thread = OneBlasThread()
"""The process' one guard."""
