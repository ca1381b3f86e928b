"""Source stage: the Kafka consumer, owned by the poll loop's thread alone.

kafka-python's consumer is not thread-safe, and in 3.0.12 a group join that completes outside
``poll()`` is thrown away and retried forever. So everything that touches the consumer (poll,
pause/resume, commit, lag) happens here, on the loop's thread, and the loop never blocks on
the model: back-pressure pauses partitions while ``poll()`` keeps the membership alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka import errors as Errors
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from ingest.unreadable import (
    UnreadableRecord,
    failed_fetch,
    keep_raw_fetches,
    read_failed_batch,
)

log = logging.getLogger(__name__)

Offsets = dict[TopicPartition, int]

COMMIT_TIMEOUT_MS = 5_000
"""How long one commit may block the poll loop; a commit that times out (broker away) is
kept and retried with the next one, so the loop goes back to polling."""

CLOSE_TIMEOUT_MS = 3_000
"""How long closing waits for the broker to answer the consumer's LeaveGroup. Tansu answers it
only after a JoinGroup in flight on the same connection, and holds a join for half the session
timeout (5 s by default; the setting allows 15 min), while kafka-python waits up to its request
timeout (30 s): a stop during a join took that long. Cut short, the member is dropped by the
group when its session times out (a consumer joining meanwhile may wait for that)."""

OWED_RETRY_S = 1.0
"""How soon offsets a refused commit left owed are tried again when no batch brings a new
commit (the last batch before a quiet spell, whose commit met a rebalance or an outage)."""


class UnreadableRecordError(RuntimeError):
    """``poll()`` raised ``CorruptRecordError`` and the consumer's state does not say for
    which partition and offset (a kafka-python other than 3.0.12?): a bug, not an outage."""


class Revocations:
    """The partitions revoked from this consumer, each revocation numbered in order.

    Noted on kafka-python's IO thread (the rebalance callback, which must not block: one lock
    held for a few dict updates) and read by the poll loop and the write stage. What was read
    while the count stood at ``serial`` belongs to a partition revoked since when
    :meth:`since` names it: its owner may have changed, so it must not be written or
    committed here (ingest/stages.py ``Batch.drop_revoked``). A partition handed straight back
    counts as revoked too: between the two callbacks another member may have owned it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serial = 0
        self._last: dict[TopicPartition, int] = {}
        self._untaken: set[TopicPartition] = set()

    def note(self, revoked: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._serial += 1
            for tp in revoked:
                self._last[tp] = self._serial
                self._untaken.add(tp)

    def take(self) -> tuple[set[TopicPartition], int]:
        """The partitions revoked since the last take, and the serial this take reaches."""
        with self._lock:
            taken, self._untaken = self._untaken, set()
            return taken, self._serial

    def since(self, serial: int, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Those of ``tps`` revoked after ``serial``, each with its latest revocation's."""
        with self._lock:
            return {tp: last for tp in tps if (last := self._last.get(tp, 0)) > serial}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        on_revoked: Callable[[set[TopicPartition]], None],
        on_assigned: Callable[[set[TopicPartition]], None],
    ) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._on_assigned(set(assigned))


class KafkaSource:
    """Polls product events; commits only the offsets it is told were fully written."""

    def __init__(
        self, consumer: KafkaConsumer, topic: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._paused = False
        self._owed: Offsets = {}
        self._committed: Offsets = {}
        """Per partition, the offset its group has committed as far as this consumer knows:
        its last commit, else the first offset it read since it was (re)assigned
        (:meth:`behind`). Poll thread only."""
        self._clock = clock
        self._retry_owed_at = 0.0
        self.on_revoked: Callable[[set[TopicPartition]], None] = lambda _tps: None
        # the sink reads states Strong for a while: a previous owner may just have written them
        self.on_assigned: Callable[[set[TopicPartition]], None] = lambda _tps: None

    def subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topic],
            listener=_Listener(lambda tps: self.on_revoked(tps), self._assigned),
        )

    def _assigned(self, tps: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in tps))
        if self._paused and tps:
            self._consumer.pause(*tps)
        self.on_assigned(tps)

    def poll(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except Errors.CorruptRecordError as exc:
            return self._read_past(exc, max_records)
        records: list[ConsumerRecord] = []
        for tp_records in batches.values():
            records.extend(tp_records)
        self._note_read(records)
        return records

    def _note_read(self, records: list[ConsumerRecord]) -> None:
        """A partition read from with no commit of this consumer's since its assignment was
        read from its committed offset on: its first record's is it."""
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in self._committed:
                self._committed[tp] = r.offset

    def _read_past(self, exc: Errors.CorruptRecordError, max_records: int) -> list[ConsumerRecord]:
        """``poll()`` raised for a record kafka-python cannot decode (a header key that is not
        UTF-8, a bad CRC): it would raise at that offset for ever, and a restart (exit 4, "try
        again later") met it again. The batch it is in is read here instead
        (ingest/unreadable.py): its records come back, those kafka-python cannot read as
        :class:`UnreadableRecord` for the dead-letter topic, and the partition goes on after
        them. Records before it were returned by earlier polls."""
        failed = failed_fetch(self._consumer)
        if failed is None:  # kafka-python's state changed: a bug, not an outage (exit 1)
            raise UnreadableRecordError(
                f"poll() raised {exc!r} and the consumer does not say where") from exc
        records, resume = read_failed_batch(
            failed, str(exc), check_crcs=bool(self._consumer.config.get("check_crcs", True)),
            max_records=max_records)
        failed.parsed.drain()  # its reading ended with the error: fetch again from ``resume``
        try:
            self._consumer.seek(failed.tp, resume)
        except ValueError:  # not assigned here any more: its next owner meets the record
            return []
        self._note_read(records)
        bad = [r.offset for r in records if isinstance(r, UnreadableRecord)]
        log.warning("partition %d: kafka-python cannot decode a record batch (%s); read it "
                    "here from offset %d: %d record(s), unreadable (dead-lettered): %s; going "
                    "on from offset %d", failed.tp.partition, exc, failed.position,
                    len(records), bad or "none", resume)
        return records

    def pause(self) -> None:
        """Stop fetching (back-pressure) but stay in the group: poll() keeps heartbeating."""
        if not self._paused:
            self._paused = True
            assigned = self._consumer.assignment()
            if assigned:
                self._consumer.pause(*assigned)

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            paused = self._consumer.paused()
            if paused:
                self._consumer.resume(*paused)

    def rewind(self, offsets: Offsets) -> None:
        """Read ``offsets`` (per partition, the first record dropped unwritten) again if the
        partition is still, or again, this consumer's. A rebalance that hands a partition back
        keeps its fetch position, which is past the records the runner dropped when it was
        revoked: without this seek they were skipped until a restart (caught up, committed
        short of the end). A partition that moved away, or whose membership was lost, needs
        nothing: its next owner starts from the last commit, at or before these records."""
        for tp, offset in offsets.items():
            try:
                self._consumer.seek(tp, offset)
            except ValueError:  # not assigned here: its next owner reads from the commit
                continue
            self._committed[tp] = min(offset, self._committed.get(tp, offset))
            log.info("partition %d handed back: reading again from offset %d",
                     tp.partition, offset)

    def commit(self, offsets: Offsets) -> bool:
        """Synchronously commit ``offsets`` (the next offset to read, per partition) for the
        partitions still owned. A commit refused because the group is rebalancing is kept and
        retried with the next one; if the partition moves meanwhile, its new owner re-reads
        those events and finds them already applied. Returns whether all owed offsets landed."""
        for tp, offset in offsets.items():
            self._owed[tp] = max(offset, self._owed.get(tp, 0))
        owned = self._consumer.assignment()
        self._owed = {tp: off for tp, off in self._owed.items() if tp in owned}
        if not self._owed:
            return True
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._owed.items()},
                timeout_ms=COMMIT_TIMEOUT_MS,
            )
        except (
            Errors.RebalanceInProgressError,
            Errors.CommitFailedError,
            Errors.IllegalGenerationError,
            Errors.UnknownMemberIdError,
            Errors.KafkaTimeoutError,  # the broker is away: an outage, waited out by polling
        ) as exc:
            return self._deferred(exc)
        except Errors.KafkaError as exc:
            if not getattr(exc, "retriable", False):
                raise
            return self._deferred(exc)
        self._committed.update(self._owed)
        self._owed = {}
        return True

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        """Partitions revoked (on the poll thread, when the loop deals with the revocation):
        what this consumer knew of their commits may be another member's past now."""
        for tp in revoked:
            self._committed.pop(tp, None)

    def _deferred(self, exc: Exception) -> bool:
        log.warning("commit deferred (%s); retried in %.0fs or with the next batch",
                    type(exc).__name__, OWED_RETRY_S)
        self._retry_owed_at = self._clock() + OWED_RETRY_S
        return False

    def commit_owed(self) -> bool:
        """Try again the offsets a refused commit left owed, at most every ``OWED_RETRY_S``.
        The loop calls it every turn: without it, the offsets of the last batch before a quiet
        spell stayed uncommitted until the next event arrived (a rebalance refuses the commits
        of the batches written while it runs). Returns whether nothing is owed any more."""
        if not self._owed:
            return True
        if self._clock() < self._retry_owed_at:
            return False
        return self.commit({})

    def lag(self) -> dict[TopicPartition, int | None]:
        """Records left per assigned partition, from the fetch high-water mark (Tansu answers
        ListOffsets LATEST wrongly, so end offsets are never asked for). ``None``: not known
        yet (no fetch response seen for the partition). One pass over the assignment
        (:func:`_fetch_positions`)."""
        result: dict[TopicPartition, int | None] = {}
        for tp, position in _fetch_positions(self._consumer).items():
            high = self._consumer.highwater(tp)
            result[tp] = None if high is None or position is None else max(0, high - position)
        return result

    def behind(self) -> dict[TopicPartition, int | None]:
        """Events not yet committed per assigned partition: the fetch high-water mark minus
        the committed offset (:attr:`_committed`, or the position where nothing was read
        since the assignment: it starts at the commit). Unlike :meth:`lag`, events read but
        waiting in the pipeline count, so a stalled pipeline shows its backlog growing (as
        far as fetches reach: a paused partition's mark stays at its last fetch response).
        Only what the consumer already holds is read: no broker round trip, cheap enough for
        every turn of the loop. ``None``: not known yet."""
        owned = self._consumer.assignment()
        self._committed = {tp: off for tp, off in self._committed.items() if tp in owned}
        result: dict[TopicPartition, int | None] = {}
        for tp, position in _fetch_positions(self._consumer).items():
            high = self._consumer.highwater(tp)
            base = self._committed.get(tp, position)
            result[tp] = None if high is None or base is None else max(0, high - base)
        return result

    def caught_up(self) -> bool:
        """Everything assigned was read and every offset read was committed."""
        if not self.commit_owed():
            return False
        lags = self.lag()
        return bool(lags) and all(v == 0 for v in lags.values())

    def close(self) -> None:
        """Leave the group and close, waiting at most :data:`CLOSE_TIMEOUT_MS` for the broker
        to answer the leave. The offsets are committed already (each commit waits for its
        answer), so a leave left unanswered loses nothing."""
        unanswered = _UnansweredLeave()
        coordinator_log = logging.getLogger("kafka.coordinator")
        coordinator_log.addFilter(unanswered)
        try:
            self._consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
        finally:
            coordinator_log.removeFilter(unanswered)
        if unanswered.seen:
            log.info("left the consumer group without waiting more than %gs for its answer (a "
                     "group join was in progress); the group drops this member after "
                     "session_timeout_ms", CLOSE_TIMEOUT_MS / 1000)


