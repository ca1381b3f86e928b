"""Two consumers in one group share the partitions; a rebalance loses and duplicates nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from ingest.runner import Runner
from lookalike.app import build_runner, create_topics
from schema.collection import CollectionSpec
from store import MilvusStore, ensure_collections
from tests.fakes import TinyEmbedder
from tests.pipeline_support import (
    committed_and_end,
    make_settings,
    rows,
    send,
    upsert_payload,
    write_image,
)

pytestmark = pytest.mark.kafka
FIRST_EVENTS = 16
FEED_EVENTS = 4
"""Events published every ``FEED_INTERVAL_S`` until the second consumer has applied some."""
FEED_INTERVAL_S = 0.25
DEADLINE_S = 120.0
"""Generous: a join costs Tansu half the session timeout per rebalance, and the machine may be
busy. The test ends as soon as its condition holds; the deadline only turns a hang into a
failure."""


def test_second_consumer_joins_mid_stream(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A consumer that joins a busy group gets partitions and work, and nothing is lost or
    stored twice across the rebalance. Events keep arriving until the newcomer has applied
    some (however long the rebalance takes on this machine), so the test never depends on
    the first consumer being slower than the rebalance; then every offset must be committed."""
    root = tmp_path / "images"
    root.mkdir()
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [root], batch_events=4)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"partitions": 4})})
    create_topics(settings)
    sent: list[str] = []

    def publish(n: int) -> None:
        ids = [f"p{len(sent) + i}" for i in range(n)]
        for i, pid in enumerate(ids):
            write_image(root / f"{pid}.png", seed=500 + len(sent) + i)
        send(bootstrap, settings.kafka.topic, [upsert_payload(pid, 1, [f"{pid}.png"])
                                               for pid in ids])
        sent.extend(ids)

    publish(FIRST_EVENTS)
    client = MilvusClient(str(tmp_path / "m.db"))
    embedder = TinyEmbedder()
    spec = CollectionSpec(name=settings.milvus.collection, dim=embedder.dim)
    store = MilvusStore(client)
    ensure_collections(store, spec)
    runners: list[Runner] = []
    threads: list[threading.Thread] = []
    deadline = time.monotonic() + DEADLINE_S

    def wait_for(condition: Callable[[], bool], interval_s: float = 0.1) -> bool:
        while not condition() and time.monotonic() < deadline:
            time.sleep(interval_s)
        return condition()

    def settled() -> bool:
        return len(rows(client, settings)) == len(sent) and all(
            c == e for c, e in committed_and_end(bootstrap, settings).values())

    with ThreadPoolExecutor(4) as pool:
        def start() -> Runner:
            runner = build_runner(settings, embedder, store, spec, pool)
            thread = threading.Thread(target=runner.run, daemon=True)
            thread.start()
            runners.append(runner)
            threads.append(thread)
            return runner

        try:
            first = start()
            assert wait_for(lambda: first.report.batches > 0), "the first consumer started"
            second = start()  # joins: partitions are revoked from the first and reassigned
            while second.report.totals.applied == 0 and time.monotonic() < deadline:
                publish(FEED_EVENTS)
                time.sleep(FEED_INTERVAL_S)
            assert second.report.totals.applied > 0, (
                f"the second consumer applied nothing in {DEADLINE_S:.0f}s "
                f"(batches: first={first.report.batches} second={second.report.batches})")
            fed_after_join = len(sent) - FIRST_EVENTS
            assert wait_for(settled, 0.5), "every event stored and every offset committed"
        finally:
            for runner in runners:
                runner.stop("test")
            for thread in threads:
                thread.join(30)

    stored = Counter(str(r["product_id"]) for r in rows(client, settings))
    assert sorted(stored) == sorted(sent), "nothing lost"
    assert set(stored.values()) == {1}, "nothing stored twice"
    assert first.report.batches > 0 and second.report.batches > 0, "both consumers worked"
    assert fed_after_join > 0
    applied = first.report.totals.applied + second.report.totals.applied
    stale = first.report.totals.stale + second.report.totals.stale
    revoked = first.report.totals.revoked + second.report.totals.revoked
    # an event re-read by the new owner is stale, or applied again (same version, same
    # rows) when the old owner's in-flight write had not landed yet when it was read; one
    # whose partition was revoked while the old owner wrote it is counted there as revoked
    # (left to the new owner, not committed) and found stale by the new owner
    assert applied + revoked >= len(sent) and applied + stale >= len(sent)
