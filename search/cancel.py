"""Stopping a search whose caller no longer waits for it (an HTTP client that went away).

A search that can take long (price comparison's verification, an image search) takes
``cancelled``: a callable saying whether its caller is gone (the HTTP API passes its client
watch's, serve/disconnect.py). It is asked at the search's stage boundaries and between the
candidates verified, a function call each (nothing next to the milliseconds of a stage), and
when it says so :class:`SearchCancelled` stops the search there: the work done is dropped,
the rest never runs. Without one (the CLI, eval) a search runs to its end as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

Cancelled: TypeAlias = Callable[[], bool]
"""True once the caller no longer wants the answer; asked from the thread the search runs on."""


class SearchCancelled(Exception):
    """A search stopped because its caller went away; says before which stage."""


def stop_if(cancelled: Cancelled | None, before: str) -> None:
    """Raise :class:`SearchCancelled` when ``cancelled`` says the caller is gone; ``before``:
    the stage not started, for the message."""
    if cancelled is not None and cancelled():
        raise SearchCancelled(f"the caller went away: stopped before {before}")
