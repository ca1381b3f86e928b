"""Outages are waited out (fast: a fake source, a flaky in-memory store, a fake producer).

The runner must keep polling while the store is down (so a real consumer keeps its group),
pause consumption, commit nothing that was not written, resume when the store is back, and
exit non-zero only when the outage outlasts its budget.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingest.dlq import DeadLetterQueue
from ingest.fetch import ImageFetcher
from ingest.outage import OutageBudgetExceededError, OutageWait
from ingest.runner import IngestError, Pipeline, Runner, RunnerConfig
from ingest.sink import SinkError, WritePlan
from ingest.source import KafkaSource, Offsets
from ingest.stages import Stages
from schema.records import ProductState
from tests.fakes import TinyEmbedder
from tests.pipeline_support import upsert_payload, write_image

TOPIC = "products"


def record(offset: int, value: bytes, key: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(TOPIC, 0, -1, offset, 1, 0, key, value, [], None, -1, -1, -1)


class FakeSource(KafkaSource):
    """Hands out the records a few at a time; notes polls, pauses and commits."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self._records = records
        self._next = 0
        self._paused = False
        self.polls_while_paused = 0
        self.committed = 0
        self.commits: list[int] = []
        self.on_revoked = lambda _tps: None
        self.on_commit = lambda offset: None

    def subscribe(self) -> None:
        pass

    def poll(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord]:
        if self._paused:
            self.polls_while_paused += 1
            threading.Event().wait(timeout_ms / 1000)
            return []
        out = self._records[self._next : self._next + min(max_records, 4)]
        self._next += len(out)
        if not out:
            threading.Event().wait(timeout_ms / 1000)
        return out

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def commit(self, offsets: Offsets) -> bool:
        offset = offsets[TopicPartition(TOPIC, 0)]
        self.on_commit(offset)
        self.committed = max(self.committed, offset)
        self.commits.append(offset)
        return True

    def caught_up(self) -> bool:
        return self.committed == len(self._records)

    def close(self) -> None:
        pass


class FlakyStore:
    """In memory; while ``down`` is set every call fails like an unreachable Milvus."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.failures = 0
        self.states: dict[str, ProductState] = {}
        self.rows: dict[str, str] = {}
        self.upserts = 0

    def _check(self) -> None:
        if self.down.is_set():
            self.failures += 1
            try:
                raise ConnectionError("milvus: connection refused")
            except ConnectionError as exc:
                raise SinkError("upsert failed after 4 attempt(s)") from exc

    def get_states(self, product_ids: Sequence[str]) -> dict[str, ProductState]:
        self._check()
        return {p: self.states[p] for p in product_ids if p in self.states}

    def apply(self, plan: WritePlan) -> None:
        self._check()
        for r in plan.upserts:
            self.upserts += 1
            self.rows[r.pk] = r.product_id
        for s in plan.states:
            self.states[s.product_id] = s


class Acked:
    def get(self, timeout: float | None = None) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]]) -> Acked:
        self.sent.append((key, value, headers))
        return Acked()

    def flush(self, timeout: float | None = None) -> None:
        pass


def _records(tmp_path: Path, n: int) -> list[ConsumerRecord]:
    out = []
    for i in range(n):
        write_image(tmp_path / f"p{i}.png", seed=i)
        payload = upsert_payload(f"p{i}", 1, [f"p{i}.png"])
        out.append(record(i, json.dumps(payload).encode(), f"p{i}".encode()))
    out.append(record(n, b"{not json", b"junk"))
    return out


def _runner(tmp_path: Path, store: FlakyStore, source: FakeSource, pool: ThreadPoolExecutor,
            budget_s: float) -> tuple[Runner, FakeProducer]:
    producer = FakeProducer()
    stages = Stages(
        ImageFetcher([tmp_path]), TinyEmbedder(), store,
        DeadLetterQueue(producer, "dlq"), pool, max_pixels=10**7,
        outage=OutageWait(budget_s, first_delay_s=0.05, max_delay_s=0.2),
    )
    config = RunnerConfig(batch_events=4, batch_timeout_s=0.05, max_in_flight=2,
                          poll_timeout_ms=20)
    return Runner(source, Pipeline(stages), config), producer


def test_store_outage_is_waited_out_and_nothing_committed_unwritten(tmp_path: Path) -> None:
    store = FlakyStore()
    source = FakeSource(_records(tmp_path, 20))
    unwritten_commits: list[int] = []

    def check_commit(offset: int) -> None:  # every offset below a commit must be written
        written = {int(p[1:]) for p in store.states}
        if any(i not in written for i in range(min(offset, 20))):
            unwritten_commits.append(offset)
        if offset >= 8 and not store.down.is_set() and store.failures == 0:
            store.down.set()  # the store goes away after the first batches
            threading.Timer(1.5, store.down.clear).start()

    source.on_commit = check_commit
    with ThreadPoolExecutor(4) as pool:
        runner, producer = _runner(tmp_path, store, source, pool, budget_s=30)
        report = runner.run(until_caught_up=True)
    assert store.failures > 0, "the outage happened"
    assert source.polls_while_paused > 0, "the loop kept polling while paused"
    assert unwritten_commits == []
    assert source.committed == 21
    assert sorted(store.states) == sorted(f"p{i}" for i in range(20))
    assert len(store.rows) == 20
    assert report.totals.applied == 20 and report.totals.dead_lettered == 1
    assert [h for h in producer.sent[0][2] if h[0] == "lookalike.reason"] == [
        ("lookalike.reason", b"malformed_json")]


def test_an_outage_longer_than_the_budget_stops_ingest_uncommitted(tmp_path: Path) -> None:
    store = FlakyStore()
    store.down.set()
    source = FakeSource(_records(tmp_path, 3))
    with ThreadPoolExecutor(2) as pool:
        runner, _ = _runner(tmp_path, store, source, pool, budget_s=0.5)
        with pytest.raises(IngestError) as info:
            runner.run(until_caught_up=True)
    assert isinstance(info.value.__cause__, OutageBudgetExceededError)
    assert source.commits == []


def test_only_outages_are_waited_out() -> None:
    calls: list[int] = []

    def broken() -> Any:
        calls.append(1)
        raise SinkError("apply failed: a bug")  # no transient cause: fails at once

    with pytest.raises(SinkError):
        OutageWait(60, sleep=lambda s: None).call("milvus", broken)
    assert calls == [1]
