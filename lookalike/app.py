"""Builders: turn settings into the heavy objects (clients, model, pipeline). Called from
``main()`` and from tests; nothing here runs at import time."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from ingest.dlq import DeadLetterQueue, build_producer
from ingest.fetch import ImageFetcher
from ingest.runner import Pipeline, Runner, RunnerConfig, RunReport
from ingest.sink import MilvusSink
from ingest.source import KafkaSource, build_consumer
from ingest.stages import Batch, Stages
from ingest.topics import ensure_topics
from lookalike.settings import Settings
from schema.collection import CollectionSpec
from store import MilvusStore, ensure_collections
from store.versions import ModelVersions

if TYPE_CHECKING:
    from embedding.embedder import Embedder
    from search.api import ProductSearch

log = logging.getLogger(__name__)


def build_embedder(settings: Settings) -> Embedder:
    from embedding.embedder import create_embedder  # loads Keras: only when a model is needed

    m = settings.model
    return create_embedder(m.variant, m.square, m.batch_size, m.colour_weight)


def warm_up_in_background(embedder: Any) -> threading.Thread | None:
    """Compile the model's batch shapes on a daemon thread (while the consumer joins its
    group), so the first batches run at full speed. Embedders without ``warm_up`` are skipped.
    """
    warm_up = getattr(embedder, "warm_up", None)
    if warm_up is None:
        return None

    def run() -> None:
        log.info("model warm-up done in %.1fs", warm_up())

    thread = threading.Thread(target=run, name="model-warm-up", daemon=True)
    thread.start()
    return thread


def open_store(settings: Settings) -> MilvusStore:
    """The Milvus store of the configured URI (a Lite ``.db`` path's folder is created)."""
    return MilvusStore.open(settings.milvus.uri, settings.milvus.token)


def build_milvus(
    settings: Settings, dim: int, model_version: str | None = None
) -> tuple[MilvusStore, CollectionSpec]:
    """The store and the spec of the configured name, which searches use.

    With ``model_version``: the versioned layout (store/versions.py); a fresh install gets
    that version's collections with ``<collection>`` as their alias, an existing one is
    loaded as it is. Without: ``<collection>`` is used (and created) as one physical collection, for
    tools that manage their own collection.
    """
    store = open_store(settings)
    spec = CollectionSpec(name=settings.milvus.collection, dim=dim)
    if model_version is None:
        ensure_collections(store, spec)
    else:
        versions = ModelVersions(store, spec.name)
        if versions.load_serving() is None:
            versions.ensure_version(model_version, dim)
    return store, spec


def build_search(settings: Settings, embedder: Any, store: MilvusStore, spec: CollectionSpec,
                 *, read_your_writes: bool = False) -> ProductSearch:
    """A searcher with the configured consistency (serving: ``Bounded`` by default), or
    ``Strong`` for a caller that searches what it has just written (the demo)."""
    from search.api import ProductSearch

    return ProductSearch(
        store, spec, embedder,
        consistency="Strong" if read_your_writes else settings.milvus.consistency,
        max_pixels=settings.images.max_pixels,
    )


def decode_workers(settings: Settings, embedder: Any) -> int:
    """Images decoded at once: the setting, else every core when the model runs on a GPU,
    else a quarter of the cores (at least 1). On 2 CPU cores the model keeps ~1.85 of them
    busy; 8 concurrent decoders made it ~25% slower, one decoder keeps up with it."""
    if settings.images.decode_workers is not None:
        return settings.images.decode_workers
    cores = os.cpu_count() or 1
    return cores if getattr(embedder, "on_gpu", False) else max(1, cores // 4)


def build_runner(
    settings: Settings,
    embedder: Any,
    store: MilvusStore,
    spec: CollectionSpec,
    pool: ThreadPoolExecutor,
    on_batch: Callable[[Batch, RunReport], None] | None = None,
    after_write: Callable[[], None] | None = None,
) -> Runner:
    """The ingest loop writing into ``spec`` (physical collections: see
    ``ModelVersions.open_for_writing``); ``after_write`` runs after each batch's writes,
    before its commit (the serving guard)."""
    k, i, g = settings.kafka, settings.images, settings.ingest
    ensure_topics(k.bootstrap_servers, {k.topic: k.partitions, k.dlq_topic: 1})
    consumer = build_consumer(
        k.bootstrap_servers, k.group_id, k.client_id,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_records=k.max_poll_records,
    )
    dlq = DeadLetterQueue(build_producer(k.bootstrap_servers, k.client_id + "-dlq"), k.dlq_topic)
    fetcher = ImageFetcher(i.roots, timeout_s=i.timeout_s, max_bytes=i.max_bytes)
    sink = MilvusSink(store, spec)
    stages = Stages(fetcher, embedder, sink, dlq, pool, max_pixels=i.max_pixels,
                    decode_workers=decode_workers(settings, embedder), after_write=after_write)
    config = RunnerConfig(
        batch_events=g.batch_events, batch_images=g.batch_images,
        batch_timeout_s=g.batch_timeout_s, max_in_flight=g.max_in_flight,
        shutdown_grace_s=g.shutdown_grace_s,
    )
    source = KafkaSource(consumer, k.topic)
    # another consumer may have just written the products of an assigned partition
    source.on_assigned = lambda _tps: sink.expect_foreign_writes()
    return Runner(source, Pipeline(stages), config, on_batch=on_batch)


@contextmanager
def stop_on_signals(runner: Runner) -> Iterator[None]:
    """SIGTERM / Ctrl-C ask the runner to finish its in-flight work and commit."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing in-flight batches", signal.Signals(signum).name)
        runner.stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
