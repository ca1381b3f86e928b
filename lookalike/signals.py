"""SIGINT and SIGTERM for the length of a block: the one place their handlers are set and the
previous ones put back. Standard library only, so every layer may import it (``serve/`` and
``training/`` too, without the CLI's modules)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What stops a command: Ctrl-C and a supervisor's ``kill``."""

Handler = Callable[[int, FrameType | None], None]


@contextmanager
def handling(handler: Handler, signals: Iterable[signal.Signals] = STOP_SIGNALS
             ) -> Iterator[dict[signal.Signals, object]]:
    """``handler`` receives ``signals`` during the block, which gets the handlers it replaced
    (a signal held while the command started is in one: lookalike/stopping.py); they come
    back after it, however it ends. Off the main thread nothing is set (and nothing was
    replaced): Python runs handlers in the main thread only and lets only it set them (tests
    call commands from threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield dict(previous)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def held(on_signal: Callable[[signal.Signals], None] | None = None
         ) -> Iterator[list[signal.Signals]]:
    """SIGINT and SIGTERM wait for the end of the block, for work that must not be cut in two
    (a Keras step, a switch of aliases, a folder swap): each is recorded in the list the
    block gets (and passed to ``on_signal``) instead of acting, and the caller decides after
    the block what it means."""
    received: list[signal.Signals] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        received.append(sig)
        if on_signal is not None:
            on_signal(sig)

    with handling(handler):
        yield received
