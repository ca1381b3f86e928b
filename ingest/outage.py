"""Outages of Milvus or the broker are waited out, not fatal.

A store write or a dead-letter flush that fails because the other side is *unavailable*
(connection refused, timeouts, "not ready") is retried on the stage thread with capped,
jittered exponential backoff, one log line per attempt. Meanwhile nothing is committed (the
batch is not done), the pipeline fills up and the poll loop pauses the partitions while it
keeps calling ``poll()``, so the consumer stays in its group (kafka-python 3.0.12 livelocks a
join completed outside ``poll()``; see ingest/source.py). When the outage outlasts the budget
(``LOOKALIKE_INGEST__OUTAGE_BUDGET_S``) the batch fails and ingest exits non-zero, still
without committing it. Writes are idempotent, so retrying a half-applied plan is safe.

What counts as an outage is decided here, by :func:`is_outage`, and nowhere else.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ingest.dlq import DeadLetterError
from store import StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


class OutageBudgetExceededError(RuntimeError):
    """A dependency stayed unavailable for longer than the outage budget."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means "unavailable, try again later" rather than "this is wrong"."""
    # StoreUnavailableError: the store's own short retries ran out on a transient error.
    return isinstance(exc, StoreUnavailableError | DeadLetterError)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class OutageWait:
    """Runs a call, waiting out outages for up to ``budget_s`` (per outage; the production
    value is ``IngestSettings.outage_budget_s``)."""

    def __init__(
        self,
        budget_s: float,
        *,
        first_delay_s: float = 0.5,
        max_delay_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_s = budget_s
        self._first = first_delay_s
        self._max = max_delay_s
        self._sleep = sleep
        self._clock = clock

    def call(self, what: str, fn: Callable[[], T]) -> T:
        started: float | None = None
        attempt = 0
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                now = self._clock()
                started = now if started is None else started
                attempt += 1
                waited = now - started
                if waited >= self.budget_s:
                    log.error("%s unavailable for %.0fs (budget %.0fs): giving up: %s",
                              what, waited, self.budget_s, _one_line(exc))
                    raise OutageBudgetExceededError(
                        f"{what} unavailable for {waited:.0f}s (budget {self.budget_s:.0f}s)"
                    ) from exc
                delay = min(self._max, self._first * 2 ** (attempt - 1))
                delay = min(delay * (0.75 + 0.5 * random.random()), self.budget_s - waited)
                log.warning("%s unavailable (attempt %d, %.0fs of %.0fs budget), retrying in "
                            "%.1fs: %s", what, attempt, waited, self.budget_s, delay,
                            _one_line(exc))
                self._sleep(max(0.0, delay))
                continue
            if attempt:
                log.info("%s is back after %d failed attempt(s), %.1fs",
                         what, attempt, self._clock() - (started or 0.0))
            return result
