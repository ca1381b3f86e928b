"""The commit guarantee without a broker or a model: a fake source, the real stages, sink and
store over a fake Milvus client. A store outage (:class:`StoreUnavailableError` after the
store's own bounded retries) is waited out by the stages (ingest/outage.py): the batch is
written and committed once Milvus is back; an outage outlasting the budget stops the runner
with nothing of that batch or later committed (the restarted process consumes it again)."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from PIL import Image
from pymilvus.exceptions import MilvusUnavailableException

from ingest.fetch import ImageFetcher
from ingest.outage import OutageBudgetExceededError, OutageWait
from ingest.runner import IngestError, Pipeline, Runner, RunnerConfig
from ingest.sink import MilvusSink
from ingest.stages import Stages
from schema.collection import CollectionSpec
from store import MilvusStore, StoreUnavailableError, parse_engine
from tests.fakes import TinyEmbedder

TOPIC = "products"
SPEC = CollectionSpec(name="fake", dim=TinyEmbedder.dim)


class FakeSource:
    """Serves a fixed list of records once; records what was committed."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self._records = list(records)
        self.commits: list[dict[TopicPartition, int]] = []
        self.on_revoked: Any = None

    def subscribe(self) -> None:
        pass

    def poll(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord]:
        out, self._records = self._records[:max_records], self._records[max_records:]
        return out

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        self.commits.append(dict(offsets))
        return True

    def commit_owed(self) -> bool:
        return True  # every commit lands at once here

    def caught_up(self) -> bool:
        return not self._records

    def close(self) -> None:
        pass


class FakeMilvus:
    """A Milvus server answering nothing stored; its first ``down_for`` upserts fail as
    unavailable."""

    def __init__(self, down_for: int) -> None:
        self.flushed: list[str] = []
        self.down_for = down_for
        self.writes = 0

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        return []

    def upsert(self, collection: str, data: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        if self.down_for > 0:
            self.down_for -= 1
            raise MilvusUnavailableException(message="server unavailable")
        self.writes += len(data)
        return {"upsert_count": len(data)}

    def flush(self, collection: str, **kw: Any) -> None:
        self.flushed.append(collection)

    def delete(self, collection: str, **kw: Any) -> dict[str, Any]:
        return {"delete_count": 0}


class FakeDlq:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, str, str]] = []

    def send(self, record: Any, reason: str, detail: str) -> None:
        self.sent.append((record, reason, detail))

    def flush(self) -> None:
        pass


def _records(n: int) -> list[ConsumerRecord]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (10 * i, 80, 200)).save(buf, format="PNG")
        event = {
            "type": "product.upserted", "product_id": f"p{i}", "title": "t", "category": "A/B",
            "price": "1", "currency": "USD", "seller_id": "s", "version": 1,
            "images": [{"data": base64.b64encode(buf.getvalue()).decode()}],
        }
        out.append(ConsumerRecord(
            topic=TOPIC, partition=0, leader_epoch=-1, offset=i, timestamp=0, timestamp_type=0,
            key=f"p{i}".encode(), value=json.dumps(event).encode(), headers=[], checksum=None,
            serialized_key_size=-1, serialized_value_size=-1, serialized_header_size=-1))
    return out


def _run(client: FakeMilvus, source: FakeSource, budget_s: float = 5.0,
         idle: list[tuple[bool, int]] | None = None) -> Runner:
    store = MilvusStore(client, engine=parse_engine("v2.3.5"), max_attempts=3,
                        sleep=lambda s: None)
    sink = MilvusSink(store, SPEC)

    def on_idle(final: bool) -> bool:  # as lookalike.app.build_runner wires it
        if idle is not None:
            idle.append((final, len(source.commits)))
        return sink.seal_if_idle(final=final)

    with ThreadPoolExecutor(2) as pool:
        stages = Stages(ImageFetcher([]), TinyEmbedder(), sink,
                        FakeDlq(), pool, max_pixels=10_000_000,  # type: ignore[arg-type]
                        outage=OutageWait(budget_s, first_delay_s=0.01, max_delay_s=0.05))
        runner = Runner(source, Pipeline(stages),  # type: ignore[arg-type]
                        RunnerConfig(batch_events=4, batch_images=128, batch_timeout_s=0.0,
                                     max_in_flight=2, shutdown_grace_s=5.0),
                        on_idle=on_idle)
        runner.run(until_caught_up=True)
    return runner


def test_after_its_last_batch_the_runner_seals_what_it_wrote_once() -> None:
    """A server's growing segments are searched row by row until sealed (docs/scaling.md)."""
    client, source, idle = FakeMilvus(down_for=0), FakeSource(_records(8)), []
    _run(client, source, idle=idle)
    finals = [commits for final, commits in idle if final]
    assert finals == [len(source.commits)]  # once, after the last commit
    assert client.flushed == [SPEC.name, SPEC.state_name]  # idle < 5 s before: only that one


def test_batches_are_committed_after_the_store_acknowledged_them() -> None:
    client, source = FakeMilvus(down_for=0), FakeSource(_records(8))
    runner = _run(client, source)
    assert client.writes == 16  # 8 image rows, 8 states
    assert source.commits and source.commits[-1] == {TopicPartition(TOPIC, 0): 8}
    assert "upsert_images" in runner.report.totals.milvus_s  # Milvus time per operation


def test_a_short_store_outage_is_waited_out_and_each_batch_committed_once_written() -> None:
    client, source = FakeMilvus(down_for=7), FakeSource(_records(8))  # > 2 x 3 store attempts
    _run(client, source)
    assert client.writes == 16
    assert source.commits[-1] == {TopicPartition(TOPIC, 0): 8}


def test_a_store_outage_beyond_the_budget_commits_nothing_and_stops_the_runner() -> None:
    client, source = FakeMilvus(down_for=10**9), FakeSource(_records(8))
    with pytest.raises(IngestError) as caught:
        _run(client, source, budget_s=0.2)
    assert source.commits == []
    cause = caught.value.__cause__
    assert isinstance(cause, OutageBudgetExceededError)
    assert isinstance(cause.__cause__, StoreUnavailableError)
    assert "failed after 3 attempt" in str(cause.__cause__)
    assert client.writes == 0
    assert client.flushed == []  # nothing written, nothing to seal; a failed run seals nothing
