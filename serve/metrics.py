"""Prometheus series of search and ingest, in base units with the ``lookalike_`` prefix.

Each process owns one ``CollectorRegistry`` (built in ``main()``, never the global default), so
tests can build as many apps as they like. ``ProductSearch`` stays unaware of metrics: a
request's model time comes from a thin wrapper around the embedder (:class:`TimedEmbedder`), its
Milvus time from the store's own per-thread call recording (``MilvusStore.recording``), both
measured on the worker thread that serves it. Ingest series are filled from the runner's
``on_batch`` callback after each commit, and the lag from its ``on_lag`` on every few turns of
the poll loop (the only thread allowed to ask the consumer), so a stalled pipeline shows it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.stages import Batch
from schema.errors import DEAD_LETTER_REASONS, IMAGE_REASONS
from store import CallTiming
from store.recorder import ThreadRecorder

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)


class SearchMetrics:
    """HTTP requests by endpoint and status, in-flight requests, and per-stage latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "lookalike_http_requests", "HTTP requests answered, by route and status code",
            ["endpoint", "status"], registry=registry,
        )
        self.duration = Histogram(
            "lookalike_http_request_duration_seconds", "Time to answer an HTTP request",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.in_flight = Gauge(
            "lookalike_http_requests_in_flight", "HTTP requests being answered now",
            registry=registry,
        )
        self.stage = Histogram(
            "lookalike_search_stage_duration_seconds",
            "Time a search request spent per stage: embed (its model calls), milvus (its "
            "Milvus calls), photos (image search: the rest, decoding the uploads, their "
            "features, re-ranking), verify (price comparison: the rest, same-item "
            "verification)",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=registry,
        )

    def observe_request(self, seconds: float, embed_s: Sequence[float],
                        store_calls: Sequence[CallTiming], *, rest: str | None = None) -> None:
        """One observation per stage for one search request: its model calls together, its
        Milvus calls together, and, under ``rest``, the rest of its time: ``verify`` for a
        price comparison that answered (the pixel-level verification dominates it),
        ``photos`` for an image search that answered (decoding the uploads, their keypoint
        and colour features, reading listing photos to re-rank). None: not observed (a
        vector or product search's rest is a few parsing steps; a failed request's rest did
        not do that stage's work)."""
        model = sum(embed_s)
        milvus = sum(c.seconds for c in store_calls)
        if embed_s:
            self.stage.labels("embed").observe(model)
        if store_calls:
            self.stage.labels("milvus").observe(milvus)
        if rest is not None:
            self.stage.labels(rest).observe(max(0.0, seconds - model - milvus))


class ConnectionMetrics:
    """What the server itself does to connections, below the app: the app's series
    (:class:`SearchMetrics`) see requests, and these connections that never made one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.header_timeouts = Counter(
            "lookalike_http_header_timeouts", "Connections closed because a request's line "
            "and headers did not arrive within serve.header_timeout_s", registry=registry,
        )


class TimedEmbedder:
    """An embedder that notes how long each ``embed`` call took, for the thread's open
    :meth:`recording` (the request it serves); every other attribute (``dim``,
    ``model_version``, ``decode_size``...) is the wrapped one's."""

    def __init__(self, embedder: Any) -> None:
        self._embedder = embedder
        self._recorder: ThreadRecorder[float] = ThreadRecorder()

    def recording(self) -> AbstractContextManager[list[float]]:
        """Collect the seconds of this thread's ``embed`` calls made inside the block."""
        return self._recorder.recording()

    def embed(self, images: Sequence[Any]) -> Any:
        started = time.perf_counter()
        try:
            return self._embedder.embed(images)
        finally:
            self._recorder.note(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


class IngestMetrics:
    """Events by outcome, image failures, stage durations, freshness, lag, rows written.

    Every outcome and reason series exists from the start at 0, so an alert on its
    increase (or on its absence) works before the first one happens."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "lookalike_ingest_events", "Events that ended, by outcome (applied, stale, "
            "dead_lettered, revoked: left to the partition's new owner) and dead-letter reason",
            ["outcome", "reason"], registry=registry,
        )
        self.images = Counter(
            "lookalike_ingest_images", "Images embedded", registry=registry,
        )
        self.image_failures = Counter(
            "lookalike_ingest_image_failures", "Images that could not be used, by reason",
            ["reason"], registry=registry,
        )
        self.batches = Counter(
            "lookalike_ingest_batches", "Batches written and committed", registry=registry,
        )
        self.stage = Histogram(
            "lookalike_ingest_batch_stage_duration_seconds",
            "Time a batch spent in each stage (decode, embed, write)", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.freshness = Histogram(
            "lookalike_ingest_freshness_seconds",
            "Event timestamp to searchable in Milvus, per applied event",
            buckets=_FRESHNESS_BUCKETS, registry=registry,
        )
        self.lag = Gauge(
            "lookalike_ingest_consumer_lag_events",
            "Events not yet committed per assigned partition (fetch high-water mark minus "
            "committed offset), refreshed every half second by the poll loop",
            ["topic", "partition"], registry=registry,
        )
        self.rows = Counter(
            "lookalike_ingest_rows_written", "Image rows upserted into Milvus",
            registry=registry,
        )
        self.rows_rewritten = Counter(
            "lookalike_ingest_rows_rewritten", "Image rows rewritten in place by price changes",
            registry=registry,
        )
        self.rows_deleted = Counter(
            "lookalike_ingest_rows_deleted", "Image rows deleted (delisted products, pruned "
            "images, repairs)", registry=registry,
        )
        self._lag_series: set[tuple[str, str]] = set()
        for outcome in ("applied", "stale", "revoked"):
            self.events.labels(outcome, "")
        for reason in DEAD_LETTER_REASONS:
            self.events.labels("dead_lettered", reason.value)
        for reason in IMAGE_REASONS:
            self.image_failures.labels(reason.value)

    def observe_batch(self, batch: Batch) -> None:
        """Count one committed batch."""
        s = batch.stats
        self.events.labels("applied", "").inc(s.applied)
        self.events.labels("stale", "").inc(s.stale)
        self.events.labels("revoked", "").inc(s.revoked)
        for reason, n in s.dlq_reasons.items():
            self.events.labels("dead_lettered", reason).inc(n)
        self.images.inc(s.images_ok)
        for reason, n in s.images_failed.items():
            self.image_failures.labels(reason).inc(n)
        self.batches.inc()
        for stage, seconds in (("decode", s.decode_s), ("embed", s.embed_s),
                               ("write", s.write_s)):
            self.stage.labels(stage).observe(seconds)
        for ms in s.freshness_ms:
            self.freshness.observe(max(0.0, ms / 1000.0))
        self.rows.inc(s.rows_upserted)
        self.rows_rewritten.inc(s.rows_rewritten)
        self.rows_deleted.inc(s.rows_deleted)

    def observe_lag(self, lag: Mapping[Any, int | None]) -> None:
        """``lag`` maps each assigned TopicPartition to the events behind (None: not known
        yet, not reported). The series of partitions no longer assigned here (revoked) go:
        their new owner reports them."""
        seen: set[tuple[str, str]] = set()
        for tp, behind in lag.items():
            if behind is not None:
                labels = (tp.topic, str(tp.partition))
                self.lag.labels(*labels).set(behind)
                seen.add(labels)
        for labels in self._lag_series - seen:
            self.lag.remove(*labels)
        self._lag_series = seen


def publish_model_version(registry: CollectorRegistry, model_version: str) -> None:
    """``lookalike_model_serving_info{model_version=...} 1``: the model this process embeds
    with (search queries and ingested images alike). Call once per registry."""
    Gauge("lookalike_model_serving_info", "1 for the model version this process embeds with",
          ["model_version"], registry=registry).labels(model_version).set(1)
