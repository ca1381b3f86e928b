"""The source's commits (fast: a fake consumer, no broker).

A commit refused by a rebalance or an outage leaves its offsets owed. They must land once the
group is stable again even when no later batch brings a new commit: before, the offsets of the
last batches written during a rebalance stayed uncommitted until the next event arrived (the
flaky ``test_second_consumer_joins_mid_stream`` waited for them in vain).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition
from kafka import errors as Errors
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from ingest.fetch import ImageFetcher
from ingest.plan import WritePlan
from ingest.sink import WriteResult
from ingest.source import OWED_RETRY_S, KafkaSource
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import TOPIC, FakeSource, FlakyStore, fake_runner, record

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


def _upserts(folder: Path, n: int) -> list[Any]:
    """``n`` upsert records of products p0.. with one photo each, written to ``folder``."""
    records = []
    for i in range(n):
        write_image(folder / f"p{i}.png", seed=i)
        payload = json.dumps(upsert_payload(f"p{i}", 1, [f"p{i}.png"])).encode()
        records.append(record(i, payload, f"p{i}".encode()))
    return records


def test_the_last_batch_refused_by_a_rebalance_is_committed_once_it_ends(tmp_path: Path) -> None:
    n = 8
    records = _upserts(tmp_path, n)
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
    records = _upserts(tmp_path, n)
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


class PositionedConsumer(FakeConsumer):
    """A fetch position and a high-water mark, where ``KafkaSource`` reads them in
    kafka-python (its subscription state, ``highwater()``); 2 records per poll."""

    def __init__(self, records: list[ConsumerRecord], high: int) -> None:
        super().__init__(records)
        self._all = records
        self.high = high
        self.position = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        out = self._all[self.position : self.position + min(max_records, 2)]
        self.position += len(out)
        if not out:
            time.sleep(timeout_ms / 1000)
        return {TP: out} if out else {}

    def highwater(self, tp: TopicPartition) -> int:
        return self.high

    @property
    def _subscription(self) -> Any:  # TopicPartition -> TopicPartitionState.position.offset
        return SimpleNamespace(assignment={
            TP: SimpleNamespace(position=SimpleNamespace(offset=self.position))})


def test_lag_counts_from_the_commit_and_grows_while_the_pipeline_stalls(tmp_path: Path) -> None:
    """``lookalike_ingest_consumer_lag_events`` read 0 while events waited unwritten: it was
    set only when a batch committed, from the read position. Now it is high-water minus the
    committed offset, handed to ``on_lag`` every few turns of the loop, commit or not."""
    n = 8
    records = _upserts(tmp_path, n)
    consumer = PositionedConsumer(records, high=n)
    source = KafkaSource(consumer, TOPIC)
    store = FlakyStore()
    store.down.set()  # Milvus away: every batch waits in the write stage, nothing commits
    seen: list[int | None] = []
    with ThreadPoolExecutor(4) as pool:
        runner, _ = fake_runner(ImageFetcher([tmp_path]), store, source, pool)
        runner.on_lag = lambda lag: seen.append(lag.get(TP))
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while consumer.position < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.6)  # one more lag turn with everything read
        assert consumer.position == n and consumer.committed == {}
        assert source.lag() == {TP: 0}, "everything was read..."
        assert seen[-1] == n, "...and nothing committed: all of it is behind"
        store.down.clear()
        while consumer.committed.get(TP) != n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.6)
        runner.stop("test")
        thread.join(10)
    assert consumer.committed == {TP: n} and seen[-1] == 0
    consumer.high = n + 5  # five more published, not fetched yet
    assert source.behind() == {TP: 5}
    source.forget([TP])  # revoked: what it knew of the commit goes; the position stands in
    assert source.behind() == {TP: 5}


class CountingStore(FlakyStore):
    """Answers each write as the sink does: a ``WriteResult`` with the rows rewritten by the
    plan's price changes (one per product here) and deleted with its delisted products."""

    def apply(self, plan: WritePlan) -> WriteResult:
        super().apply(plan)
        return WriteResult(upserted=len(plan.upserts), repriced=len(plan.price_updates),
                           deleted=len(plan.delete_products))


def test_the_batch_line_counts_rows_rewritten_and_deleted_and_names_dead_letters(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only upserted rows were counted (``rows=``): price rewrites and deletes were not; and a
    dead letter's line named its offset but not its partition."""
    payloads: list[tuple[bytes, bytes]] = []
    for i in range(2):
        write_image(tmp_path / f"p{i}.png", seed=i)
        payloads.append((f"p{i}".encode(),
                         json.dumps(upsert_payload(f"p{i}", 1, [f"p{i}.png"])).encode()))
    payloads += [
        (b"p0", json.dumps({"type": "product.price_changed", "product_id": "p0", "version": 2,
                            "price": 1.5, "currency": "USD"}).encode()),
        (b"p1", json.dumps({"type": "product.delisted", "product_id": "p1",
                            "version": 2}).encode()),
        (b"p9", b'{"type": "product.upserted", '),
    ]
    source = FakeSource([record(i, value, key) for i, (key, value) in enumerate(payloads)])
    with ThreadPoolExecutor(2) as pool, caplog.at_level(logging.INFO):
        runner, _ = fake_runner(ImageFetcher([tmp_path]), CountingStore(), source, pool)
        runner._config = replace(runner._config, batch_events=2)  # upserts, then the rest
        report = runner.run(until_caught_up=True)
    lines = [r.getMessage() for r in caplog.records]
    batches = [ln for ln in lines if ln.startswith("batch=")]
    assert " rows=2 rewritten=0 deleted=0 " in batches[0]
    assert " rows=0 rewritten=1 deleted=1 " in batches[1]
    assert (report.totals.rows_upserted, report.totals.rows_rewritten,
            report.totals.rows_deleted) == (2, 1, 1)
    assert any(ln.startswith(f"dead-lettered record={TOPIC}-0@4 reason=malformed_json")
               for ln in lines)
