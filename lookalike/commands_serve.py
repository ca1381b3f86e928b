"""``lookalike serve`` (the HTTP API) and ``lookalike run`` (ingest and the API in one
process), plus the ingest metrics endpoint of ``lookalike ingest --metrics-port``.

``run`` exists because Milvus Lite allows one process per database file: a second process
opening it aborts. Ingest keeps the main thread (and the stop signals); the API serves from a
background thread; both share one Milvus store and one model.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from lookalike.app import (
    build_api,
    build_embedder,
    create_topics,
    open_for_writing,
    open_versions,
    require_serving,
    warming_up,
)
from lookalike.commands import _run_ingest
from lookalike.errors import ExitCode, UserError
from lookalike.settings import ServeSettings, Settings
from serve.metrics import ConnectionMetrics, IngestMetrics, publish_model_version
from store.versions import ModelVersions

if TYPE_CHECKING:
    from serve.server import BackgroundServer

log = logging.getLogger("lookalike")


@contextmanager
def serving_ingest_metrics(host: str, port: int
                           ) -> Iterator[tuple[CollectorRegistry, IngestMetrics]]:
    """Ingest series on ``http://host:port/metrics`` (a daemon thread of prometheus_client)
    for the block; ``host`` is ``ingest.metrics_host``, loopback unless set (it listened on
    every interface, whatever ``serve.host`` said). Ingest opens it first, so a taken port or
    a wrong host is one line at once (it was an ``OSError`` traceback after the model loaded);
    the model version joins the registry when the model is built (``publish_model_version``)."""
    from serve.server import address, why_not_listening

    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except (OSError, UnicodeError) as exc:  # as `serve --host/--port`: a bad argument, exit 2
        taken = getattr(exc, "errno", None) == errno.EADDRINUSE
        raise UserError(f"cannot serve metrics on {address(host, port)}: "
                        f"{why_not_listening(exc, host, port)} (choose another "
                        f"{'--metrics-port' if taken else '--metrics-host'})") from None
    log.info("ingest metrics on %s/metrics", address(host, port))
    try:
        yield registry, metrics
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _listening(s: ServeSettings) -> Iterator[list[socket.socket]]:
    """The API's sockets, bound first: a host or a port it cannot listen on is one line before
    the model loads, and never a process exiting while TensorFlow warms the model up on a
    daemon thread (which aborts it: exit 134, "exception not rethrown")."""
    from serve.server import ServerStartError, listen

    try:
        sockets = listen(s.host, s.port)
    except ServerStartError as exc:
        raise UserError(str(exc)) from None
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _start_failed(exc: Exception) -> UserError:
    return UserError(str(exc), ExitCode.FAILED)


def _api_server(app: Any, s: ServeSettings, sockets: list[socket.socket],
                registry: CollectorRegistry) -> BackgroundServer:
    """The API's server on ``sockets``, with the ``serve`` settings' connection limits; the
    connections it closes are counted into ``registry``."""
    from serve.server import BackgroundServer

    return BackgroundServer(app, s.host, s.port, sockets, max_connections=s.max_connections,
                            header_timeout_s=s.header_timeout_s,
                            metrics=ConnectionMetrics(registry))


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from serve.server import ServerStartError

    s = settings.serve
    with _listening(s) as sockets:
        versions = open_versions(settings)
        require_serving(settings, versions)  # before the model's ~10 s load
        embedder = build_embedder(settings)
        registry = CollectorRegistry()
        publish_model_version(registry, embedder.model_version)
        with ThreadPoolExecutor(s.workers, thread_name_prefix="search") as pool, \
                warming_up(embedder) as model_warm:
            app = build_api(settings, embedder, versions, registry, pool, model_warm)
            server = _api_server(app, s, sockets, registry)
            log.info("serving %s on %s (model %s)", versions.base, server.url,
                     embedder.model_version)
            try:
                stopped_by = server.serve_until_signalled()
            except ServerStartError as exc:
                raise _start_failed(exc) from None
    log.info("API stopped (%s)", stopped_by)
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    with _listening(settings.serve) as sockets:  # first: before topics, database and model
        create_topics(settings)  # an absent broker is reported before the model loads
        versions = open_versions(settings, create=True)
        return run_with(settings, build_embedder(settings), versions, sockets)


def run_with(settings: Settings, embedder: Any, versions: ModelVersions,
             sockets: list[socket.socket] | None = None) -> int:
    """Ingest on this (main) thread until SIGTERM/SIGINT, the API on a background thread;
    one Milvus store, one model, one metrics registry for both. ``sockets``: the API's,
    bound by the caller (else bound here)."""
    if sockets is None:
        with _listening(settings.serve) as bound:
            return run_with(settings, embedder, versions, bound)
    open_for_writing(versions, embedder)  # a first install creates the collections here
    registry = CollectorRegistry()
    publish_model_version(registry, embedder.model_version)
    ingest_metrics = IngestMetrics(registry)
    with ThreadPoolExecutor(settings.serve.workers, thread_name_prefix="search") as pool, \
            warming_up(embedder) as model_warm:
        app = build_api(settings, embedder, versions, registry, pool, model_warm)
        return _ingest_while_serving(settings, embedder, versions, app, sockets,
                                     registry, ingest_metrics)


def _ingest_while_serving(settings: Settings, embedder: Any, versions: ModelVersions,
                          app: Any, sockets: list[socket.socket],
                          registry: CollectorRegistry, metrics: IngestMetrics) -> int:
    from serve.server import ServerStartError

    try:
        server = _api_server(app, settings.serve, sockets, registry).start()
    except ServerStartError as exc:
        raise _start_failed(exc) from None
    print(f"API on {server.url} ({versions.base}, model {embedder.model_version}); "
          f"ingesting {settings.kafka.topic}", flush=True)
    try:
        return _run_ingest(settings, embedder, versions, until_caught_up=False, metrics=metrics)
    finally:
        server.stop()
