"""The loop that glues the stages: poll, batch, hand over, commit what was written.

The poll loop runs on the caller's thread and is the only code that touches the consumer.
Batches travel prepare -> embed -> write on three worker threads connected by FIFO queues, so
they finish in the order they were opened and committing batch N's offsets is always safe once
batch N is written. While the pipeline is full the partitions are paused and ``poll()`` keeps
running, which keeps the consumer in its group (see ingest/source.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingest.plan import EventItem
from ingest.source import KafkaSource, Revocations
from ingest.stages import Batch, BatchStats, Stages, parse_records
from store import quiet_client_logs
from store.errors import StoreError

log = logging.getLogger(__name__)

_STOP = object()

LAG_EVERY_S = 0.5
"""How often the loop hands ``Runner.on_lag`` the events behind (``KafkaSource.behind``):
often enough for a scrape to see a stall, without a pass over the assignment per poll."""

IDLE_CHECK_EVERY_S = 2.0
"""How often the loop starts ``Runner``'s idle check while nothing is pending or in flight. It
is the serving guard (``ServingGuard.check``: one alias read while the model serves), which the
write stage otherwise runs only after a batch: an old-model ingest of a quiet catalog stops
within about this long of a model switch instead of at its next event."""

IDLE_CHECK_MAX_S = 30.0
"""While Milvus is away the idle check backs off, doubling its interval up to this: the store
logs each failed call, and an ingest with nothing to write has no reason to knock every 2 s."""


class IngestError(RuntimeError):
    """A batch could not be written; its offsets (and later ones) stay uncommitted."""


@dataclass(frozen=True)
class RunnerConfig:
    """The loop's limits: the fields of ``IngestSettings`` (lookalike/settings.py, where their
    defaults and meaning live; ``lookalike.app.build_runner`` passes them all)."""

    batch_events: int
    batch_images: int
    batch_timeout_s: float
    max_in_flight: int
    shutdown_grace_s: float
    poll_timeout_ms: int = 100


@dataclass
class RunReport:
    batches: int = 0
    totals: BatchStats = field(default_factory=BatchStats)
    stopped_by: str = ""
    seconds: float = 0.0


class Pipeline:
    """Three stage threads; batches come out of ``done`` in the order they went in."""

    def __init__(self, stages: Stages) -> None:
        self.done: queue.Queue[Any] = queue.Queue()
        self._queues: list[queue.Queue[object]] = [queue.Queue() for _ in range(3)]
        steps: list[Callable[[Batch], None]] = [stages.prepare, stages.embed, stages.write]
        outs: list[queue.Queue[Any]] = [self._queues[1], self._queues[2], self.done]
        self._threads = [
            threading.Thread(
                target=self._work, args=(step, self._queues[i], outs[i]), name=name, daemon=True
            )
            for i, (step, name) in enumerate(zip(steps, ("prepare", "embed", "write"), strict=True))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _work(
        step: Callable[[Batch], None], inbox: queue.Queue[object], out: queue.Queue[object]
    ) -> None:
        while True:
            batch = inbox.get()
            if batch is _STOP:
                out.put(_STOP)
                return
            assert isinstance(batch, Batch)
            if batch.error is None:
                try:
                    step(batch)
                except BaseException as exc:  # carried to the poll loop, which stops
                    batch.error = exc
            out.put(batch)

    def submit(self, batch: Batch) -> None:
        self._queues[0].put(batch)

    def close(self, timeout_s: float = 5.0) -> None:
        self._queues[0].put(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class IdleCheck:
    """One run of the runner's idle check, on a thread of its own: Milvus calls have no
    deadline (``has_collection``, ``describe``), and the poll loop must keep calling ``poll()``
    while one hangs (ingest/source.py). Never more than one at a time: the loop starts the next
    only once this one is done."""

    def __init__(self, check: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(check,), name="idle-check",
                                        daemon=True)
        self._thread.start()

    def _run(self, check: Callable[[], None]) -> None:
        try:
            check()
        except BaseException as exc:  # read by the poll loop (Runner._run_idle_check)
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()


class Runner:
    """Consumes product events until stopped (or caught up) and commits after each write."""

    def __init__(
        self,
        source: KafkaSource,
        pipeline: Pipeline,
        config: RunnerConfig,
        *,
        on_batch: Callable[[Batch, RunReport], None] | None = None,
        on_idle: Callable[[bool], object] | None = None,
        idle_check: Callable[[], None] | None = None,
    ) -> None:
        """``on_idle(final)``: called on this thread while nothing is pending or in flight
        (``final``: once more after the last batch drained); the sink's ``seal_if_idle``.
        ``idle_check``: started every :data:`IDLE_CHECK_EVERY_S` while nothing is pending or
        in flight (:class:`IdleCheck`); an exception other than ``StoreError`` stops the loop
        as a failed batch does, and ``run`` raises it as the cause of its ``IngestError``."""
        self._source = source
        self._pipeline = pipeline
        self._config = config
        self._on_batch = on_batch
        self._on_idle = on_idle
        self._idle_check = idle_check
        self._check: IdleCheck | None = None
        self._check_at = 0.0
        self._check_every = IDLE_CHECK_EVERY_S
        self._check_failing = False
        self._stop = threading.Event()
        self._stop_reason = ""
        self._pending: list[ConsumerRecord] = []
        self._pending_items: list[EventItem] = []
        self._pending_images = 0
        self._pending_since = 0.0
        self._failure: BaseException | None = None
        self._revocations = Revocations()
        self._taken = 0
        """The revocation serial the loop has dealt with (``_forget_revoked``)."""
        self._pending_read_at = 0
        self._unrewound: dict[TopicPartition, int] = {}
        """First offsets of items finished batches dropped for a revocation the loop had not
        dealt with yet (it rewinds to them with the revocation's other records)."""
        self._in_flight: list[Batch] = []
        self._seq = 0
        self.report = RunReport()
        self.on_lag: Callable[[dict[TopicPartition, int | None]], None] | None = None
        """Called on this thread with ``KafkaSource.behind()`` every :data:`LAG_EVERY_S`
        (the ingest metrics' lag gauge), whether or not batches commit."""
        self._lag_at = 0.0
        source.on_revoked = self._on_revoked

    def stop(self, reason: str = "signal") -> None:
        """Ask the loop to finish: safe to call from a signal handler or another thread."""
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def run(self, *, until_caught_up: bool = False) -> RunReport:
        started = time.monotonic()
        quiet_client_logs()
        self._source.subscribe()
        self._check_at = time.monotonic() + IDLE_CHECK_EVERY_S  # the caller just checked
        try:
            while not self._stop.is_set():
                self._collect(block=False)
                self._source.pause() if self._pipeline_full() else self._source.resume()
                room = max(1, self._config.batch_events - len(self._pending))
                records = self._source.poll(self._config.poll_timeout_ms, room)
                if records:
                    self._add(records)
                self._forget_revoked()
                self._source.commit_owed()
                self._report_lag()
                self._maybe_submit()
                if self._idle():
                    self._idle_work(final=False)
                self._run_idle_check()
                if until_caught_up and self._idle() and self._source.caught_up():
                    self.stop("caught_up")
            self._finish()
            if self._failure is None and self._idle():
                self._idle_work(final=True)
        finally:
            self.report.seconds = time.monotonic() - started
            self._pipeline.close()
            self._source.close()
        if self._failure is not None:
            raise IngestError(f"ingest stopped: {self._failure!r}") from self._failure
        return self.report

    def _report_lag(self) -> None:
        if self.on_lag is None or time.monotonic() < self._lag_at:
            return
        self._lag_at = time.monotonic() + LAG_EVERY_S
        self.on_lag(self._source.behind())

    # -- batching -------------------------------------------------------------------------

    def _pipeline_full(self) -> bool:
        return len(self._in_flight) >= self._config.max_in_flight

    def _idle(self) -> bool:
        return not self._pending and not self._in_flight

    def _idle_work(self, *, final: bool) -> None:
        if self._on_idle is None:
            return
        try:
            self._on_idle(final)
        except StoreError as exc:  # a flush is no durability point: the next one retries
            log.warning("flush after the writes failed: %s", exc)

    def _run_idle_check(self) -> None:
        """Take the outcome of the idle check that finished; start the next one when it is
        due and the loop is idle. A ``StoreError`` (Milvus away) is logged once per spell of
        failures and the check tried again later, backing off to :data:`IDLE_CHECK_MAX_S`: it
        must not stop an ingest that has nothing to write. Any other exception
        (``ModelRetiredError``) stops the loop: nothing is pending, and a batch opened
        meanwhile is not committed (:meth:`_complete`)."""
        if self._idle_check is None:
            return
        check = self._check
        if check is not None:
            if not check.done():
                return
            self._check = None
            if isinstance(check.error, StoreError):
                if not self._check_failing:
                    log.warning("idle check failed: %s; trying again in %.0f-%.0f s",
                                check.error, IDLE_CHECK_EVERY_S * 2, IDLE_CHECK_MAX_S)
                self._check_failing = True
                self._check_every = min(self._check_every * 2, IDLE_CHECK_MAX_S)
                self._check_at = time.monotonic() + self._check_every
            elif check.error is not None:
                if self._failure is None:
                    self._failure = check.error
                    log.error("idle check: %s; stopping", check.error)
                self._stop.set()
                return
            elif self._check_failing:
                log.info("idle check works again")
                self._check_failing = False
                self._check_every = IDLE_CHECK_EVERY_S
                self._check_at = min(self._check_at, time.monotonic() + self._check_every)
        if self._idle() and time.monotonic() >= self._check_at:
            self._check_at = time.monotonic() + self._check_every
            self._check = IdleCheck(self._idle_check)

    def _add(self, records: list[ConsumerRecord]) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
            self._pending_read_at = self._taken
        items, n_images = parse_records(records, start=len(self._pending))
        self._pending.extend(records)
        self._pending_items.extend(items)
        self._pending_images += n_images

    def _maybe_submit(self, force: bool = False) -> None:
        if not self._pending or self._failure is not None:
            return
        if self._pipeline_full() and not force:
            return
        aged = time.monotonic() - self._pending_since >= self._config.batch_timeout_s
        full = len(self._pending) >= self._config.batch_events or (
            self._pending_images >= self._config.batch_images
        )
        if force or aged or full:
            self._seq += 1
            batch = Batch(
                self._seq, self._pending, self._pending_items, self._pending_images,
                self._pending_since, revocations=self._revocations,
                read_at=self._pending_read_at,
            )
            self._pending, self._pending_items, self._pending_images = [], [], 0
            self._in_flight.append(batch)
            self._pipeline.submit(batch)

    # -- completion -----------------------------------------------------------------------

    def _collect(self, *, block: bool, timeout_s: float = 0.0) -> bool:
        """Commit every finished batch; returns False if waiting timed out."""
        while self._in_flight:
            try:
                batch = self._pipeline.done.get(block=block, timeout=timeout_s if block else None)
            except queue.Empty:
                return not block
            self._complete(batch)
            block = False
        return True

    def _complete(self, batch: Batch) -> None:
        assert self._in_flight and self._in_flight[0] is batch, "batches finish in order"
        self._in_flight.pop(0)
        if batch.error is not None or self._failure is not None:
            # Nothing at or after a failed batch is committed: its events are read again.
            if self._failure is None:
                self._failure = batch.error
                log.error("batch=%d failed: %r; stopping without committing it",
                          batch.seq, batch.error)
            self._stop.set()
            return
        for tp, (offset, serial) in batch.revoked.items():
            if serial > self._taken:  # dropped before the loop saw that revocation
                self._unrewound[tp] = min(offset, self._unrewound.get(tp, offset))
        self._source.commit(batch.offsets())
        self.report.batches += 1
        self.report.totals.add(batch.stats)
        log.info("batch=%d %s e2e_s=%.3f", batch.seq, batch.stats.summary(),
                 time.monotonic() - batch.opened_at)
        if self._on_batch is not None:
            self._on_batch(batch, self.report)

    def _drain(self, grace_s: float) -> None:
        """Wait for in-flight batches (up to ``grace_s``), committing each as it lands."""
        deadline = time.monotonic() + grace_s
        self._source.pause()
        while self._in_flight and time.monotonic() < deadline:
            self._collect(block=True, timeout_s=min(0.2, max(0.0, deadline - time.monotonic())))
        if self._in_flight:
            log.warning(
                "abandoning %d unfinished batch(es); their events will be consumed again",
                len(self._in_flight),
            )

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Runs on kafka-python's IO thread: must not block or call the consumer. It only
        notes the partitions (:class:`ingest.source.Revocations`). From then on this consumer
        starts no write of their events: the write stage drops them before each attempt
        (``Batch.drop_revoked``), so they are neither written, dead-lettered nor committed
        here; the loop drops them from the records not yet batched. The new owner re-reads
        from the last commit and decides on each event against what the store holds. A write
        already running when the revocation lands cannot be called back: that window is
        bounded by one ``MilvusSink.apply`` (docs/hardening.md, "A partition that moves")."""
        if revoked:
            self._revocations.note(revoked)

    def _forget_revoked(self) -> None:
        """Deal with the revocations noted since the last turn: drop their records not yet
        batched, and seek each partition back to the first of its records this consumer
        read but may not write (pending, in flight, or dropped by a finished batch), in case
        the rejoin hands it straight back: kafka-python then keeps its fetch position, past
        them (a partition that moved away ignores the seek; its new owner reads from the last
        commit). Records of a batch whose write was already running are read again too and
        found stale."""
        revoked, self._taken = self._revocations.take()
        if not revoked:
            return
        self._source.forget(revoked)
        self._lag_at = 0.0  # their lag series go at once
        first = {tp: off for tp, off in self._unrewound.items() if tp in revoked}
        self._unrewound = {tp: off for tp, off in self._unrewound.items() if tp not in revoked}

        def note(record: ConsumerRecord) -> bool:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in revoked:
                return False
            first[tp] = min(record.offset, first.get(tp, record.offset))
            return True

        for batch in self._in_flight:
            for record in batch.records:
                note(record)
        keep = [r for r in self._pending if not note(r)]
        log.info("partitions revoked: %s; dropping %d unsubmitted record(s); %d batch(es) in "
                 "flight drop theirs before they write", sorted(tp.partition for tp in revoked),
                 len(self._pending) - len(keep), len(self._in_flight))
        self._pending, self._pending_items, self._pending_images = [], [], 0
        if keep:
            self._add(keep)
        if first:  # a partition handed back keeps its position, past these records
            self._source.rewind(first)

    def _finish(self) -> None:
        self.report.stopped_by = self._stop_reason or "stopped"
        if self._pending:
            self._pending_items, self._pending_images = [], 0
            log.info("dropping %d polled but unsubmitted record(s): not committed, "
                     "they will be consumed again", len(self._pending))
            self._pending = []
        self._drain(self._config.shutdown_grace_s)
