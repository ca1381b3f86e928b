"""The source's consumer against the real broker: what it costs to ask for the lag.

``KafkaConsumer.position(tp)`` re-validates every assigned partition before it answers, so a
lag asked partition by partition cost O(n^2): 1.3 s per call at 1,000 partitions, hours at the
100,000 ``LOOKALIKE_KAFKA__PARTITIONS`` once allowed, with the poll loop and SIGTERM waiting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest.source import KafkaSource, build_consumer
from ingest.topics import ensure_topics
from tests.pipeline_support import send, upsert_payload

pytestmark = pytest.mark.kafka

PARTITIONS = 32
EVENTS = 6


@pytest.fixture
def consumer(bootstrap: str, unique: str) -> Iterator[KafkaConsumer]:
    made = build_consumer(bootstrap, f"g-{unique}", "consumer-test", session_timeout_ms=6000,
                          heartbeat_interval_ms=1000, max_poll_records=1)
    try:
        yield made
    finally:
        made.close(autocommit=False, timeout_ms=1000)


def test_the_lag_is_read_in_one_pass_and_matches_the_consumer(
        bootstrap: str, unique: str, consumer: KafkaConsumer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topic = f"lag-{unique}"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    send(bootstrap, topic, [upsert_payload(f"p{i}", 1, ["x.png"]) for i in range(EVENTS)])
    source = KafkaSource(consumer, topic)
    source.subscribe()
    polled = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until a fetch answered for every partition
        polled += len(source.poll(100, 1))
        lags = source.lag()
        if len(lags) == PARTITIONS and None not in lags.values():
            break
    else:
        pytest.fail(f"the lag of {PARTITIONS} partitions not known within 60 s")

    asked: list[TopicPartition] = []
    position = consumer.position

    def counted(tp: TopicPartition, *args: Any, **kwargs: Any) -> int:
        asked.append(tp)
        return int(position(tp, *args, **kwargs))

    monkeypatch.setattr(consumer, "position", counted)
    lags = source.lag()
    assert asked == [], "position() walks every partition: asked per partition it is O(n^2)"
    assert sum(v or 0 for v in lags.values()) == EVENTS - polled  # records not returned yet
    monkeypatch.undo()
    assert lags == {tp: max(0, consumer.highwater(tp) - consumer.position(tp))
                    for tp in consumer.assignment()}

