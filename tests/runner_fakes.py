"""Fakes around the runner for fast tests: a source, a flaky in-memory store, a producer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingest.dlq import DeadLetterQueue
from ingest.fetch import ImageFetcher
from ingest.outage import OutageWait
from ingest.plan import WritePlan
from ingest.runner import Pipeline, Runner, RunnerConfig
from ingest.source import KafkaSource, Offsets
from ingest.stages import Stages, StateStore
from schema.records import ProductState
from store import StoreUnavailableError
from tests.fakes import TinyEmbedder

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

    def commit_owed(self) -> bool:
        return True  # every commit lands at once here

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        pass

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
            raise StoreUnavailableError("upsert failed after 4 attempt(s): connection refused")

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


def fake_runner(fetcher: ImageFetcher, store: StateStore, source: KafkaSource,
                pool: ThreadPoolExecutor, budget_s: float = 30.0,
                after_write: Callable[[], None] | None = None,
                idle_check: Callable[[], None] | None = None) -> tuple[Runner, FakeProducer]:
    """A runner over the fakes: 4-event batches, two in flight, fast outage retries."""
    producer = FakeProducer()
    stages = Stages(
        fetcher, TinyEmbedder(), store, DeadLetterQueue(producer, "dlq"), pool,
        max_pixels=10**7, outage=OutageWait(budget_s, first_delay_s=0.05, max_delay_s=0.2),
        after_write=after_write,
    )
    config = RunnerConfig(batch_events=4, batch_images=128, batch_timeout_s=0.05,
                          max_in_flight=2, shutdown_grace_s=5.0, poll_timeout_ms=20)
    return Runner(source, Pipeline(stages), config, idle_check=idle_check), producer
