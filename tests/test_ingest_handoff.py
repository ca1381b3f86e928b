"""A partition handed to another consumer: the old owner writes none of its events after the
revocation (fast: a fake two-partition source, an in-memory store, a fake producer).

Found by a hostile tester with two real consumers and a real Milvus: consumer A read v1 of a
product and planned its write; A's write was held (a slow Milvus call, an outage retry); B
joined, took the partition, applied v1 then v2 (which dropped two photos) and committed; A then
wrote its old v1 plan. The product ended with v1's photos and state although v2 was applied and
committed, for good: the write stage computed its plan once and retried that same plan through
an outage of up to ``outage_budget_s``. Here B is the test: it revokes the partition from A and
writes v2 to the store at the moment A is held.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingest.fetch import ImageFetcher
from ingest.plan import WritePlan
from ingest.source import KafkaSource, Offsets
from schema.events import ProductUpserted, parse_event
from schema.records import ProductState, image_pk
from store import StoreUnavailableError
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import TOPIC, fake_runner

TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
MOVED = "moved"
"""The product on partition 1, which moves to the new owner."""
KEPT = "kept"
"""The product on partition 0, which stays with the old owner."""


def _record(partition: int, offset: int, value: dict[str, Any] | bytes) -> ConsumerRecord:
    if isinstance(value, dict):
        key, raw = str(value["product_id"]).encode(), json.dumps(value).encode()
    else:
        key, raw = b"junk", value
    return ConsumerRecord(TOPIC, partition, -1, offset, 1, 0, key, raw, [], None, -1, -1, -1)


class TwoPartitionSource(KafkaSource):
    """Serves its records in one poll; notes every commit and rewind (no broker)."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self._records = records
        self._served = False
        self.commits: list[Offsets] = []
        self.rewinds: list[Offsets] = []
        self.on_revoked = lambda _tps: None

    def subscribe(self) -> None:
        pass

    def poll(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord]:
        if self._served:
            threading.Event().wait(timeout_ms / 1000)
            return []
        self._served = True
        return list(self._records)

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def commit(self, offsets: Offsets) -> bool:
        self.commits.append(dict(offsets))
        return True

    def commit_owed(self) -> bool:
        return True

    def rewind(self, offsets: Offsets) -> None:
        self.rewinds.append(dict(offsets))

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        pass

    def caught_up(self) -> bool:
        return self._served

    def close(self) -> None:
        pass


class ProductStore:
    """Product states and each product's image pks, in memory, applied as the sink applies a
    plan (upsert, prune to what the plan keeps, delete, states last). ``on_write_read`` runs
    once after the write stage's state read has been answered, ``on_apply`` once before the
    first apply (raising there fails that apply)."""

    def __init__(self) -> None:
        self.states: dict[str, ProductState] = {}
        self.images: dict[str, set[str]] = {}
        self.on_write_read: Callable[[], None] | None = None
        self.on_apply: Callable[[], None] | None = None

    def get_states(self, product_ids: Sequence[str]) -> dict[str, ProductState]:
        answer = {p: self.states[p] for p in product_ids if p in self.states}
        if threading.current_thread().name == "write" and self.on_write_read is not None:
            hook, self.on_write_read = self.on_write_read, None
            hook()  # answered before the hook ran: the read predates what it does
        return answer

    def apply(self, plan: WritePlan) -> None:
        if self.on_apply is not None:
            hook, self.on_apply = self.on_apply, None
            hook()
        for row in plan.upserts:
            self.images.setdefault(row.product_id, set()).add(row.pk)
        for pid, keep in plan.prune.items():
            self.images[pid] &= keep
        for pid in plan.delete_products:
            self.images.pop(pid, None)
        for state in plan.states:
            self.states[state.product_id] = state


def _pks(payload: dict[str, Any]) -> set[str]:
    event = parse_event(json.dumps(payload).encode())
    assert isinstance(event, ProductUpserted)
    return {image_pk(event.product_id, image.key) for image in event.images}


