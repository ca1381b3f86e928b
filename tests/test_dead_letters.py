"""Nothing a record contains can escape as an exception, and every dead letter fits.

Other clients send what kafka-python's producer refuses to: Java and librdkafka send header
values that are null, librdkafka header keys that are not UTF-8. The tests at the end publish
such records on the real broker (kafka-python's record builder patched to write them) and run
ingest over them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka import errors as Errors
from kafka.consumer.fetcher import ConsumerRecord
from kafka.record import default_records
from pymilvus import MilvusClient

from ingest.dlq import MAX_REQUEST_BYTES, DeadLetterError, DeadLetterQueue
from ingest.stages import parse_records
from lookalike.app import create_topics
from schema.errors import ItemFailure, Reason
from tests.fakes import TinyEmbedder
from tests.pipeline_support import (
    committed_and_end,
    make_settings,
    read_topic,
    rows,
    run_until_caught_up,
    upsert_payload,
    write_image,
)


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
    """Enforces kafka-python's header types and record size check like the real producer."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_first = fail_first

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]]) -> Any:
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers):
            raise TypeError("All headers items must be (str, bytes) tuples")
        if key is None and value is None:
            raise ValueError("Need at least one: key or value")
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


def test_null_header_values_are_sent_empty_and_counted() -> None:
    """Before, a header value of None went into the letter as it was; KafkaProducer.send
    refused it, the refusal was taken for an outage, and every flush failed: ingest waited
    out its outage budget, exited, and met the record again after the restart."""
    producer = Producer()
    dlq = DeadLetterQueue(producer, "dlq")
    headers: Any = [("trace", None), ("tenant", b"t1"), ("span", None)]
    dlq.send(record(b"not json", headers=headers), ItemFailure(Reason.MALFORMED_JSON, "x"))
    assert dlq.flush() == 1
    sent = producer.sent[0]["headers"]
    assert (sent["trace"], sent["tenant"], sent["span"]) == (b"", b"t1", b"")
    assert sent["lookalike.null_headers"] == b"2"
    assert "lookalike.send_refused" not in sent


class RefusingProducer(Producer):
    """Refuses every letter that still carries the original's headers, or any key or value,
    as kafka-python refuses a record it cannot build."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse
        self.refused = 0

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]]) -> Any:
        names = {k for k, _ in headers}
        if "h" in names or (self.refuse == "content" and value):
            self.refused += 1
            raise TypeError("cannot build this record")
        return super().send(topic, key, value, headers)


@pytest.mark.parametrize("refuse", ["headers", "content"])
def test_a_letter_the_producer_refuses_is_sent_plainer_not_waited_for(refuse: str) -> None:
    producer = RefusingProducer(refuse)
    dlq = DeadLetterQueue(producer, "dlq")
    dlq.send(record(b"payload", headers=[("h", b"v")]), ItemFailure(Reason.MALFORMED_JSON, "x"))
    assert dlq.flush() == 1, "not an outage: the first flush sends it"
    sent = producer.sent[0]
    assert sent["headers"]["lookalike.headers_dropped"] == b"1"
    assert b"TypeError: cannot build this record" in sent["headers"]["lookalike.send_refused"]
    assert sent["headers"]["lookalike.source"] == b"t/0/0"
    if refuse == "content":
        assert (sent["key"], sent["value"]) == (None, b"")
        digest = hashlib.sha256(b"payload").hexdigest().encode()
        assert sent["headers"]["lookalike.original_sha256"] == digest
        assert producer.refused == 2
    else:
        assert (sent["key"], sent["value"]) == (b"p1", b"payload") and producer.refused == 1


def test_a_letter_the_broker_refuses_is_sent_plainer_within_the_flush() -> None:
    class Refused:
        def get(self, timeout: float | None = None) -> None:
            raise Errors.MessageSizeTooLargeError("too large for this broker")

    class BrokerRefuses(Producer):
        """Acknowledges only letters without the original's header ``h``."""

        def send(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]]) -> Any:
            future = super().send(topic, key, value, headers)
            return Refused() if "h" in dict(headers) else future

    producer = BrokerRefuses()
    dlq = DeadLetterQueue(producer, "dlq")
    dlq.send(record(b"payload", headers=[("h", b"v")]), ItemFailure(Reason.MALFORMED_JSON, "x"))
    assert dlq.flush() == 1
    refused, sent = producer.sent
    assert "h" in refused["headers"] and "h" not in sent["headers"]
    assert sent["value"] == b"payload" and b"too large" in sent["headers"]["lookalike.send_refused"]


def test_a_tombstone_without_key_is_sent_with_an_empty_value() -> None:
    producer = Producer()
    dlq = DeadLetterQueue(producer, "dlq")
    dlq.send(record(None, key=None), ItemFailure(Reason.MALFORMED_JSON, "tombstone"))
    assert dlq.flush() == 1 and producer.sent[0]["value"] == b""


# -- records other clients send, on the real broker ------------------------------------------

NULL = b"<null>"
"""A header value the patched record builder writes as null."""
NOT_UTF8 = "<not utf-8>"
"""A header key the patched record builder writes as the bytes ``\\xff\\xfe``."""


