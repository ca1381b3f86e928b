"""The source's commits (fast: a fake consumer, no broker).

A commit refused by a rebalance or an outage leaves its offsets owed. They must land once the
group is stable again even when no later batch brings a new commit: before, the offsets of the
last batches written during a rebalance stayed uncommitted until the next event arrived (the
flaky ``test_second_consumer_joins_mid_stream`` waited for them in vain).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from kafka import errors as Errors
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from ingest.fetch import ImageFetcher
from ingest.source import OWED_RETRY_S, KafkaSource
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import TOPIC, FlakyStore, fake_runner, record

TP = TopicPartition(TOPIC, 0)


class FakeConsumer:
    """One partition; ``commit`` is refused (RebalanceInProgressError) while ``rebalancing``."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self._records = records
        self.rebalancing = threading.Event()
        self.committed: dict[TopicPartition, int] = {}
        self.commit_calls = 0

    def subscribe(self, topics: list[str], listener: Any) -> None:
        listener.on_partitions_assigned([TP])

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        out, self._records = self._records[:max_records], self._records[max_records:]
        if not out:
            time.sleep(timeout_ms / 1000)
        return {TP: out} if out else {}

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], timeout_ms: int) -> None:
        self.commit_calls += 1
        if self.rebalancing.is_set():
            raise Errors.RebalanceInProgressError()
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    def paused(self) -> set[TopicPartition]:
        return set()

    def close(self, autocommit: bool, timeout_ms: int | None = None) -> None:
        pass


def test_owed_offsets_are_retried_after_the_delay_without_a_new_commit() -> None:
    now = [100.0]
    consumer = FakeConsumer([])
    source = KafkaSource(consumer, TOPIC, clock=lambda: now[0])
    consumer.rebalancing.set()
    assert source.commit({TP: 8}) is False
    consumer.rebalancing.clear()
    assert source.commit_owed() is False, "not before the retry delay"
    assert consumer.commit_calls == 1 and consumer.committed == {}
    now[0] += OWED_RETRY_S
    assert source.commit_owed() is True
    assert consumer.committed == {TP: 8}
    assert source.commit_owed() is True and consumer.commit_calls == 2, "nothing owed any more"


def test_the_last_batch_refused_by_a_rebalance_is_committed_once_it_ends(tmp_path: Path) -> None:
    n = 8
    records = []
    for i in range(n):
        write_image(tmp_path / f"p{i}.png", seed=i)
        payload = json.dumps(upsert_payload(f"p{i}", 1, [f"p{i}.png"])).encode()
        records.append(record(i, payload, f"p{i}".encode()))
    consumer = FakeConsumer(records)
    consumer.rebalancing.set()  # every batch is written while the group rebalances
    source = KafkaSource(consumer, TOPIC)
    store = FlakyStore()
    with ThreadPoolExecutor(4) as pool:
        runner, _ = fake_runner(ImageFetcher([tmp_path]), store, source, pool)
        thread = threading.Thread(target=runner.run, daemon=True)  # continuous, as in service
        thread.start()
        deadline = time.monotonic() + 30
        while runner.report.batches < n // 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.report.batches == n // 4 and consumer.committed == {}
        consumer.rebalancing.clear()  # the rebalance ends; no event follows
        while consumer.committed.get(TP) != n and time.monotonic() < deadline:
            time.sleep(0.02)
        runner.stop("test")
        thread.join(10)
    assert consumer.committed == {TP: n}, "the owed offsets landed without a new batch"
    assert runner.report.batches == n // 4 and len(store.states) == n


class HandBackConsumer(FakeConsumer):
    """A fetch position, as kafka-python keeps it; once, after the records up to ``hand_back_at``
    were handed out, a rebalance revokes the partition and assigns it straight back (an eager
    rejoin keeps the partition's state, so the position stays past what was polled)."""

    def __init__(self, records: list[ConsumerRecord], hand_back_at: int) -> None:
        super().__init__(records)
        self._all = records
        self.position = 0
        self._hand_back_at = hand_back_at
        self._listener: Any = None
        self.seeks: list[int] = []

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._listener = listener
        listener.on_partitions_assigned([TP])

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.position == self._hand_back_at and self._listener is not None:
            listener, self._listener = self._listener, None
            listener.on_partitions_revoked([TP])
            listener.on_partitions_assigned([TP])
            return {}
        out = self._all[self.position : self.position + min(max_records, 2)]
        self.position += len(out)
        if not out:
            time.sleep(timeout_ms / 1000)
        return {TP: out} if out else {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset


def test_records_dropped_at_a_revoke_are_read_again_when_the_partition_comes_back(
    tmp_path: Path,
) -> None:
    """The flaky ``test_a_frozen_broker_is_waited_out`` (committed 12 of 17 after the run):
    records polled but not yet batched were dropped when the partition was revoked, and the
    rejoin handed it straight back with its position past them; the run then ended caught up
    without them."""
    n = 12  # three full batches once the two dropped records are read again
    records = []
    for i in range(n):
        write_image(tmp_path / f"p{i}.png", seed=i)
        payload = json.dumps(upsert_payload(f"p{i}", 1, [f"p{i}.png"])).encode()
        records.append(record(i, payload, f"p{i}".encode()))
    consumer = HandBackConsumer(records, hand_back_at=6)  # 4 batched, 2 pending at the revoke
    source = KafkaSource(consumer, TOPIC)
    store = FlakyStore()
    with ThreadPoolExecutor(4) as pool:
        runner, _ = fake_runner(ImageFetcher([tmp_path]), store, source, pool)
        runner._config = replace(runner._config, batch_timeout_s=30.0)  # the 2 stay pending
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while consumer.committed.get(TP) != n and time.monotonic() < deadline:
            time.sleep(0.02)
        runner.stop("test")
        thread.join(10)
    # from the first record dropped (4), or from the first of the batch in flight at the
    # revoke (0): the write stage drops a revoked partition's items too (test_ingest_handoff)
    assert consumer.seeks in ([0], [4]), "read again from the first record not written"
    assert consumer.committed == {TP: n}
    assert set(store.states) == {f"p{i}" for i in range(n)}