@pytest.mark.parametrize("held", ["before_write", "reading_states", "outage"])
def test_the_old_owner_writes_nothing_of_a_revoked_partition(
        tmp_path: Path, held: str) -> None:
    """``held``: where A is when the partition moves and B writes v2: before its write stage
    starts; while the write stage reads the stored states (A plans from what it read before B
    wrote); in an outage between the attempts of its write (A's first plan predates B's write).
    A must write nothing of partition 1, send none of its dead letters and commit none of its
    offsets, and the product must stay at B's v2."""
    photos = [write_image(tmp_path / f"m{i}.png", seed=i).name for i in range(3)]
    write_image(tmp_path / "k.png", seed=9)
    v1 = upsert_payload(MOVED, 1, photos)
    v2 = upsert_payload(MOVED, 2, photos[:1])  # drops two photos
    records = [
        _record(0, 0, upsert_payload(KEPT, 1, ["k.png"])),
        _record(1, 0, v1),
        _record(1, 1, b"{not json"),  # would be dead-lettered by its owner
        _record(0, 1, b"{not json either"),
    ]
    source = TwoPartitionSource(records)
    store = ProductStore()

    def new_owner_takes_partition_1() -> None:  # B: revoked from A, then v1 and v2 applied
        source.on_revoked({TP1})
        store.states[MOVED] = ProductState(product_id=MOVED, version=2, listed=True,
                                           updated_at_ms=1)
        store.images[MOVED] = _pks(v2)

    def outage() -> None:
        new_owner_takes_partition_1()
        raise StoreUnavailableError("upsert failed after 4 attempt(s): connection refused")

    with ThreadPoolExecutor(2) as pool:
        runner, producer = fake_runner(ImageFetcher([tmp_path]), store, source, pool)
        if held == "before_write":
            original = store.get_states

            def revoke_at_first_read(ids: Sequence[str]) -> dict[str, ProductState]:
                if threading.current_thread().name == "prepare":
                    new_owner_takes_partition_1()  # before A's write stage begins
                return original(ids)

            store.get_states = revoke_at_first_read  # type: ignore[method-assign]
        elif held == "reading_states":
            store.on_write_read = new_owner_takes_partition_1
        else:
            store.on_apply = outage
        report = runner.run(until_caught_up=True)

    assert store.states[MOVED].version == 2, "the product was rolled back to v1"
    assert store.images[MOVED] == _pks(v2), "v1's photos came back or v2's were pruned"
    assert store.states[KEPT].version == 1, "the partition still owned is written"
    assert all(TP1 not in offsets for offsets in source.commits), source.commits
    assert source.commits and max(c.get(TP0, 0) for c in source.commits) == 2
    sources = [dict(headers)["lookalike.source"] for _, _, headers in producer.sent]
    assert sources == [f"{TOPIC}/0/1".encode()], "only the owned partition's dead letter"
    assert report.totals.revoked == 2 and report.totals.applied == 1
    assert report.totals.dead_lettered == 1


def test_a_write_in_flight_at_the_revocation_is_reported_and_not_committed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The window left (docs/hardening.md): a write that started before the revocation cannot
    be called back. It lands, and A says so; it still commits none of the partition's offsets
    and sends none of its dead letters, which the new owner decides on."""
    write_image(tmp_path / "m.png", seed=1)
    records = [_record(1, 0, upsert_payload(MOVED, 1, ["m.png"])), _record(1, 1, b"{bad")]
    source = TwoPartitionSource(records)
    store = ProductStore()
    store.on_apply = lambda: source.on_revoked({TP1})
    with ThreadPoolExecutor(2) as pool, caplog.at_level(logging.WARNING, "ingest.stages"):
        runner, producer = fake_runner(ImageFetcher([tmp_path]), store, source, pool)
        report = runner.run(until_caught_up=True)
    assert store.states[MOVED].version == 1, "the write in flight landed"
    assert any("revoked while its write ran" in r.getMessage() for r in caplog.records)
    assert all(TP1 not in offsets for offsets in source.commits)
    assert producer.sent == []
    assert report.totals.revoked == 2 and report.totals.applied == 0
