"""The source's consumer against the real broker: asking for the lag, leaving the group.

``KafkaConsumer.position(tp)`` re-validates every assigned partition before it answers, so a
lag asked partition by partition cost O(n^2): 1.3 s per call at 1,000 partitions, hours at the
100,000 ``LOOKALIKE_KAFKA__PARTITIONS`` once allowed, with the poll loop and SIGTERM waiting.

Tansu holds a group join for half the session timeout and answers a LeaveGroup sent meanwhile
only after it, so a consumer stopped while it joined waited that long to close (kafka-python
gives up after 30 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from pymilvus import MilvusClient

from ingest.source import KafkaSource, build_consumer
from ingest.topics import ensure_topics
from lookalike.app import build_runner
from schema.collection import CollectionSpec
from store import MilvusStore, ensure_collections
from tests.fakes import TinyEmbedder
from tests.pipeline_support import committed_and_end, make_settings, send, upsert_payload

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


def test_a_stop_while_the_consumer_joins_returns_promptly_and_keeps_the_commits(
        bootstrap: str, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A session timeout of 120 s: Tansu holds the group's first join for 60 s, and closing
    the consumer stopped meanwhile waited 30 s, kafka-python's request timeout."""
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [])
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"session_timeout_ms": 120_000})})
    k = settings.kafka
    ensure_topics(bootstrap, {k.topic: k.partitions})
    send(bootstrap, k.topic, [upsert_payload(f"p{i}", 1, ["x.png"]) for i in range(4)])
    earlier = KafkaConsumer(bootstrap_servers=bootstrap, group_id=k.group_id,
                            enable_auto_commit=False)  # an earlier run's commit, without a join
    earlier.assign([TopicPartition(k.topic, 0)])
    earlier.commit({TopicPartition(k.topic, 0): OffsetAndMetadata(1, "", -1)})
    earlier.close()
    committed = committed_and_end(bootstrap, settings)
    assert committed[0][0] == 1

    store = MilvusStore(MilvusClient(str(tmp_path / "m.db")))
    spec = CollectionSpec(name=settings.milvus.collection, dim=TinyEmbedder().dim)
    ensure_collections(store, spec)
    assigned: list[set[TopicPartition]] = []
    with ThreadPoolExecutor(2) as pool, caplog.at_level(logging.INFO):
        runner = build_runner(settings, TinyEmbedder(), store, spec, pool)
        runner._source.on_assigned = assigned.append
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        time.sleep(1.0)  # polling: the join is in flight (Tansu answers it after 60 s)
        runner.stop("test")
        stopped = time.monotonic()
        thread.join(60)
        took = time.monotonic() - stopped
    assert not thread.is_alive() and runner.report.stopped_by == "test"
    assert assigned == [], "stopped while it joined"
    assert took < 20, f"the stop took {took:.1f}s"
    assert "left the consumer group without waiting" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert committed_and_end(bootstrap, settings) == committed
