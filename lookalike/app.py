"""All wiring: settings in, the heavy objects (clients, model, pipeline) out.

Commands (``lookalike/commands.py``) parse, call these builders, run and print; tests and
benches call the same builders. Nothing here runs at import time. Each client is opened in
one function (:func:`open_store`, :func:`create_topics`, :func:`build_producer`), which is
also where its failures to connect become one-line :class:`UserError` messages; failures later
on are translated by :func:`explain`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from embedding.files import photo_over_limit
from embedding.trained import TrainedModelError
from embedding.weights import WeightsNotInstalledError
from ingest.dlq import DeadLetterQueue
from ingest.dlq import build_producer as _dlq_producer
from ingest.egress import EgressPolicy
from ingest.fetch import FetchPolicy, ImageFetcher
from ingest.outage import OutageWait
from ingest.runner import Pipeline, Runner, RunnerConfig, RunReport
from ingest.sink import MilvusSink
from ingest.source import KafkaSource, build_consumer
from ingest.stages import Batch, Stages
from ingest.topics import ensure_topics
from lookalike import signals
from lookalike.broker import BrokerError, PortInUseError
from lookalike.errors import ExitCode, UserError
from lookalike.settings import ImageSettings, IngestSettings, Settings
from lookalike.stopping import hand_over
from schema.collection import CollectionSpec
from schema.errors import ItemError
from schema.versions import DEFAULT_LEASE_S, ModelRetiredError
from store import MilvusStore, StoreError
from store.engine import is_lite_uri
from store.versions import ModelVersions, ServingGuard

if TYPE_CHECKING:
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry

    from embedding.embedder import Embedder
    from ingest.reindex import Reindexer
    from search.api import ProductSearch
    from search.verify import SameItemVerifier

log = logging.getLogger(__name__)


# -- model ----------------------------------------------------------------------------------


def build_embedder(settings: Settings) -> Embedder:
    """The model of the settings. Keras is imported here, quietly (``import_keras``), so a
    command's checks before it (a port in use, an absent broker or database) answer in about
    a second, not after the ~3 s import."""
    from embedding.runtime import enable_compile_cache, import_keras

    import_keras()
    from embedding.embedder import create_embedder

    m = settings.model
    enable_compile_cache(m.compile_cache)
    return create_embedder(m.variant, m.square, m.batch_size, m.colour_weight, m.path)


def warm_up_in_background(embedder: Any) -> threading.Thread | None:
    """Compile the model's batch shapes on a daemon thread (while the consumer joins its
    group), so the first batches run at full speed. Embedders without ``warm_up`` are skipped.
    """
    warm_up = getattr(embedder, "warm_up", None)
    if warm_up is None:
        return None

    def run() -> None:
        try:
            log.info("model warm-up done in %.1fs", warm_up())
        except Exception as exc:  # only speed is lost (and a short ingest may exit mid-way)
            log.debug("model warm-up stopped: %s: %s", type(exc).__name__, exc)

    thread = threading.Thread(target=run, name="model-warm-up", daemon=True)
    thread.start()
    return thread


def _finished(thread: threading.Thread | None) -> Callable[[], bool]:
    return lambda: thread is None or not thread.is_alive()


@contextmanager
def warming_up(embedder: Any) -> Iterator[Callable[[], bool]]:
    """:func:`warm_up_in_background` for the block, which then waits for the warm-up to end:
    a process that exits while TensorFlow compiles on a daemon thread aborts (SIGABRT,
    "exception not rethrown"), e.g. an ``ingest --until-caught-up`` done within seconds, or
    an API that cannot start. The block gets whether the warm-up is done (``/readyz``)."""
    thread = warm_up_in_background(embedder)
    try:
        yield _finished(thread)
    finally:
        if thread is not None:
            thread.join()


# -- Milvus ---------------------------------------------------------------------------------


def open_store(settings: Settings, *, create: bool = False) -> MilvusStore:
    """THE place the Milvus store is opened from settings (URI, token, Lite's file and lock).

    ``create``: a Milvus Lite path that does not exist is created (ingest, demo, eval);
    otherwise it is an error, so a mistyped path never yields an empty database and ``[]``.
    """
    uri, m = settings.milvus.uri, settings.milvus
    lite = is_lite_uri(uri)
    if lite and _foreign_folder(Path(uri)):
        raise UserError(f"{uri} is a folder that holds no Milvus Lite database (check "
                        "--milvus-uri or LOOKALIKE_MILVUS__URI); nothing was written to it")
    if lite and Path(uri).exists() and not Path(uri).is_dir():
        raise UserError(f"{uri} is a file, not a Milvus Lite database (this Milvus Lite keeps "
                        "a database in a folder; check --milvus-uri or LOOKALIKE_MILVUS__URI)")
    if lite and not create and Path(uri).is_dir() and not any(Path(uri).iterdir()):
        raise UserError(f"no Milvus Lite database at {uri}, an empty folder (check --milvus-uri "
                        "or LOOKALIKE_MILVUS__URI; `lookalike ingest` creates it)")
    if lite and not Path(uri).exists():
        if not create:
            raise UserError(
                f"no Milvus Lite database at {uri} (check --milvus-uri or "
                "LOOKALIKE_MILVUS__URI; `lookalike ingest` creates it)")
        try:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # under a file, on a read-only disk, not ours
            raise UserError(f"cannot create the Milvus Lite database {uri}: "
                            f"{exc.strerror or exc}") from None
    if lite and not os.access(Path(uri) if Path(uri).exists() else Path(uri).parent,
                              os.W_OK | os.X_OK):
        raise UserError(f"cannot open the Milvus Lite database {uri}: not writable (Milvus Lite "
                        "writes its lock and files there, even to read)")
    try:
        store = MilvusStore.open(uri, m.token, memory_index=m.lite_memory_index,
                                 lite_process=m.lite_process, lite_speedups=m.lite_speedups)
        _opened.append(store)
        return store
    except StoreError as exc:
        if lite and _lite_locked(Path(uri)):
            raise UserError(
                f"the Milvus Lite database {uri} is in use by another process (Milvus Lite "
                "allows one); stop it, or use a Milvus server for several processes",
                ExitCode.UNAVAILABLE) from None
        what = "open the Milvus Lite database" if lite else "reach Milvus at"
        raise UserError(f"cannot {what} {uri}: {exc}", ExitCode.UNAVAILABLE) from None


_opened: list[MilvusStore] = []


def close_stores() -> None:
    """Close every store :func:`open_store` opened (a Milvus Lite child process stops with
    its store, releasing the database). ``lookalike.cli.main`` calls it as a command ends."""
    while _opened:
        store = _opened.pop()
        try:
            store.close()
        except Exception as exc:  # closing must not hide the command's own outcome
            log.warning("closing the Milvus store failed: %s", exc)


LITE_ENTRIES = frozenset({"LOCK", "databases", "collections"})
"""What Milvus Lite (3.x) keeps in a database folder, from the moment it opens one."""


def _foreign_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with something in it but nothing of Milvus Lite's: opening
    it would write a database among someone's files (``--milvus-uri var``, a photo folder)."""
    if not path.is_dir():
        return False
    names = {entry.name for entry in path.iterdir()}
    return bool(names) and not names & LITE_ENTRIES


def _lite_locked(path: Path) -> bool:
    """Whether another process holds Milvus Lite's advisory lock on ``path``."""
    lock = path / "LOCK"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_versions(settings: Settings, *, create: bool = False) -> ModelVersions:
    """The model-version registry of the configured collection (one client, one probe of
    the server's engine and version, shared by everything the command builds from it)."""
    # the settings checked the name (schema.versions.check_base): a bad one opens no store
    return ModelVersions(open_store(settings, create=create), settings.milvus.collection)


def open_for_writing(versions: ModelVersions, embedder: Any) -> tuple[CollectionSpec,
                                                                      ServingGuard]:
    """Where an ingest of ``embedder``'s model writes (created on a first install), and the
    guard it checks after each batch: decided once per process."""
    try:
        return versions.open_for_writing(embedder.model_version, embedder.dim)
    except ModelRetiredError as exc:
        raise UserError(str(exc), ExitCode.MODEL_SWITCHED) from None


def require_serving(settings: Settings, versions: ModelVersions) -> None:
    """A user error unless the configured collection exists (searches never create it)."""
    if versions.serving_unloaded() is None:
        raise UserError(f"no collection {versions.base} in {settings.milvus.uri} yet "
                        "(`lookalike ingest` creates it)")


def require_product(settings: Settings, versions: ModelVersions, product_id: str) -> None:
    """A user error unless the serving collection holds a row of ``product_id`` (of any
    model: a pre-alias collection may hold several), asked of the store before the model
    loads, with the error the searcher would raise (:class:`search.api.ProductNotFound`,
    naming the serving model). The searcher asks again, for its own model's rows."""
    from search.api import ProductNotFound

    serving = versions.load_serving()
    if serving is None or serving.model_version is None:
        return  # nothing serves, or an empty pre-alias collection: the searcher says which
    where = versions.store.expr().eq("product_id", product_id)
    if not versions.store.exists(versions.base, where, "product_id",
                                 consistency=settings.milvus.consistency):
        raise UserError(str(ProductNotFound(product_id, serving.model_version)))


def build_search(settings: Settings, embedder: Any, versions: ModelVersions, *,
                 read_your_writes: bool = False) -> ProductSearch:
    """A searcher of the serving collections (loaded here); a missing collection or another
    model serving is a user error. It reads with the configured consistency (serving:
    ``Bounded``), or ``Strong`` for a caller that searches what it has just written (the
    demo; docs/scaling.md)."""
    from search.api import ModelMismatchError, ProductSearch

    require_serving(settings, versions)
    versions.load_serving()
    spec = CollectionSpec(name=versions.base, dim=embedder.dim)
    try:
        return ProductSearch(
            versions.store, spec, embedder,
            consistency="Strong" if read_your_writes else settings.milvus.consistency,
            max_pixels=settings.images.max_pixels, max_bytes=settings.images.max_bytes,
            verifier=build_verifier(settings),
            cutout_queries=settings.search.cutout_queries,
            window_queries=settings.search.window_queries,
            light_queries=settings.search.light_queries,
            rerank=settings.search.geometric_rerank,
            rerank_depth=settings.search.rerank_depth,
            turned_queries=settings.search.turned_queries,
            family_depth=settings.search.family_depth,
            similar_views=settings.search.similar_views,
        )
    except (ModelMismatchError, ValueError) as exc:
        raise UserError(str(exc)) from None


@contextmanager
def scratch_milvus(settings: Settings, uri: str | None) -> Iterator[Settings]:
    """Settings for a throw-away store: the server at ``uri``, else a fresh Milvus Lite
    database in a temporary folder (deleted afterwards). For ``lookalike eval``."""
    tmp = None if uri else Path(tempfile.mkdtemp(prefix="lookalike-eval-"))
    target = uri if tmp is None else str(tmp / "eval.db")
    try:
        yield settings.model_copy(update={"milvus": settings.milvus.model_copy(
            update={"uri": target, "collection": f"lookalike_eval_{uuid.uuid4().hex[:12]}"})})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# -- search and the HTTP API ----------------------------------------------------------------


def build_api(
    settings: Settings,
    embedder: Any,
    versions: ModelVersions,
    registry: CollectorRegistry,
    pool: ThreadPoolExecutor,
    model_warm: Callable[[], bool] | None = None,
) -> FastAPI:
    """The HTTP app (serve/api.py) over ``build_search``, with embed and Milvus time recorded
    into ``registry``; ``/readyz`` says when ``model_warm``, the warm-up of a command's
    :func:`warming_up` (which it waits for before exiting), is done. Without one the model
    warms up on a daemon thread started here (tests, benches). ``pool`` runs the queries
    (its size bounds them)."""
    from serve.api import ServeConfig, create_app
    from serve.health import Readiness
    from serve.metrics import SearchMetrics, TimedEmbedder

    metrics = SearchMetrics(registry)
    timed = TimedEmbedder(embedder)
    search = build_search(settings, timed, versions)
    if model_warm is None:
        model_warm = _finished(warm_up_in_background(embedder))
    readiness = Readiness(versions.store, versions.base, model_warm=model_warm,
                          model_version=embedder.model_version)
    s = settings.search
    config = ServeConfig(
        image_roots=list(settings.images.roots), default_k=s.k, compare_k=s.compare_k,
        compare_threshold=s.compare_threshold, max_upload_bytes=settings.serve.max_upload_bytes,
        body_timeout_s=settings.serve.body_timeout_s, body_idle_s=settings.serve.body_idle_s,
        max_request_pixels=settings.serve.max_request_pixels,
    )
    return create_app(search, embedder=timed, store=versions.store, readiness=readiness,
                      registry=registry, metrics=metrics, pool=pool, config=config)


def build_verifier(settings: Settings, fetcher: ImageFetcher | None = None) -> SameItemVerifier:
    """Price comparison's same-item check, reading stored listing photos the way ingest
    fetched them: through ``fetcher``, by default :func:`build_fetcher`'s (the same roots,
    egress allow-lists, deadline, retries and byte cap as ingest and reindex)."""
    from search.verify import SameItemRule, SameItemVerifier

    rule = SameItemRule(silhouette_route=settings.search.silhouette_route)
    return SameItemVerifier.for_fetcher(fetcher or build_fetcher(settings.images),
                                        settings.images.max_pixels, rule)


# -- Kafka ----------------------------------------------------------------------------------


def _kafka_unavailable(settings: Settings, exc: KafkaError) -> UserError:
    k = settings.kafka
    return UserError(
        f"Kafka broker at {k.bootstrap_servers} did not answer within "
        f"{k.connect_timeout_ms / 1000:g}s ({type(exc).__name__}); start it (`lookalike "
        "broker`) or set --bootstrap-servers / LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS",
        ExitCode.UNAVAILABLE)


def create_topics(settings: Settings) -> None:
    """Create the event and dead-letter topics if missing (publish and ingest call it first,
    so an absent broker is reported within ``connect_timeout_ms``)."""
    k = settings.kafka
    try:
        ensure_topics(k.bootstrap_servers, {k.topic: k.partitions, k.dlq_topic: 1},
                      bootstrap_timeout_ms=k.connect_timeout_ms)
    except KafkaError as exc:
        raise _kafka_unavailable(settings, exc) from None


def build_producer(settings: Settings, role: str) -> KafkaProducer:
    """A producer (acks=all) named ``<client_id>-<role>``."""
    k = settings.kafka
    try:
        return _dlq_producer(k.bootstrap_servers, f"{k.client_id}-{role}",
                             bootstrap_timeout_ms=k.connect_timeout_ms)
    except KafkaError as exc:
        raise _kafka_unavailable(settings, exc) from None


# -- ingest and reindex ---------------------------------------------------------------------


def decode_workers(settings: Settings, embedder: Any) -> int:
    """Images decoded at once: the setting, else every core when the model runs on a GPU,
    else a quarter of the cores (at least 1). On 2 CPU cores the model keeps ~1.85 of them
    busy; 8 concurrent decoders made it ~25% slower, one decoder keeps up with it."""
    if settings.images.decode_workers is not None:
        return settings.images.decode_workers
    cores = os.cpu_count() or 1
    return cores if getattr(embedder, "on_gpu", False) else max(1, cores // 4)


def build_fetcher(images: ImageSettings) -> ImageFetcher:
    """The one image fetcher configuration, for ingest and reindex alike (egress policy,
    deadline, retries: ingest/fetch.py, docs/hardening.md)."""
    if not images.roots:
        log.info("local image paths are refused: no image root configured "
                 "(--image-root or LOOKALIKE_IMAGES__ROOTS); URLs are fetched")
    for root in images.roots:  # a typo would dead-letter every local photo, one by one
        if not root.is_dir():
            raise UserError(f"image root {root} is not a folder (check --image-root or "
                            "LOOKALIKE_IMAGES__ROOTS)")
    return ImageFetcher(
        images.roots,
        max_bytes=images.max_bytes,
        egress=EgressPolicy(images.allow_networks, images.allow_hosts),
        policy=FetchPolicy(
            deadline_s=images.timeout_s, max_attempts=images.max_attempts,
            backoff_s=images.retry_backoff_s, retry_after_max_s=images.retry_after_max_s,
            per_host=images.per_host_connections, max_redirects=images.max_redirects,
            batch_budget_s=images.batch_fetch_budget_s, host_rest_s=images.host_rest_s,
        ),
    )


def build_runner(
    settings: Settings,
    embedder: Any,
    store: MilvusStore,
    spec: CollectionSpec,
    pool: ThreadPoolExecutor,
    on_batch: Callable[[Batch, RunReport], None] | None = None,
    serving_check: Callable[[], None] | None = None,
) -> Runner:
    """The ingest loop writing into ``spec`` (physical collections: see
    :func:`open_for_writing`); ``serving_check`` (the serving guard's) runs after each batch's
    writes, before its commit, and every few seconds while the loop is idle, so that an
    ingest of a quiet catalog notices a model switch too. The topics must exist
    (:func:`create_topics`)."""
    k, i = settings.kafka, settings.images
    try:
        consumer = build_consumer(
            k.bootstrap_servers, k.group_id, k.client_id,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_records=k.max_poll_records,
            bootstrap_timeout_ms=k.connect_timeout_ms,
        )
    except KafkaError as exc:
        raise _kafka_unavailable(settings, exc) from None
    dlq = DeadLetterQueue(build_producer(settings, "dlq"), k.dlq_topic)
    sink = MilvusSink(store, spec)
    stages = Stages(build_fetcher(i), embedder, sink, dlq, pool,
                    max_pixels=i.max_pixels, decode_workers=decode_workers(settings, embedder),
                    after_write=serving_check, outage=OutageWait(settings.ingest.outage_budget_s))
    config = RunnerConfig(**{  # the runner's limits are IngestSettings fields of the same name
        f.name: getattr(settings.ingest, f.name) for f in fields(RunnerConfig)
        if f.name in IngestSettings.model_fields
    })
    source = KafkaSource(consumer, k.topic)
    # another consumer may have just written the products of an assigned partition
    source.on_assigned = lambda _tps: sink.expect_foreign_writes()
    return Runner(source, Pipeline(stages), config, on_batch=on_batch,
                  on_idle=lambda final: sink.seal_if_idle(final=final), idle_check=serving_check)


def build_reindexer(settings: Settings, embedder: Any, versions: ModelVersions,
                    pool: ThreadPoolExecutor, *, max_passes: int, settle_s: float,
                    switch_changes: int = 50, lease_s: float = DEFAULT_LEASE_S,
                    on_chunk: Callable[[int], None] | None = None) -> Reindexer:
    from ingest.reindex import Reindexer

    return Reindexer(versions, embedder, build_fetcher(settings.images), pool,
                     max_pixels=settings.images.max_pixels,
                     decode_workers=decode_workers(settings, embedder), max_passes=max_passes,
                     settle_s=settle_s, switch_changes=switch_changes, on_chunk=on_chunk,
                     lease_s=lease_s)


class Stoppable(Protocol):
    """What a signal stops: the ingest runner, or a wait after it (``ingest`` lingering)."""

    def stop(self, reason: str = "signal") -> None: ...


@contextmanager
def stop_on_signals(runner: Stoppable) -> Iterator[None]:
    """SIGTERM / Ctrl-C ask the runner to finish its in-flight work and commit; one that came
    while the command started (held: lookalike/stopping.py) asks it at once."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing in-flight batches", signal.Signals(signum).name)
        runner.stop(signal.Signals(signum).name)

    with signals.handling(handler) as previous:
        held = [name for old in previous.values() if (name := hand_over(old)) is not None]
        if held:
            log.info("%s came while starting: stopping before the first poll", held[0])
            runner.stop(held[0])
        yield


# -- photos named on the command line ------------------------------------------------------


def check_photo_bytes(photo: Path, max_bytes: int, what: str) -> None:
    """A user error (``what: N bytes > limit M``) for a local photo over ``max_bytes``
    (:func:`embedding.files.photo_over_limit`, which train's skipped photos name too): the
    query photos of ``search`` and ``compare-prices`` and the photos of ``eval``; one that
    cannot be looked at passes (reading it says why)."""
    reason = photo_over_limit(photo, max_bytes)
    if reason is not None:
        raise UserError(f"{what}: {reason}")


# -- failures -------------------------------------------------------------------------------


def explain(exc: BaseException) -> UserError | None:
    """The one-line error for a client library's exception that escaped a command (a service
    that went away mid-command, an unreadable image); None for anything else (a bug: it
    keeps its traceback)."""
    if isinstance(exc, UserError):
        return exc
    search_api = sys.modules.get("search.api")  # imported by whatever raised this one
    if search_api is not None and isinstance(exc, search_api.StoredPhotoUnreadable):
        return UserError(f"cannot read the stored listing photos: {exc}")  # not the query's
    if isinstance(exc, ItemError):
        return UserError(f"cannot use the image: {exc}")  # "reason: detail"
    if isinstance(exc, TrainedModelError):
        return UserError(f"LOOKALIKE_MODEL__PATH: {exc}")
    if isinstance(exc, WeightsNotInstalledError):  # a variant (setting, model folder) without wheel
        return UserError(str(exc))
    if isinstance(exc, KafkaError):
        return UserError(f"Kafka failed: {type(exc).__name__}: {exc}", ExitCode.UNAVAILABLE)
    if isinstance(exc, StoreError):
        return UserError(f"Milvus failed: {exc}", ExitCode.UNAVAILABLE)
    if isinstance(exc, PortInUseError):  # as `serve --port` on a taken port: choose another
        return UserError(str(exc), ExitCode.USAGE)
    if isinstance(exc, BrokerError):
        return UserError(f"the local broker failed: {exc}", ExitCode.FAILED)
    return None
