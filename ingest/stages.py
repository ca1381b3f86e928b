"""The work done on a batch, one method per stage: prepare (fetch + decode), embed, write.

Each stage reads and fills a :class:`Batch`; the pipeline runs them on their own threads so
that decoding the next batch overlaps embedding this one, and Milvus writes overlap both. The
stages never touch the Kafka consumer.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingest.dlq import DeadLetterQueue
from ingest.fetch import ImageFetcher
from ingest.fetch_queue import FetchQueue
from ingest.load import decode_pool, load_image_ref
from ingest.outage import OutageWait
from ingest.plan import (
    EmbeddedProduct,
    EventItem,
    Status,
    WritePlan,
    plan_writes,
    select_upserts,
)
from ingest.source import Revocations
from ingest.unreadable import UnreadableRecord
from schema.errors import ItemError, ItemFailure, Reason, clipped
from schema.events import ImageRef, ProductEvent, ProductUpserted, parse_event
from schema.records import ProductState

log = logging.getLogger(__name__)


class BatchEmbedder(Protocol):
    """What the embed stage needs: ``prepare`` runs on the fetch pool (CPU work that overlaps
    inference), ``embed_prepared`` on the embed thread."""

    @property
    def model_version(self) -> str: ...

    @property
    def decode_size(self) -> int | None:
        """Smallest square the model needs; lets JPEGs decode at a reduced scale."""
        ...

    def prepare(self, image: Any) -> np.ndarray: ...

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray: ...


class StateStore(Protocol):
    def get_states(self, product_ids: Sequence[str]) -> dict[str, ProductState]: ...

    def apply(self, plan: WritePlan) -> Any:
        """Write ``plan``; a result with ``seconds_by_op()``, ``repriced`` and ``deleted``
        (the sink's ``WriteResult``) puts Milvus time per operation and the rows rewritten
        and deleted into the batch log."""
        ...


@dataclass
class BatchStats:
    events: int = 0
    applied: int = 0
    stale: int = 0
    dead_lettered: int = 0
    revoked: int = 0
    """Events left to their partition's new owner: revoked before this consumer wrote them
    (or, see ``Stages.write``, while it did): not committed, not dead-lettered here."""
    images_ok: int = 0
    images_failed: Counter[str] = field(default_factory=Counter)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    dead_images: Counter[str] = field(default_factory=Counter)
    """Dead-lettered upserts by their images' reasons: each ``all_images_failed`` event counted
    once per reason among its images (``path_not_allowed``: local paths outside the roots)."""
    rows_upserted: int = 0
    rows_rewritten: int = 0
    """Image rows rewritten in place by price changes (the sink's ``WriteResult.repriced``)."""
    rows_deleted: int = 0
    """Image rows deleted: of delisted products, pruned images, repairs (``WriteResult``)."""
    decode_s: float = 0.0
    embed_s: float = 0.0
    write_s: float = 0.0
    milvus_s: Counter[str] = field(default_factory=Counter)
    """Milvus seconds per operation (upsert_images, get_states, flush, ...)."""
    freshness_ms: list[float] = field(default_factory=list)

    def add(self, other: BatchStats) -> None:
        for name in (
            "events", "applied", "stale", "dead_lettered", "revoked", "images_ok",
            "rows_upserted", "rows_rewritten", "rows_deleted",
            "decode_s", "embed_s", "write_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.images_failed.update(other.images_failed)
        self.dlq_reasons.update(other.dlq_reasons)
        self.dead_images.update(other.dead_images)
        self.milvus_s.update(other.milvus_s)
        self.freshness_ms.extend(other.freshness_ms)

    def summary(self) -> str:
        fresh = np.array(self.freshness_ms) if self.freshness_ms else np.zeros(1)
        failed = ",".join(f"{k}:{v}" for k, v in sorted(self.images_failed.items())) or "-"
        dlq = ",".join(f"{k}:{v}" for k, v in sorted(self.dlq_reasons.items())) or "-"
        milvus = ",".join(f"{k}:{v:.3f}" for k, v in sorted(self.milvus_s.items())) or "-"
        return (
            f"events={self.events} applied={self.applied} stale={self.stale} "
            f"dead_lettered={self.dead_lettered} dlq_reasons={dlq} revoked={self.revoked} "
            f"images={self.images_ok} "
            f"image_failures={failed} rows={self.rows_upserted} "
            f"rewritten={self.rows_rewritten} deleted={self.rows_deleted} "
            f"decode_s={self.decode_s:.3f} "
            f"embed_s={self.embed_s:.3f} write_s={self.write_s:.3f} milvus_s={milvus} "
            f"freshness_p50_ms={np.percentile(fresh, 50):.0f} "
            f"freshness_max_ms={fresh.max():.0f}"
        )


@dataclass
class Batch:
    seq: int
    records: list[ConsumerRecord]
    items: list[EventItem]
    n_images: int
    opened_at: float
    jobs: list[tuple[str, int]] = field(default_factory=list)
    prepared: list[np.ndarray] = field(default_factory=list)
    embedded: dict[str, EmbeddedProduct] = field(default_factory=dict)
    stats: BatchStats = field(default_factory=BatchStats)
    error: BaseException | None = None
    revocations: Revocations | None = None
    """This consumer's revocations (the runner's); None: nothing is ever revoked."""
    read_at: int = 0
    """The revocation serial its records were read under (``Revocations.take``)."""
    revoked: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    """Partitions whose items were dropped: their first offset here and the serial of the
    revocation that dropped them (the runner reads them again if the partition comes back)."""

    def offsets(self) -> dict[TopicPartition, int]:
        """Next offset to read per partition still owned: what committing this batch means."""
        result: dict[TopicPartition, int] = {}
        for r in self.records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in self.revoked:
                result[tp] = max(result.get(tp, 0), r.offset + 1)
        return result

    def drop_revoked(self) -> int:
        """Drop the items of partitions revoked since this batch was read; how many.

        A revoked partition's new owner reads it again from the last commit and decides on
        each event against what the store holds then; a write from here after that would put
        back the version read here over a newer one it wrote (and prune its images). So those
        items are neither written, nor dead-lettered, nor committed here."""
        if self.revocations is None:
            return 0
        tps = {TopicPartition(r.topic, r.partition) for r in self.records}
        gone = self.revocations.since(self.read_at, tps - self.revoked.keys())
        if not gone:
            return 0
        for r in self.records:
            tp = TopicPartition(r.topic, r.partition)
            if tp in gone:
                first = min(r.offset, self.revoked.get(tp, (r.offset, 0))[0])
                self.revoked[tp] = (first, gone[tp])
        keep = [i for i in self.items if self._partition(i) not in gone]
        dropped = len(self.items) - len(keep)
        self.items = keep
        self.stats.revoked += dropped
        return dropped

    def _partition(self, item: EventItem) -> TopicPartition:
        record = self.records[item.index]
        return TopicPartition(record.topic, record.partition)


def parse_record(record: ConsumerRecord) -> ProductEvent:
    """One record -> its event, or an :class:`ItemError` (only): nothing a message contains
    may escape as another exception, or it would stop ingest at this offset for good."""
    if isinstance(record, UnreadableRecord):  # kafka-python could not decode it
        raise ItemError(Reason.CORRUPT_RECORD, record.error)
    if record.value is None:
        raise ItemError(Reason.MALFORMED_JSON, "empty record value (tombstone)")
    if record.key is None:
        raise ItemError(
            Reason.MISSING_KEY, "records must be keyed by product_id (ordering per product)"
        )
    try:
        event = parse_event(record.value)
    except ItemError:
        raise
    except Exception as exc:  # a validator bug on hostile input: this event's problem only
        log.debug("unexpected error parsing offset=%s", record.offset, exc_info=True)
        raise ItemError(Reason.INVALID_EVENT, f"cannot validate: {type(exc).__name__}") from exc
    if record.key != event.product_id.encode():
        raise ItemError(Reason.KEY_MISMATCH, "record key must equal the event's product_id")
    return event


def parse_records(records: list[ConsumerRecord], start: int = 0) -> tuple[list[EventItem], int]:
    """Parse each record into an item (numbered from ``start``); also count the images the
    batch will embed, which bounds the batch's size."""
    items: list[EventItem] = []
    n_images = 0
    for index, record in enumerate(records, start):
        try:
            event = parse_record(record)
        except ItemError as exc:
            items.append(EventItem(index, None, exc.failure))
            continue
        items.append(EventItem(index, event, None))
        if isinstance(event, ProductUpserted):
            n_images += len(event.images)
    return items, n_images


class Stages:
    def __init__(
        self,
        fetcher: ImageFetcher,
        embedder: BatchEmbedder,
        sink: StateStore,
        dlq: DeadLetterQueue,
        pool: ThreadPoolExecutor,
        *,
        max_pixels: int,
        decode_workers: int = 1,
        clock: Callable[[], float] = time.time,
        after_write: Callable[[], None] | None = None,
        outage: OutageWait,
    ) -> None:
        self._fetcher = fetcher
        self._embedder = embedder
        self._sink = sink
        self._dlq = dlq
        # Images wait for their host in queues of their own, not on a pool thread, and a
        # batch's fetching has a budget (ingest/fetch_queue.py).
        self._fetches = FetchQueue(fetcher, pool)
        self._max_pixels = max_pixels
        # Fetching is I/O and runs on every pool thread; decoding is CPU and runs on a pool
        # of decode_workers threads, so it does not preempt CPU inference (see settings), and
        # only those threads' malloc arenas ever hold a large photo (ingest/load.py).
        self._decoder = decode_pool(decode_workers)
        self._clock = clock
        # Runs after each batch's Milvus writes, before it may be committed: raising keeps
        # the batch uncommitted and stops the runner (schema.versions.ServingGuard.check).
        self._after_write = after_write
        # Store and dead-letter outages are waited out here, on the stage threads: the
        # pipeline fills up, the poll loop pauses the partitions and keeps polling.
        self._outage = outage

    def _load(self, image: ImageRef, cutoff: float, fetched: Callable[[], None]) -> np.ndarray:
        return load_image_ref(
            self._fetcher, image, self._embedder.prepare,
            max_pixels=self._max_pixels, min_size=self._embedder.decode_size,
            decoder=self._decoder, cutoff=cutoff, fetched=fetched,
        )

    def prepare(self, batch: Batch) -> None:
        """Fetch, decode and preprocess the images of the upserts worth embedding."""
        started = time.perf_counter()
        chosen = self._not_yet_stored(select_upserts(batch.items))
        jobs: list[tuple[str, int]] = []
        for product_id, event in chosen.items():
            batch.embedded[product_id] = EmbeddedProduct(event)
            jobs.extend((product_id, index) for index in range(len(event.images)))
        images = [chosen[product_id].images[index] for product_id, index in jobs]
        for job, outcome in zip(jobs, self._fetches.map(images, self._load), strict=True):
            if isinstance(outcome, ItemFailure):
                self._fail_image(batch, *job, outcome)
                continue
            batch.jobs.append(job)
            batch.prepared.append(outcome)
        batch.stats.decode_s = time.perf_counter() - started

    def _not_yet_stored(self, chosen: dict[str, ProductUpserted]) -> dict[str, ProductUpserted]:
        """Drop upserts already stored at this version or newer (replays, duplicates), so
        they cost no fetch and no inference. Stored versions only grow, so what is stale now
        is stale at write time too; the write stage checks again against fresh state."""
        if not chosen:
            return chosen
        stored = self._outage.call("milvus", lambda: self._sink.get_states(sorted(chosen)))
        return {
            pid: ev
            for pid, ev in chosen.items()
            if pid not in stored or stored[pid].version < ev.resolved_version
        }

    @staticmethod
    def _fail_image(batch: Batch, product_id: str, index: int, failure: ItemFailure) -> None:
        embedded = batch.embedded[product_id]
        embedded.failures[index] = failure
        batch.stats.images_failed[failure.reason.value] += 1
        ref = embedded.event.images[index].reference
        log.warning(
            "image failed product_id=%s image=%s reason=%s detail=%s",
            product_id, clipped(ref, 200), failure.reason.value, clipped(failure.detail, 300),
        )

    def embed(self, batch: Batch) -> None:
        if not batch.prepared:
            return
        started = time.perf_counter()
        vectors = self._embedder.embed_prepared(np.stack(batch.prepared))
        batch.stats.embed_s = time.perf_counter() - started
        for (product_id, index), vector in zip(batch.jobs, vectors, strict=True):
            batch.embedded[product_id].vectors[index] = vector.astype(np.float32).tolist()
        batch.stats.images_ok = len(batch.jobs)
        batch.prepared = []

    def write(self, batch: Batch) -> None:
        """Plan against stored state, write to Milvus, dead-letter, and only then return.

        Each attempt (the first, and each retry after an outage) drops the items of partitions
        revoked meanwhile and plans again against the states stored then: an attempt never
        replays a plan made before the outage, which may predate a new owner's writes."""
        started = time.perf_counter()
        plan = self._outage.call("milvus", lambda: self._plan_and_apply(batch))
        self._revoked_while_writing(batch, plan)
        if self._after_write is not None:  # the serving guard reads the registry: Milvus too
            self._outage.call("milvus", self._after_write)
        batch.drop_revoked()  # written before the revocation: the new owner finds them stale
        for item in batch.items:
            assert item.outcome is not None
            if item.outcome.status is Status.DEAD_LETTERED:
                assert item.outcome.failure is not None
                self._dlq.send(batch.records[item.index], item.outcome.failure)
        self._outage.call("dead-letter topic", self._dlq.flush)
        batch.stats.write_s = time.perf_counter() - started
        self._count(batch, plan)

    def _plan_and_apply(self, batch: Batch) -> WritePlan:
        """One write attempt. The last check of the revocations is just before ``apply``
        starts; what happens during it is :meth:`_revoked_while_writing`'s."""
        batch.drop_revoked()
        product_ids = sorted({i.event.product_id for i in batch.items if i.event is not None})
        states = self._sink.get_states(product_ids) if product_ids else {}
        plan = self._plan(batch, states)
        if batch.drop_revoked():  # revoked while the states were read: plan the rest again
            plan = self._plan(batch, states)
        if not plan.is_empty():
            result = self._sink.apply(plan)
            seconds_by_op = getattr(result, "seconds_by_op", None)
            if seconds_by_op is not None:
                batch.stats.milvus_s.update(seconds_by_op())
            batch.stats.rows_rewritten = int(getattr(result, "repriced", 0))
            batch.stats.rows_deleted = int(getattr(result, "deleted", 0))
        return plan

    def _plan(self, batch: Batch, states: dict[str, ProductState]) -> WritePlan:
        now_ms = int(self._clock() * 1000)
        return plan_writes(
            batch.items, states, batch.embedded, self._embedder.model_version, now_ms
        )

    @staticmethod
    def _revoked_while_writing(batch: Batch, plan: WritePlan) -> None:
        """A partition revoked while Milvus wrote its events: that write was not called back
        (nothing can be), so it may land after the new owner's writes of the same products
        (docs/hardening.md, "A partition that moves"). Its events are left to the new owner
        like any revoked ones, and the line below names the products to check."""
        earlier = set(batch.revoked)
        before = {i.event.product_id for i in batch.items if i.event is not None}
        dropped = batch.drop_revoked()
        if not dropped:
            return
        left = {i.event.product_id for i in batch.items if i.event is not None}
        written = {s.product_id for s in plan.states} & (before - left)
        log.warning(
            "batch=%d: partition(s) %s revoked while its write ran; %d event(s) left to the "
            "new owner; the write landed anyway, so these products may be older than the new "
            "owner wrote if it wrote them meanwhile: %s",
            batch.seq, sorted(tp.partition for tp in set(batch.revoked) - earlier), dropped,
            sorted(written)[:50],
        )

    def _count(self, batch: Batch, plan: WritePlan) -> None:
        stats = batch.stats
        stats.events = len(batch.items) + stats.revoked
        stats.rows_upserted = len(plan.upserts)
        done_ms = self._clock() * 1000
        for item in batch.items:
            assert item.outcome is not None
            if item.outcome.status is Status.APPLIED:
                stats.applied += 1
                stamp = batch.records[item.index].timestamp
                if stamp is not None and stamp > 0:
                    stats.freshness_ms.append(max(0.0, done_ms - stamp))
            elif item.outcome.status is Status.STALE:
                stats.stale += 1
            else:
                failure = item.outcome.failure
                assert failure is not None
                stats.dead_lettered += 1
                stats.dlq_reasons[failure.reason.value] += 1
                embedded = (batch.embedded.get(item.event.product_id)
                            if item.event is not None
                            and failure.reason is Reason.ALL_IMAGES_FAILED else None)
                if embedded is not None and embedded.event is item.event:
                    stats.dead_images.update({f.reason.value for f in embedded.failures.values()})
                record = batch.records[item.index]
                log.warning(
                    "dead-lettered record=%s-%s@%s reason=%s detail=%s", record.topic,
                    record.partition, record.offset, failure.reason.value,
                    clipped(failure.detail, 300),
                )
