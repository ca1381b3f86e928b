"""Records kafka-python cannot read: read them leniently, so that they are dead-lettered.

kafka-python 3.0.12 decodes each header key as strict UTF-8 and raises ``CorruptRecordError``
out of ``poll()`` for a key that is not (``\\xff\\xfe``: librdkafka clients can send such
keys; Java's consumer reads them with replacement characters), at that offset for ever.
Seeking one offset further is not enough: a fetch returns whole record batches and
kafka-python decodes every record of a batch, those before the fetch offset too, so a record
batched with the bad one (any producer that batches) fails again.

So the consumer keeps the raw bytes of each fetch (:func:`keep_raw_fetches`), and when
``poll()`` raises, :func:`read_failed_batch` replays kafka-python's decoding on those bytes to
find the batch it failed on, and reads that batch itself: records kafka-python would have
read come back as they are, the others as :class:`UnreadableRecord` (what could be read of
them, header keys with their odd bytes backslash-escaped), which ingest dead-letters with
reason ``corrupt_record``. The consumer then goes on after that batch. What cannot be read at
all (a batch whose structure is broken) is one :class:`UnreadableRecord` with an empty value
that names the offsets it stands for. kafka-python's internals used here are those of 3.0.12
(pinned; ``tests/test_dead_letters.py`` checks them on the real broker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import decode_varint

log = logging.getLogger(__name__)


class UnreadableRecord(ConsumerRecord):  # type: ignore[misc]
    """A record kafka-python could not decode; ``error`` says why (the dead letter's detail).
    Key, value and headers are what could be read (empty when nothing could)."""

    error: str


def unreadable(tp: TopicPartition, offset: int, error: str, *, key: bytes | None = None,
               value: bytes | None = b"", headers: list[tuple[str, bytes | None]] | None = None,
               timestamp: int = -1, timestamp_type: int = 0,
               leader_epoch: int = -1) -> UnreadableRecord:
    record = UnreadableRecord(tp.topic, tp.partition, leader_epoch, offset, timestamp,
                              timestamp_type, key, value, headers or [], None,
                              -1 if key is None else len(key),
                              -1 if value is None else len(value), -1)
    record.error = error
    return record


class _RawPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """kafka-python's parsed fetch of one partition, keeping its raw bytes (a reference to
    the response's buffer, not a copy) for :func:`read_failed_batch`."""

    def __init__(self, fetch_offset: int, tp: TopicPartition, records: MemoryRecords,
                 *args: Any, **kwargs: Any) -> None:
        self.raw: bytes | None = getattr(records, "_buffer", None)
        super().__init__(fetch_offset, tp, records, *args, **kwargs)


def keep_raw_fetches(consumer: KafkaConsumer) -> None:
    """Make ``consumer`` keep each fetch's raw bytes (its fetcher's own instance only)."""
    consumer._fetcher.PartitionRecords = _RawPartitionRecords


@dataclass(frozen=True)
class FailedFetch:
    """Where ``poll()`` raised: the partition, the offset it stopped at (its position), the
    raw bytes of that fetch (None: not kept), and kafka-python's parsed fetch."""

    tp: TopicPartition
    position: int
    raw: bytes | None
    parsed: Any


def failed_fetch(consumer: KafkaConsumer) -> FailedFetch | None:
    """The fetch ``poll()`` just raised ``CorruptRecordError`` for, or None if the consumer's
    state does not say. kafka-python raises it while it takes records from its current
    partition fetch (at once, or on the next ``poll()`` when records came before it) and
    leaves that fetch in place; the partition's position is the first record not returned.
    The record that failed may lie before it: records before the fetch offset are decoded
    too (and dropped), so its ``next_fetch_offset`` may be behind the position, never ahead."""
    parsed = getattr(consumer._fetcher, "_next_partition_records", None)
    if parsed is None:
        return None
    tp = parsed.topic_partition
    state = consumer._subscription.assignment.get(tp)
    if state is None or state.position is None:
        return None
    position = int(state.position.offset)
    if parsed.next_fetch_offset > position:
        return None
    return FailedFetch(tp, position, getattr(parsed, "raw", None), parsed)


@dataclass
class _Read:
    """One record as :func:`_read_record` found it; ``problem``: why kafka-python refuses it."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    problem: str


PREFIX = "kafka-python cannot decode the record"


def read_failed_batch(
    failed: FailedFetch, error: str, *, check_crcs: bool, max_records: int
) -> tuple[list[ConsumerRecord], int]:
    """The records from ``failed.position`` on of the batch kafka-python failed on (at most
    ``max_records``), and the offset to go on from. Without the raw bytes, or when even this
    reading fails, one :class:`UnreadableRecord` with an empty value for the position, and
    the next offset. ``error``: kafka-python's message, in the details of what it says."""
    tp, position = failed.tp, failed.position
    try:
        batch = None if failed.raw is None else _failed_batch(failed.raw, check_crcs)
        if batch is not None:
            return _read_batch(tp, position, batch, error, check_crcs, max_records)
        why = "the fetched bytes were not kept" if failed.raw is None else (
            "no batch of the fetch fails to decode here")
    except Exception as exc:  # hostile bytes: whatever breaks, this record stays unread
        log.debug("reading %s at %d leniently failed", tp, position, exc_info=True)
        why = f"{type(exc).__name__}: {exc}"
    detail = f"{PREFIX} ({error}); its content could not be read either ({why})"
    return [unreadable(tp, position, detail)], position + 1


def _batches(raw: bytes) -> list[bytes]:
    """The complete record batches in a fetch's bytes (a partial one at the end, which a
    broker may send, is left out as kafka-python leaves it)."""
    chunks: list[bytes] = []
    pos = 0
    while len(raw) - pos >= MemoryRecords.LOG_OVERHEAD:
        length = int.from_bytes(raw[pos + MemoryRecords.LENGTH_OFFSET:pos + 12], "big",
                                signed=True)
        end = pos + MemoryRecords.LOG_OVERHEAD + length
        if length < 0 or end > len(raw):
            break
        chunks.append(raw[pos:end])
        pos = end
    return chunks


def _failed_batch(raw: bytes, check_crcs: bool) -> bytes | None:
    """The first batch kafka-python fails on, replaying what its fetcher does with these
    bytes (CRC check, then each record; control batches are not read), or None if none fails
    or it is not a message format v2 batch (v0/v1 have no headers to read leniently)."""
    for chunk in _batches(bytes(raw)):
        try:
            batch = MemoryRecords(chunk).next_batch()
        except Exception:
            return None  # not even a batch header: nothing here can be read
        if not isinstance(batch, DefaultRecordBatch):
            return None
        if check_crcs and not batch.validate_crc():
            return chunk
        if batch.is_control_batch:
            continue
        try:
            for _ in batch:
                pass
        except Exception:
            return chunk
    return None


def _read_batch(tp: TopicPartition, position: int, chunk: bytes, error: str, check_crcs: bool,
                max_records: int) -> tuple[list[ConsumerRecord], int]:
    """Read the batch leniently from ``position`` on (see :func:`read_failed_batch`). Where
    its structure breaks, the offsets left are one unreadable record at the batch's last
    offset that names them: the next record cannot be found."""
    batch = DefaultRecordBatch(chunk)
    crc_ok = not check_crcs or batch.validate_crc()
    out: list[ConsumerRecord] = []
    first_unread = position
    try:
        batch._maybe_uncompress()
        buffer, pos = batch._buffer, batch._pos
        for _ in range(batch.records_count):
            if len(out) == max_records:
                return out, first_unread
            read, pos = _read_record(buffer, pos, batch)
            if not batch.base_offset <= read.offset <= batch.last_offset or (
                    position <= read.offset < first_unread):
                raise ValueError(f"offset {read.offset} out of order in its batch")
            if read.offset < position:
                continue  # returned by kafka-python before it failed
            problem = read.problem or ("" if crc_ok else f"its batch fails its CRC ({error})")
            if problem:
                out.append(unreadable(
                    tp, read.offset, f"{PREFIX}: {problem}", key=read.key, value=read.value,
                    headers=read.headers, timestamp=read.timestamp,
                    timestamp_type=batch.timestamp_type, leader_epoch=batch.leader_epoch))
            else:
                out.append(_record(tp, batch, read))
            first_unread = read.offset + 1
    except Exception as exc:  # hostile bytes: the rest of the batch cannot be found
        if first_unread <= batch.last_offset:
            out.append(unreadable(
                tp, batch.last_offset,
                f"{PREFIX} ({error}): offsets {first_unread} to {batch.last_offset} cannot "
                f"be read either ({type(exc).__name__}: {exc})",
                leader_epoch=batch.leader_epoch))
    return out, max(batch.next_offset, position)  # never back: those records were returned


def _record(tp: TopicPartition, batch: DefaultRecordBatch, read: _Read) -> ConsumerRecord:
    """The record as kafka-python would have returned it."""
    header_size = sum(len(k.encode()) + len(v or b"") for k, v in read.headers)
    return ConsumerRecord(
        tp.topic, tp.partition, batch.leader_epoch, read.offset, read.timestamp,
        batch.timestamp_type, read.key, read.value, read.headers, None,
        -1 if read.key is None else len(read.key), -1 if read.value is None else len(read.value),
        header_size if read.headers else -1)


def _nullable_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise ValueError(f"{size} bytes announced, {len(buffer) - pos} left")
    return bytes(buffer[pos:pos + size]), pos + size


def _read_record(buffer: bytearray, pos: int, batch: DefaultRecordBatch) -> tuple[_Read, int]:
    """One record of a message format v2 batch, as kafka-python's ``_read_msg`` reads it
    but for header keys: one that is not UTF-8 is kept with its odd bytes backslash-escaped,
    and ``problem`` says so. Structure errors raise."""
    length, pos = decode_varint(buffer, pos)
    start = pos
    _attributes, pos = decode_varint(buffer, pos)
    timestamp_delta, pos = decode_varint(buffer, pos)
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _nullable_bytes(buffer, pos)
    value, pos = _nullable_bytes(buffer, pos)
    count, pos = decode_varint(buffer, pos)
    if count < 0:
        raise ValueError(f"negative header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    problems: list[str] = []
    for _ in range(count):
        raw_key, pos = _nullable_bytes(buffer, pos)
        if raw_key is None:
            raise ValueError("null header key")
        try:
            name = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            name = raw_key.decode("utf-8", "backslashreplace")
            problems.append(f"header key '{name}' is not UTF-8")
        header_value, pos = _nullable_bytes(buffer, pos)
        headers.append((name, header_value))
    if pos - start != length:
        raise ValueError(f"record of {length} bytes, {pos - start} read")
    timestamp = (batch.max_timestamp if batch.timestamp_type == batch.LOG_APPEND_TIME
                 else batch.first_timestamp + timestamp_delta)
    read = _Read(batch.base_offset + offset_delta, timestamp, key, value, headers,
                 "; ".join(problems))
    return read, pos