class _RawKey(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return b"\xff\xfe"


@pytest.fixture
def foreign_producer(bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaProducer]:
    """A producer that writes the headers Java and librdkafka clients may send (kafka-python's
    own ``send`` refuses them): ``NULL`` values as null, the key ``NOT_UTF8`` as raw bytes.
    Records sent before a flush go in one record batch (``linger_ms``)."""
    append = default_records.DefaultRecordBatchBuilder.append

    def foreign(self: Any, offset: int, timestamp: int, key: Any, value: Any,
                headers: list[tuple[str, bytes]], *args: Any, **kwargs: Any) -> Any:
        headers = [(_RawKey(k) if k == NOT_UTF8 else k, None if v == NULL else v)
                   for k, v in headers]
        return append(self, offset, timestamp, key, value, headers, *args, **kwargs)

    monkeypatch.setattr(default_records.DefaultRecordBatchBuilder, "append", foreign)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    yield producer
    producer.close()


def _publish(producer: KafkaProducer, topic: str,
             messages: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> None:
    """One record batch on partition 0 (whatever the key: all in one batch)."""
    futures = [producer.send(topic, key=key.encode(), value=value, headers=headers,
                             partition=0) for key, value, headers in messages]
    producer.flush()
    for future in futures:
        future.get(timeout=10)


def _upsert(pid: str) -> bytes:
    return json.dumps(upsert_payload(pid, 1, ["ok.png"])).encode()


@pytest.mark.kafka
def test_null_header_values_do_not_block_the_dead_letter_topic(
        bootstrap: str, unique: str, tmp_path: Path, foreign_producer: KafkaProducer) -> None:
    """Before, the dead letter of `not json` with a null header was never sent: ingest logged
    "dead-letter topic unavailable" until its outage budget ran out, then exited 1, and nothing
    after the record was committed."""
    write_image(tmp_path / "ok.png", seed=1)
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [tmp_path],
                             outage_budget_s=3.0)
    topic = settings.kafka.topic
    create_topics(settings)
    _publish(foreign_producer, topic, [
        ("h-null", b"not json", [("trace", NULL)]),
        ("ok-1", _upsert("ok-1"), [("trace", NULL)]),
        ("ok-2", _upsert("ok-2"), []),
    ])
    client = MilvusClient(str(tmp_path / "m.db"))
    report = run_until_caught_up(settings, TinyEmbedder(), client)

    assert (report.totals.applied, report.totals.dead_lettered) == (2, 1)
    assert {r["product_id"] for r in rows(client, settings, fields=["product_id"])} == {
        "ok-1", "ok-2"}
    [dead] = read_topic(bootstrap, settings.kafka.dlq_topic, expected=1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"h-null", b"not json")
    assert headers["lookalike.reason"] == b"malformed_json"
    assert (headers["trace"], headers["lookalike.null_headers"]) == (b"", b"1")
    assert all(committed == end for committed, end in committed_and_end(
        bootstrap, settings).values())


@pytest.mark.kafka
def test_a_record_kafka_python_cannot_decode_is_dead_lettered_and_the_partition_goes_on(
        bootstrap: str, unique: str, tmp_path: Path, foreign_producer: KafkaProducer) -> None:
    """A header key that is not UTF-8 made kafka-python raise CorruptRecordError out of
    poll(): ingest exited 4 ("try again later"), the restart met it again, and the valid
    record before it in the same fetch was never applied. Now the record is dead-lettered
    (``corrupt_record``, its original key and value), and the records around it, in its
    record batch and after, are indexed."""
    write_image(tmp_path / "ok.png", seed=1)
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [tmp_path],
                             batch_events=2, outage_budget_s=3.0)
    topic = settings.kafka.topic
    create_topics(settings)
    _publish(foreign_producer, topic, [  # one batch: the bad records between good ones
        ("ok-a", _upsert("ok-a"), []),
        ("bad-1", _upsert("bad-1"), [(NOT_UTF8, b"v"), ("keep", b"k")]),
        ("ok-b", _upsert("ok-b"), []),
        ("bad-2", b"not json either", [(NOT_UTF8, NULL)]),
        ("ok-c", _upsert("ok-c"), [("trace", NULL)]),
    ])
    _publish(foreign_producer, topic, [("bad-3", _upsert("bad-3"), [(NOT_UTF8, b"")])])
    _publish(foreign_producer, topic, [("ok-d", _upsert("ok-d"), [])])
    client = MilvusClient(str(tmp_path / "m.db"))
    report = run_until_caught_up(settings, TinyEmbedder(), client)

    assert {r["product_id"] for r in rows(client, settings, fields=["product_id"])} == {
        "ok-a", "ok-b", "ok-c", "ok-d"}
    assert (report.totals.events, report.totals.applied, report.totals.dead_lettered) == (
        7, 4, 3)
    dead = sorted(read_topic(bootstrap, settings.kafka.dlq_topic, expected=3),
                  key=lambda d: d.key)
    assert [d.key for d in dead] == [b"bad-1", b"bad-2", b"bad-3"]
    assert [d.value for d in dead] == [_upsert("bad-1"), b"not json either", _upsert("bad-3")]
    for d, offset in zip(dead, (1, 3, 5), strict=True):
        headers = dict(d.headers)
        assert headers["lookalike.reason"] == b"corrupt_record"
        assert headers["lookalike.source"] == f"{topic}/0/{offset}".encode()
        assert b"header key '\\xff\\xfe' is not UTF-8" in headers["lookalike.detail"]
        assert "\\xff\\xfe" in headers, "the key, its odd bytes escaped"
    assert dict(dead[0].headers)["keep"] == b"k"
    assert all(committed == end for committed, end in committed_and_end(
        bootstrap, settings).values())
