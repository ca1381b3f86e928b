"""Helpers for the ingest tests: settings per test, publishing, reading Milvus and the DLQ."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from PIL import Image
from pymilvus import MilvusClient

from ingest.runner import RunReport
from lookalike.app import build_runner, create_topics
from lookalike.settings import (
    ImageSettings,
    IngestSettings,
    KafkaSettings,
    MilvusSettings,
    Settings,
)
from schema.collection import CollectionSpec
from store import MilvusStore, ensure_collections


def make_settings(bootstrap: str, unique: str, db: Path, roots: list[Path],
                  **ingest: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, topic=f"products-{unique}", dlq_topic=f"dlq-{unique}",
            group_id=f"g-{unique}", partitions=2, session_timeout_ms=6000,
        ),
        milvus=MilvusSettings(uri=str(db), collection=f"c_{unique}"),
        images=ImageSettings(roots=roots, timeout_s=2.0, fetch_workers=4),
        ingest=IngestSettings(**{"batch_events": 16, "batch_timeout_s": 0.2, **ingest}),
    )


def write_image(path: Path, seed: int, size: int = 64) -> Path:
    """A random-blocks picture: distinct per seed, so its thumbnail vector is too."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST).save(path)
    return path


def upsert_payload(pid: str, version: int, images: list[str], price: float = 10.0,
                   category: str = "Shop/Things") -> dict[str, Any]:
    return {"type": "product.upserted", "product_id": pid, "version": version,
            "title": f"Product {pid}", "category": category, "price": price,
            "currency": "USD", "images": images, "seller_id": "s1"}


def send(bootstrap: str, topic: str, payloads: list[Any]) -> None:
    """Publish raw payloads (dicts become JSON; bytes go as they are), keyed by product_id."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for payload in payloads:
        if isinstance(payload, dict):
            key = str(payload.get("product_id", "none")).encode()
            value = json.dumps(payload).encode()
        else:
            key, value = b"junk", payload
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def run_until_caught_up(settings: Settings, embedder: Any, client: MilvusClient,
                        on_batch: Any = None) -> RunReport:
    store = MilvusStore(client)
    spec = CollectionSpec(name=settings.milvus.collection, dim=embedder.dim)
    ensure_collections(store, spec)
    create_topics(settings)
    with ThreadPoolExecutor(4) as pool:
        runner = build_runner(settings, embedder, store, spec, pool, on_batch=on_batch)
        return runner.run(until_caught_up=True)


def rows(client: MilvusClient, settings: Settings, expr: str = 'pk != ""',
         fields: list[str] | None = None) -> list[dict[str, Any]]:
    client.load_collection(settings.milvus.collection)  # a fresh client sees it released
    return list(client.query(settings.milvus.collection, filter=expr, limit=16384,
                             output_fields=fields or ["pk", "product_id", "price", "currency",
                                                      "version", "image_ref"],
                             consistency_level="Strong"))


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=1000)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            out.extend(batch)
    consumer.close()
    return out


def committed_and_end(bootstrap: str, settings: Settings) -> dict[int, tuple[int, int | None]]:
    """Per partition: the group's committed offset and the partition's end (high-water)."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.kafka.group_id,
                             enable_auto_commit=False)
    topic = settings.kafka.topic
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(tps)
    committed = {tp: consumer.committed(tp) or 0 for tp in tps}
    for tp, offset in committed.items():
        consumer.seek(tp, max(0, offset - 1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
        consumer.poll(timeout_ms=200)
    result = {tp.partition: (committed[tp], consumer.highwater(tp)) for tp in tps}
    consumer.close()
    return result
