"""Nothing a record contains can escape as an exception, and every dead letter fits."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from ingest.dlq import MAX_REQUEST_BYTES, DeadLetterError, DeadLetterQueue
from ingest.stages import parse_records
from schema.errors import ItemFailure, Reason
from tests.pipeline_support import upsert_payload


def record(value: bytes | None, key: bytes | None = b"p1", offset: int = 0,
           headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord("t", 0, -1, offset, 1, 0, key, value, headers or [], None, -1, -1, -1)


def test_a_record_without_key_is_dead_lettered() -> None:
    value = json.dumps(upsert_payload("p1", 1, ["a.jpg"])).encode()
    items, n_images = parse_records([record(value, key=None), record(value, key=b"p1")])
    assert items[0].error is not None and items[0].error.reason is Reason.MISSING_KEY
    assert items[1].event is not None and n_images == 1


def test_an_unexpected_validator_error_is_that_events_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ingest.stages

    def explode(payload: Any) -> Any:
        raise RecursionError("deep inside a validator")

    monkeypatch.setattr(ingest.stages, "parse_event", explode)
    items, _ = parse_records([record(b"{}")])
    assert items[0].error is not None and items[0].error.reason is Reason.INVALID_EVENT


class Producer:
    """Enforces kafka-python's record size check like the real producer does."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_first = fail_first

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]]) -> Any:
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > MAX_REQUEST_BYTES:
            raise AssertionError(f"MessageSizeTooLargeError: {size}")
        self.sent.append({"key": key, "value": value, "headers": dict(headers)})
        producer = self

        class Future:
            def get(self, timeout: float | None = None) -> None:
                if producer.fail_first > 0:
                    producer.fail_first -= 1
                    raise TimeoutError("broker down")

        return Future()

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_oversized_payloads_and_keys_are_cut_with_size_and_digest() -> None:
    producer = Producer()
    dlq = DeadLetterQueue(producer, "dlq")
    value = b"[" * 1_500_000
    key = b"k" * 100_000
    dlq.send(record(value, key=key, headers=[("h", b"x" * 200_000)]),
             ItemFailure(Reason.MESSAGE_TOO_LARGE, "too big"))
    assert dlq.flush() == 1
    sent = producer.sent[0]
    assert len(sent["value"]) < len(value) and value.startswith(sent["value"])
    assert sent["headers"]["lookalike.original_size"] == b"1500000"
    digest = sent["headers"]["lookalike.original_sha256"]
    assert digest == hashlib.sha256(value).hexdigest().encode()
    key_digest = sent["headers"]["lookalike.original_key_sha256"]
    assert key_digest == hashlib.sha256(key).hexdigest().encode()
    assert sent["headers"]["lookalike.reason"] == b"message_too_large"
    assert sent["headers"]["lookalike.headers_dropped"] == b"1"


def test_unacknowledged_letters_are_sent_again() -> None:
    producer = Producer(fail_first=1)
    dlq = DeadLetterQueue(producer, "dlq")
    dlq.send(record(b"x"), ItemFailure(Reason.MALFORMED_JSON, "x"))
    with pytest.raises(DeadLetterError):
        dlq.flush()
    assert dlq.flush() == 1
    assert len(producer.sent) == 2
