"""Dead-letter topic: events that cannot be applied go here with their original payload.

The reason travels in headers (``lookalike.reason``, ``lookalike.detail``, and where the event
came from), so the payload stays byte-for-byte what the shop sent and can be replayed once
fixed. Sends are flushed before the batch's offsets are committed.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

MAX_DETAIL_BYTES = 4096


class DeadLetterError(Exception):
    """The dead-letter topic did not acknowledge; the batch must not be committed."""


class DeadLetterQueue:
    def __init__(self, producer: KafkaProducer, topic: str, *, flush_timeout_s: float = 30.0):
        self._producer = producer
        self._topic = topic
        self._flush_timeout_s = flush_timeout_s
        self._pending: list[Any] = []  # kafka-python's FutureRecordMetadata

    @property
    def topic(self) -> str:
        return self._topic

    def send(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        headers = [
            ("lookalike.reason", reason.encode()),
            ("lookalike.detail", detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
            ("lookalike.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ("lookalike.failed_at_ms", str(int(time.time() * 1000)).encode()),
        ]
        headers.extend((k, v) for k, v in (record.headers or []) if not k.startswith("lookalike."))
        self._pending.append(
            self._producer.send(self._topic, key=record.key, value=record.value, headers=headers)
        )

    def flush(self) -> int:
        """Wait until every pending send is acknowledged; raise DeadLetterError otherwise."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=self._flush_timeout_s)
            for future in pending:
                future.get(timeout=self._flush_timeout_s)
        except Exception as exc:
            raise DeadLetterError(f"dead-letter topic {self._topic}: {exc}") from exc
        return len(pending)


def build_producer(bootstrap_servers: str, client_id: str, **extra: Any) -> KafkaProducer:
    """A producer that waits for the broker's acknowledgement of every record; ``extra``:
    more KafkaProducer settings (the wiring passes its bootstrap timeout)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        acks="all",
        retries=5,
        linger_ms=5,
        **extra,
    )
