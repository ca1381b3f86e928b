"""SIGTERM and SIGINT while a command that stops gracefully starts: held, then honoured.

``ingest``, ``run`` and ``serve`` stop gracefully once running: their own handler lets the
ingest loop finish and commit (``lookalike.app.stop_on_signals``) or the API stop
(``serve.server``), and they exit 0. A signal that came while they started (the imports, the
broker, Milvus, the model) ended them differently: killed outright during the Keras import
(143 to a shell, no word), else raised as an exception in the main thread wherever it landed
(exit 143 / 130, one line), and an exception raised inside a library's callback came out as
that library's error (pydantic's ``SchemaError`` while FastAPI was imported: a traceback,
exit 1).

:func:`holding_stop_signals` holds such a signal instead. The start-up step under way ends
(each is bounded: the broker's connect timeout, the model's load), and the handler the
command installs once it can stop gracefully takes the signal over (:func:`hand_over`) and
stops at once, exactly as for a signal that arrives later. A second signal before that ends
the command at once (exit 143 / 130, one line), as does one after the command's handler is
gone again (while it stops).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lookalike import signals

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is: ``finally`` blocks run (a scratch database is removed)
    and the command ends in one line, exit 143, where it was cut off without a word."""


class HeldStop:
    """The handler of SIGTERM and SIGINT (``signals.STOP_SIGNALS``) while a command starts:
    holds the first signal, raises at the next one (:class:`Terminated` or
    ``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.handed_over = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received is not None or self.handed_over:
            raise Terminated if sig is signal.SIGTERM else KeyboardInterrupt
        self.received = sig
        log.info("received %s while starting: stopping as soon as started (a second signal "
                 "stops at once)", sig.name)


def hand_over(replaced: object) -> str | None:
    """For a handler a command installs once it can stop gracefully, given the handler it
    replaced: the name of the signal held while the command started (stop now), or None."""
    if not isinstance(replaced, HeldStop):
        return None
    replaced.handed_over = True
    return None if replaced.received is None else replaced.received.name


@contextmanager
def holding_stop_signals() -> Iterator[None]:
    """:class:`HeldStop` handles SIGTERM and SIGINT in the block (from the main thread only:
    tests call commands from other threads, where no handler can be set)."""
    with signals.handling(HeldStop()):
        yield
