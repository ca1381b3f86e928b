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

from lookalike.app import build_api, build_embedder, build_milvus
from lookalike.commands import UserError, _run_ingest
from lookalike.settings import Settings
from search.api import ModelMismatchError
from serve.metrics import IngestMetrics, publish_model_version
from store import MilvusStore

log = logging.getLogger("lookalike")


def serve_ingest_metrics(port: int, model_version: str) -> IngestMetrics:
    """Ingest series on ``http://0.0.0.0:port/metrics`` (a daemon thread of prometheus_client)."""
    registry = CollectorRegistry()
    publish_model_version(registry, model_version)
    metrics = IngestMetrics(registry)
    start_http_server(port, registry=registry)
    log.info("ingest metrics on :%d/metrics", port)
    return metrics


def _api(settings: Settings, embedder: Any, store: MilvusStore, spec: Any,
         registry: CollectorRegistry, pool: ThreadPoolExecutor) -> Any:
    try:
        return build_api(settings, embedder, store, spec, registry, pool)
    except ModelMismatchError as exc:
        raise UserError(str(exc)) from None


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    embedder = build_embedder(settings)
    store, spec = build_milvus(settings, embedder.dim, embedder.model_version)
    registry = CollectorRegistry()
    publish_model_version(registry, embedder.model_version)
    s = settings.serve
    with ThreadPoolExecutor(s.workers, thread_name_prefix="search") as pool:
        app = _api(settings, embedder, store, spec, registry, pool)
        log.info("serving %s on http://%s:%d (model %s)", spec.name, s.host, s.port,
                 embedder.model_version)
        uvicorn.run(app, host=s.host, port=s.port, log_config=None, access_log=False)
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_with(settings, build_embedder(settings))


def run_with(settings: Settings, embedder: Any) -> int:
    """Ingest on this (main) thread until SIGTERM/SIGINT, the API on a background thread;
    one Milvus store, one model, one metrics registry for both."""
    from serve.server import BackgroundServer

    store, spec = build_milvus(settings, embedder.dim, embedder.model_version)
    registry = CollectorRegistry()
    publish_model_version(registry, embedder.model_version)
    ingest_metrics = IngestMetrics(registry)
    s = settings.serve
    with ThreadPoolExecutor(s.workers, thread_name_prefix="search") as pool:
        app = _api(settings, embedder, store, spec, registry, pool)
        server = BackgroundServer(app, s.host, s.port).start()
        print(f"API on {server.url} ({spec.name}, model {embedder.model_version}); "
              f"ingesting {settings.kafka.topic}", flush=True)
        try:
            return _run_ingest(settings, embedder, store, spec, until_caught_up=False,
                               metrics=ingest_metrics)
        finally:
            server.stop()