class _UnansweredLeave(logging.Filter):
    """Drops kafka-python's ERROR line for a LeaveGroup that :data:`CLOSE_TIMEOUT_MS` cut
    short: the stop is a graceful one, and :meth:`KafkaSource.close` says what happened."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("LeaveGroup request failed"):
            self.seen = True
            return False
        return True


def _fetch_positions(consumer: KafkaConsumer) -> dict[TopicPartition, int | None]:
    """The next offset to fetch of each assigned partition (None: not known yet), in one pass.

    ``KafkaConsumer.position(tp)`` refreshes and re-validates the positions of *every* assigned
    partition before it answers, so asking it per partition made ``lag()`` O(n^2): 76 ms at
    250 partitions, 1.3 s at 1,000, 22 s at 4,000, hours at the 100,000 that
    ``LOOKALIKE_KAFKA__PARTITIONS`` once allowed, while the poll loop, its commits and SIGTERM
    waited. ``poll()`` does that refresh every turn, so the positions it left in the consumer's
    subscription state are read as they are (kafka-python 3.0.12, pinned;
    ``tests/test_ingest_consumer.py`` checks them against ``position()``).
    """
    states = consumer._subscription.assignment  # TopicPartition -> TopicPartitionState
    positions: dict[TopicPartition, int | None] = {}
    for tp in consumer.assignment():
        position = getattr(states.get(tp), "position", None)  # OffsetAndMetadata
        positions[tp] = None if position is None else int(position.offset)
    return positions


def build_consumer(
    bootstrap_servers: str,
    group_id: str,
    client_id: str,
    *,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_records: int,
    **extra: Any,
) -> KafkaConsumer:
    """The consumer as the loop needs it: manual commits, start at the earliest offset for a
    new group (a backfill must see the whole topic), each fetch's raw bytes kept so that a
    record kafka-python cannot decode is still dead-lettered (:meth:`KafkaSource.poll`)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        max_poll_records=max_poll_records,
        # A paused consumer must not be evicted while the model works through a backlog.
        max_poll_interval_ms=max(300_000, session_timeout_ms * 3),
        **extra,
    )
    keep_raw_fetches(consumer)
    return consumer
