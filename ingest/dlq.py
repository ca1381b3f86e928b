"""Dead-letter topic: events that cannot be applied go here with their original payload.

The reason travels in headers (``lookalike.reason``, ``lookalike.detail``, and where the event
came from), so the payload stays byte-for-byte what the shop sent and can be replayed once
fixed. Sends are flushed before the batch's offsets are committed.

A dead letter must never fail its batch, or the poison message would block its partition
for good. So a payload (or key) too big for the producer's request limit is cut to a prefix,
and the headers ``lookalike.original_size`` and ``lookalike.original_sha256`` say what it
was; a send the broker did not acknowledge (an outage) is sent again on the next ``flush``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from schema.errors import ItemFailure

MAX_DETAIL_BYTES = 4096
MAX_REQUEST_BYTES = 1024 * 1024
"""The producer's ``max_request_size`` (kafka-python's and the brokers' usual default)."""
MAX_PAYLOAD_BYTES = 512 * 1024
"""Larger values are cut to ``TRUNCATED_BYTES``; headers and key fit the remaining half."""
TRUNCATED_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024
MAX_COPIED_HEADER_BYTES = 64 * 1024
"""The original record's own headers are copied up to this size in total."""


class DeadLetterError(Exception):
    """The dead-letter topic did not acknowledge; the batch must not be committed."""


Headers = list[tuple[str, bytes]]


@dataclass
class _Letter:
    key: bytes | None
    value: bytes | None
    headers: Headers
    future: Any = None  # kafka-python's FutureRecordMetadata


def _fit(value: bytes | None, limit: int, keep: int, prefix: str) -> tuple[bytes | None, Headers]:
    """``value``, or its first ``keep`` bytes plus headers saying what was cut."""
    if value is None or len(value) <= limit:
        return value, []
    return value[:keep], [
        (f"{prefix}_size", str(len(value)).encode()),
        (f"{prefix}_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


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
        value, value_headers = _fit(
            record.value, MAX_PAYLOAD_BYTES, TRUNCATED_BYTES, "lookalike.original"
        )
        key, key_headers = _fit(record.key, MAX_KEY_BYTES, MAX_KEY_BYTES, "lookalike.original_key")
        headers = [
            ("lookalike.reason", failure.reason.value.encode()),
            ("lookalike.detail", failure.detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
            ("lookalike.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ("lookalike.failed_at_ms", str(int(time.time() * 1000)).encode()),
            *value_headers,
            *key_headers,
        ]
        copied = 0
        for k, v in record.headers or []:
            copied += len(k) + len(v or b"")
            if copied > MAX_COPIED_HEADER_BYTES:
                headers.append(("lookalike.headers_dropped", b"1"))
                break
            if not k.startswith("lookalike."):
                headers.append((k, v))
        letter = _Letter(key, value, headers)
        self._send(letter)
        self._pending.append(letter)

    def _send(self, letter: _Letter) -> None:
        try:
            letter.future = self._producer.send(
                self._topic, key=letter.key, value=letter.value, headers=letter.headers
            )
        except Exception:  # e.g. no metadata during an outage: the next flush sends it
            letter.future = None

    def flush(self) -> int:
        """Wait until every pending send is acknowledged; raise DeadLetterError otherwise.
        Unacknowledged letters stay pending and are sent again by the next call."""
        if not self._pending:
            return 0
        for letter in self._pending:
            if letter.future is None:
                self._send(letter)
        failed: list[_Letter] = []
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
                letter.future = None
                failed.append(letter)
                error = error or exc
        done = len(self._pending) - len(failed)
        self._pending = failed
        if failed:
            raise DeadLetterError(
                f"dead-letter topic {self._topic}: {len(failed)} unacknowledged: {error}"
            ) from error
        return done


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
