"""Two consumers in one group share the partitions; a rebalance loses and duplicates nothing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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
N = 40


class SlowEmbedder(TinyEmbedder):
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.2)
        return super().embed_prepared(batch)


def test_second_consumer_joins_mid_stream(bootstrap: str, unique: str, tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(N):
        write_image(root / f"p{i}.png", seed=500 + i)
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [root], batch_events=4)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"partitions": 4})})
    create_topics(settings)
    send(bootstrap, settings.kafka.topic,
         [upsert_payload(f"p{i}", 1, [f"p{i}.png"]) for i in range(N)])

    client = MilvusClient(str(tmp_path / "m.db"))
    embedder = SlowEmbedder()
    spec = CollectionSpec(name=settings.milvus.collection, dim=embedder.dim)
    store = MilvusStore(client)
    ensure_collections(store, spec)
    runners: list[Runner] = []
    threads: list[threading.Thread] = []
    with ThreadPoolExecutor(4) as pool:
        def start() -> Runner:
            runner = build_runner(settings, embedder, store, spec, pool)
            thread = threading.Thread(target=runner.run, daemon=True)
            thread.start()
            runners.append(runner)
            threads.append(thread)
            return runner

        first = start()
        deadline = time.monotonic() + 60
        while first.report.batches < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        second = start()  # joins: partitions are revoked from the first and reassigned
        while time.monotonic() < deadline:
            if len(rows(client, settings)) == N and all(
                c == e for c, e in committed_and_end(bootstrap, settings).values()
            ):
                break
            time.sleep(0.5)
        for runner in runners:
            runner.stop("test")
        for thread in threads:
            thread.join(30)

    stored = rows(client, settings)
    assert sorted(r["product_id"] for r in stored) == sorted(f"p{i}" for i in range(N))
    assert first.report.batches > 0 and second.report.batches > 0, "both consumers worked"
    applied = first.report.totals.applied + second.report.totals.applied
    stale = first.report.totals.stale + second.report.totals.stale
    assert applied == N and applied + stale >= N
