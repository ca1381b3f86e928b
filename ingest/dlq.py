"""Dead-letter topic: events that cannot be applied go here with their original payload.

The reason travels in headers (``lookalike.reason``, ``lookalike.detail``, and where the event
came from), so the payload stays byte-for-byte what the shop sent and can be replayed once
fixed. Sends are flushed before the batch's offsets are committed.

A dead letter must never fail its batch, or the poison message would block its partition
for good. So a payload (or key) too big for the producer's request limit is cut to a prefix,
and the headers ``lookalike.original_size`` and ``lookalike.original_sha256`` say what it
was; a copied header whose value is null (Kafka allows it, kafka-python's producer refuses it)
goes as an empty value, counted in ``lookalike.null_headers``; a send the broker did not
acknowledge (an outage) is sent again on the next ``flush``. A letter the producer or the
broker refuses for what it contains (a refusal that sending it again cannot change) is not an
outage: it is sent again at once without the original's headers, then without its key and
value (``lookalike.send_refused`` says why), so the batch still commits.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka import errors as Errors
from kafka.consumer.fetcher import ConsumerRecord

from schema.errors import ItemFailure

log = logging.getLogger(__name__)

MAX_DETAIL_BYTES = 4096
MAX_REQUEST_BYTES = 1024 * 1024
"""The producer's ``max_request_size`` (kafka-python's and the brokers' usual default)."""
MAX_PAYLOAD_BYTES = 512 * 1024
"""Larger values are cut to ``TRUNCATED_BYTES``; headers and key fit the remaining half."""
TRUNCATED_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024
MAX_COPIED_HEADER_BYTES = 64 * 1024
"""The original record's own headers are copied up to this size in total."""

