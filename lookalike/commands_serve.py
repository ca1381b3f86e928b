"""``lookalike serve`` (the HTTP API) and ``lookalike run`` (ingest and the API in one
process), plus the ingest metrics endpoint of ``lookalike ingest --metrics-port``.

``run`` exists because Milvus Lite allows one process per database file: a second process
opening it aborts. Ingest keeps the main thread (and the stop signals); the API serves from a
background thread; both share one Milvus store and one model.
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from lookalike.app import (
    build_api,
    build_embedder,
    create_topics,
    open_for_writing,
    open_versions,
    require_serving,
)
from lookalike.commands import _run_ingest
from lookalike.errors import UserError
from lookalike.settings import Settings
from serve.metrics import IngestMetrics, publish_model_version
from store.versions import ModelVersions

log = logging.getLogger("lookalike")


def serve_ingest_metrics(port: int, model_version: str) -> IngestMetrics:
    """Ingest series on ``http://0.0.0.0:port/metrics`` (a daemon thread of prometheus_client)."""
    registry = CollectorRegistry()
    publish_model_version(registry, model_version)
    metrics = IngestMetrics(registry)
    start_http_server(port, registry=registry)
    log.info("ingest metrics on :%d/metrics", port)
    return metrics


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from serve.server import BackgroundServer, ServerStartError

    versions = open_versions(settings)
    require_serving(settings, versions)  # before the model's ~10 s load
    embedder = build_embedder(settings)
    registry = CollectorRegistry()
    publish_model_version(registry, embedder.model_version)
    s = settings.serve
    with ThreadPoolExecutor(s.workers, thread_name_prefix="search") as pool:
        app = build_api(settings, embedder, versions, registry, pool)
        log.info("serving %s on http://%s:%d (model %s)", versions.base, s.host, s.port,
                 embedder.model_version)
        try:
            stopped_by = BackgroundServer(app, s.host, s.port).serve_until_signalled()
        except ServerStartError as exc:
            raise UserError(str(exc)) from None
    log.info("API stopped (%s)", stopped_by)
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    create_topics(settings)  # an absent broker is reported before the model loads
    versions = open_versions(settings, create=True)
    return run_with(settings, build_embedder(settings), versions)


def run_with(settings: Settings, embedder: Any, versions: ModelVersions) -> int:
    """Ingest on this (main) thread until SIGTERM/SIGINT, the API on a background thread;
    one Milvus store, one model, one metrics registry for both."""
    from serve.server import BackgroundServer, ServerStartError

    open_for_writing(versions, embedder)  # a first install creates the collections here
    registry = CollectorRegistry()
    publish_model_version(registry, embedder.model_version)
    ingest_metrics = IngestMetrics(registry)
    s = settings.serve
    with ThreadPoolExecutor(s.workers, thread_name_prefix="search") as pool:
        app = build_api(settings, embedder, versions, registry, pool)
        try:
            server = BackgroundServer(app, s.host, s.port).start()
        except ServerStartError as exc:
            raise UserError(str(exc)) from None
        print(f"API on {server.url} ({versions.base}, model {embedder.model_version}); "
              f"ingesting {settings.kafka.topic}", flush=True)
        try:
            return _run_ingest(settings, embedder, versions, until_caught_up=False,
                               metrics=ingest_metrics)
        finally:
            server.stop()
