"""Reading a record batch kafka-python cannot decode (fast: batches built here, no broker).

The real-broker case, a header key that is not UTF-8, is in tests/test_dead_letters.py.
"""

from __future__ import annotations

import struct
from typing import Any

from kafka import TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder

from ingest.stages import parse_records
from ingest.unreadable import FailedFetch, UnreadableRecord, read_failed_batch
from schema.errors import Reason

TP = TopicPartition("t", 0)
LAST_OFFSET_DELTA, RECORDS_COUNT = 23, 57
"""Byte offsets of these fields in a message format v2 batch header."""


class _RawKey(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return b"\xff\xfe"


def batch(*headers: list[tuple[str, bytes | None]]) -> bytearray:
    """One batch of len(headers) records at offsets 0..n-1, values b"v0", b"v1"..."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for offset, record_headers in enumerate(headers):
        builder.append(offset, 1_000 + offset, f"k{offset}".encode(), f"v{offset}".encode(),
                       record_headers)
    return builder.build()


def read(raw: bytes | None, position: int, *, check_crcs: bool = True,
         max_records: int = 100) -> tuple[list[Any], int]:
    return read_failed_batch(FailedFetch(TP, position, raw, None), "kafka-python's error",
                             check_crcs=check_crcs, max_records=max_records)


def test_only_the_record_with_a_key_that_is_not_utf8_is_unreadable() -> None:
    raw = batch([], [(_RawKey("x"), b"v"), ("ok", None)], [("trace", None)], [])
    records, resume = read(bytes(raw), 1)
    assert [r.offset for r in records] == [1, 2, 3] and resume == 4
    bad, after, _last = records
    assert isinstance(bad, UnreadableRecord) and (bad.key, bad.value) == (b"k1", b"v1")
    assert bad.headers == [("\\xff\\xfe", b"v"), ("ok", None)]
    assert "header key '\\xff\\xfe' is not UTF-8" in bad.error
    assert not isinstance(after, UnreadableRecord) and after.headers == [("trace", None)]
    assert (after.timestamp, after.serialized_value_size) == (1_002, 2)
    items, _ = parse_records(records)
    assert [i.error.reason if i.error else None for i in items] == [
        Reason.CORRUPT_RECORD, Reason.MALFORMED_JSON, Reason.MALFORMED_JSON]


def test_records_after_the_position_only_and_at_most_max_records() -> None:
    raw = bytes(batch([(_RawKey("x"), b"")], [], [], []))
    records, resume = read(raw, 0, max_records=2)
    assert [r.offset for r in records] == [0, 1] and resume == 2
    records, resume = read(raw, 2)  # kafka-python fails on offset 0 again, before 2
    assert [r.offset for r in records] == [2, 3] and resume == 4
    assert not any(isinstance(r, UnreadableRecord) for r in records)


def test_a_batch_failing_its_crc_is_dead_lettered_record_by_record_with_its_content() -> None:
    raw = batch([], [], [])
    at = raw.index(b"v1")
    raw[at:at + 2] = b"w1"  # a value changed in transit: only the CRC knows
    records, resume = read(bytes(raw), 1)
    assert resume == 3 and [r.offset for r in records] == [1, 2]
    assert all(isinstance(r, UnreadableRecord) and "CRC" in r.error for r in records)
    assert [r.value for r in records] == [b"w1", b"v2"]


def test_where_the_structure_breaks_the_offsets_left_are_one_record() -> None:
    raw = batch([], [])
    struct.pack_into(">i", raw, LAST_OFFSET_DELTA, 3)  # four records announced, two written
    struct.pack_into(">i", raw, RECORDS_COUNT, 4)
    records, resume = read(bytes(raw), 0, check_crcs=False)
    assert [r.offset for r in records] == [0, 1, 3] and resume == 4
    assert not isinstance(records[0], UnreadableRecord)
    lost = records[2]
    assert isinstance(lost, UnreadableRecord) and lost.value == b""
    assert "offsets 2 to 3 cannot be read either" in lost.error


def test_without_the_fetched_bytes_the_position_is_dead_lettered_empty() -> None:
    records, resume = read(None, 7)
    assert resume == 8 and [r.offset for r in records] == [7]
    assert isinstance(records[0], UnreadableRecord) and records[0].value == b""
    assert "content could not be read" in records[0].error