REFUSED = (
    TypeError, ValueError, AssertionError,  # KafkaProducer.send checking the record it builds
    Errors.MessageSizeTooLargeError, Errors.RecordListTooLargeError,
    Errors.CorruptRecordError, Errors.InvalidRecordError,  # the broker refusing the record
)
"""Refusals of a letter for what it contains: sending it again unchanged cannot succeed
(a header KafkaProducer will not encode: "All headers items must be (str, bytes) tuples"), so
they must not be waited out as an outage would be: the letter is sent again, plainer."""


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` refuses the letter itself (:data:`REFUSED`) rather than the moment."""
    if isinstance(exc, ValueError) and "did not assign a partition" in str(exc):
        return False  # the topic missing from the producer's metadata (a broker restart)
    return isinstance(exc, REFUSED)


class DeadLetterError(Exception):
    """The dead-letter topic did not acknowledge; the batch must not be committed."""


class DeadLetterRefusedError(RuntimeError):
    """Even the plainest letter (only lookalike's own headers) was refused: a bug, not an
    outage (:func:`ingest.outage.is_outage` is false), so ingest stops instead of waiting."""


Headers = list[tuple[str, bytes]]

FULL, NO_HEADERS, NO_CONTENT = range(3)
"""How much of the original a letter carries: everything (cut to fit); all but the
original's own headers; none of its key, value or headers (sizes and digests only)."""


@dataclass
class _Letter:
    record: ConsumerRecord
    failure: ItemFailure
    failed_at_ms: int
    level: int = FULL
    refused: str = ""
    """Why the producer or the broker refused the fuller letter(s) before this one."""
    future: Any = None  # kafka-python's FutureRecordMetadata

    def plainer(self, exc: BaseException) -> None:
        """After a refusal: carry less of the original, or raise if nothing is left to drop."""
        why = f"{type(exc).__name__}: {exc}"
        if self.level == NO_CONTENT:
            raise DeadLetterRefusedError(
                f"dead letter for {_source(self.record)} refused with only lookalike headers: "
                f"{why}"
            ) from exc
        self.level += 1
        self.refused = f"{self.refused}; {why}" if self.refused else why
        self.future = None
        log.warning("dead letter for %s refused (%s); sending it %s", _source(self.record),
                    why[:300], "without the original's headers" if self.level == NO_HEADERS
                    else "without the original's key, value and headers")

    def content(self) -> tuple[bytes | None, bytes | None, Headers]:
        """Key, value and headers to send, at this letter's level."""
        record = self.record
        failure = self.failure
        headers: Headers = [
            ("lookalike.reason", failure.reason.value.encode()),
            ("lookalike.detail", failure.detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
            ("lookalike.source", _source(record).encode()),
            ("lookalike.failed_at_ms", str(self.failed_at_ms).encode()),
        ]
        if self.level == NO_CONTENT:
            value, value_headers = _fit(_bytes(record.value), 0, 0, "lookalike.original")
            key, key_headers = _fit(_bytes(record.key), 0, 0, "lookalike.original_key")
            key, value = None, b""  # the producer sends no record with neither
        else:
            value, value_headers = _fit(
                _bytes(record.value), MAX_PAYLOAD_BYTES, TRUNCATED_BYTES, "lookalike.original"
            )
            key, key_headers = _fit(
                _bytes(record.key), MAX_KEY_BYTES, MAX_KEY_BYTES, "lookalike.original_key"
            )
            if key is None and value is None:  # a tombstone without a key
                value = b""
        headers += value_headers + key_headers
        if self.level == FULL:
            headers += _copied_headers(record.headers or [])
        else:
            headers.append(("lookalike.headers_dropped", b"1"))
            headers.append(("lookalike.send_refused",
                            self.refused.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]))
        return key, value, headers


def _source(record: ConsumerRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _fit(value: bytes | None, limit: int, keep: int, prefix: str) -> tuple[bytes | None, Headers]:
    """``value``, or its first ``keep`` bytes plus headers saying what was cut."""
    if value is None or len(value) <= limit:
        return value, []
    return value[:keep], [
        (f"{prefix}_size", str(len(value)).encode()),
        (f"{prefix}_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


def _copied_headers(original: list[tuple[Any, Any]]) -> Headers:
    """The original record's headers, as the producer accepts them: a null value (which
    Java and librdkafka clients send) goes as ``b""`` and is counted in
    ``lookalike.null_headers``; a key that is not text (or not encodable) with its odd bytes
    backslash-escaped. At most ``MAX_COPIED_HEADER_BYTES``, then ``lookalike.headers_dropped``."""
    headers: Headers = []
    copied = nulls = 0
    for k, v in original:
        key = k if isinstance(k, str) else bytes(k).decode("utf-8", "backslashreplace")
        key = key.encode("utf-8", "backslashreplace").decode()  # lone surrogates
        value = b"" if v is None else bytes(v)
        copied += len(key.encode()) + len(value)
        if copied > MAX_COPIED_HEADER_BYTES:
            headers.append(("lookalike.headers_dropped", b"1"))
            break
        if not key.startswith("lookalike."):
            headers.append((key, value))
            nulls += v is None
    if nulls:
        headers.append(("lookalike.null_headers", str(nulls).encode()))
    return headers


class DeadLetterQueue:
    def __init__(self, producer: KafkaProducer, topic: str, *, flush_timeout_s: float = 30.0):
        self._producer = producer
        self._topic = topic
        self._flush_timeout_s = flush_timeout_s
        self._pending: list[_Letter] = []

    @property
    def topic(self) -> str:
        return self._topic

    def send(self, record: ConsumerRecord, failure: ItemFailure) -> None:
        letter = _Letter(record, failure, int(time.time() * 1000))
        self._send(letter)
        self._pending.append(letter)

    def _send(self, letter: _Letter) -> None:
        while True:
            try:
                key, value, headers = letter.content()
                letter.future = self._producer.send(
                    self._topic, key=key, value=value, headers=headers
                )
                return
            except Exception as exc:
                if refused(exc):  # never sendable as it is: plainer, at once
                    letter.plainer(exc)
                    continue
                letter.future = None  # e.g. no metadata during an outage: the next flush
                return

    def flush(self) -> int:
        """Wait until every pending send is acknowledged; raise DeadLetterError otherwise.
        Unacknowledged letters stay pending and are sent again by the next call. A letter
        the broker refused for its content is sent again plainer within this call."""
        if not self._pending:
            return 0
        again = True
        while again:  # each round makes a refused letter plainer, or raises: it ends
            again, failed, error = self._flush_round()
        done = len(self._pending) - len(failed)
        self._pending = failed
        if failed:
            raise DeadLetterError(
                f"dead-letter topic {self._topic}: {len(failed)} unacknowledged: {error}"
            ) from error
        return done

    def _flush_round(self) -> tuple[bool, list[_Letter], BaseException | None]:
        for letter in self._pending:
            if letter.future is None:
                self._send(letter)
        failed: list[_Letter] = []
        again = False
        error: BaseException | None = None
        try:
            self._producer.flush(timeout=self._flush_timeout_s)
        except Exception as exc:
            error = exc
        for letter in self._pending:
            try:
                if letter.future is None:
                    raise DeadLetterError("not sent")
                letter.future.get(timeout=self._flush_timeout_s if error is None else 0.001)
            except Exception as exc:
                if refused(exc):
                    letter.plainer(exc)
                    again = True
                    continue
                letter.future = None
                failed.append(letter)
                error = error or exc
        return again, failed, error


def build_producer(bootstrap_servers: str, client_id: str, **extra: Any) -> KafkaProducer:
    """A producer that waits for the broker's acknowledgement of every record; ``send``
    blocks at most 10 s for metadata during an outage (the flush is then retried).
    ``extra``: more KafkaProducer settings (the wiring passes its bootstrap timeout)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        acks="all",
        retries=5,
        linger_ms=5,
        **{"max_request_size": MAX_REQUEST_BYTES, "max_block_ms": 10_000, **extra},
    )
