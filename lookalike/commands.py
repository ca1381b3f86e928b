"""What each subcommand does, built from settings (see cli.py for the arguments)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from embedding.decode import ImageDecodeError, decode_image
from ingest.publish import CatalogError, load_catalog, publish_events
from ingest.runner import IngestError, RunReport
from ingest.stages import Batch
from lookalike.app import (
    build_embedder,
    build_producer,
    build_reindexer,
    build_runner,
    build_search,
    check_photo_bytes,
    create_topics,
    open_for_writing,
    open_versions,
    require_product,
    require_serving,
    stop_on_signals,
    warming_up,
)
from lookalike.broker import LocalBroker, port_open
from lookalike.errors import ExitCode, UserError
from lookalike.settings import Settings, kafka_addresses
from schema.errors import Reason, clipped
from schema.events import SCHEME
from schema.versions import (
    DEFAULT_LEASE_S,
    ModelRetiredError,
    ModelVersionError,
    shown,
    state_name,
)
from search.api import (
    MAX_QUERY_VECTORS,
    RERANK_MIN_INLIERS,
    Hit,
    ProductNotFound,
    ProductSearch,
    StoredPhotoUnreadable,
)
from search.filters import SearchFilter
from store import MilvusStore
from store.expressions import check_string
from store.lease import LeaseHeldError
from store.versions import ModelVersions

if TYPE_CHECKING:
    from serve.metrics import IngestMetrics

log = logging.getLogger("lookalike")


def _print_json(items: Sequence[BaseModel]) -> None:
    json.dump([_clipped(i.model_dump(mode="json")) for i in items], sys.stdout, indent=2)
    sys.stdout.write("\n")


def _clipped(item: dict[str, Any]) -> dict[str, Any]:
    """A cosine similarity as printed: float32 rounding made a photo's own listing
    1.0000001192092896, a cosine above 1."""
    similarity = item.get("similarity")
    if isinstance(similarity, float) and similarity > 1.0:
        item["similarity"] = 1.0
    return item


def _price(price: float) -> str:
    """A stored price as text: two decimals, or up to the four a price may have (0.0049 was
    printed 0.00, the cheapest listing at no price)."""
    text = f"{price:.4f}".rstrip("0")
    decimals = len(text.partition(".")[2])
    return f"{price:.{max(2, decimals)}f}"


def _print_hits(items: Sequence[Any], score_name: str = "score",
                empty: str = "no matches") -> None:
    """One line per hit: rank, cosine, product, price, category, title, and for a search's
    hit that the geometric re-ranking moved up its evidence (``(geometry: 34 inliers)``):
    the order is the re-ranking's, so the cosines alone looked unsorted."""
    if not items:
        print(f"  ({empty})")
    for rank, hit in enumerate(items, 1):
        score = getattr(hit, score_name)
        inliers = hit.inliers if isinstance(hit, Hit) else None  # a PriceMatch's are evidence
        geometry = (f"  (geometry: {inliers} inliers)"
                    if inliers is not None and inliers >= RERANK_MIN_INLIERS else "")
        print(f"  {rank:>2}. {score:.3f}  {hit.product_id:<24} {_price(hit.price):>9} "
              f"{hit.currency}  {hit.category[:34]:<34}  {hit.title[:48]}{geometry}")


def _search_filter(args: argparse.Namespace) -> SearchFilter | None:
    try:
        search_filter = SearchFilter(
            categories=args.category or [], min_price=args.min_price,
            max_price=args.max_price, currency=args.currency,
        )
    except ValidationError as exc:
        raise UserError(f"invalid filter: {exc.errors(include_url=False)[0]['msg']}") from None
    return search_filter


def ingest(settings: Settings, args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        served = None
        if args.metrics_port is not None:  # first: a taken port is reported at once
            from lookalike.commands_serve import serving_ingest_metrics

            served = stack.enter_context(serving_ingest_metrics(settings.ingest.metrics_host,
                                                                args.metrics_port))
        elif args.metrics_host is not None:
            raise UserError("--metrics-host needs --metrics-port (no metrics are served "
                            "without one)")
        create_topics(settings)  # an absent broker is reported before the model loads
        versions = open_versions(settings, create=True)
        embedder = build_embedder(settings)
        metrics = None
        if served is not None:
            from serve.metrics import publish_model_version

            registry, metrics = served
            publish_model_version(registry, embedder.model_version)
        with warming_up(embedder):
            report = _ingest(settings, embedder, versions,
                             until_caught_up=args.until_caught_up, metrics=metrics)
        linger_s = settings.ingest.metrics_linger_s
        if served is not None and report.stopped_by == "caught_up" and linger_s > 0:
            log.info("caught up; metrics stay up %gs (ingest.metrics_linger_s)", linger_s)
            _Linger().wait(linger_s)
        return ExitCode.OK


class _Linger:
    """A wait that SIGTERM or Ctrl-C ends, as they end ingest (``stop_on_signals``): the
    metrics endpoint of ``ingest --until-caught-up`` stays up that long after the run, so
    a scrape reads its final counts (it exited before any scrape could)."""

    def __init__(self) -> None:
        self._done = threading.Event()

    def stop(self, reason: str = "signal") -> None:
        self._done.set()

    def wait(self, seconds: float) -> None:
        with stop_on_signals(self):
            self._done.wait(seconds)


def _run_ingest(settings: Settings, embedder: Any, versions: ModelVersions, *,
                until_caught_up: bool, total: int | None = None,
                metrics: IngestMetrics | None = None) -> int:
    """Ingest into the physical collections of the embedder's model (store/versions.py);
    exits 3, without committing the batch that noticed it, when a switch retires that model.
    ``metrics``: counted after each committed batch (serve/metrics.py)."""
    _ingest(settings, embedder, versions, until_caught_up=until_caught_up, total=total,
            metrics=metrics)
    return ExitCode.OK


def _ingest(settings: Settings, embedder: Any, versions: ModelVersions, *,
            until_caught_up: bool, total: int | None = None,
            metrics: IngestMetrics | None = None) -> RunReport:
    """:func:`_run_ingest`, returning what the run did."""
    target, guard = open_for_writing(versions, embedder)
    bar = tqdm(total=total, unit="event", desc="ingest", disable=not sys.stderr.isatty())

    def on_batch(batch: Batch, _report: RunReport) -> None:
        bar.update(len(batch.records))
        if metrics is not None:
            metrics.observe_batch(batch)

    with ThreadPoolExecutor(settings.images.fetch_workers, thread_name_prefix="fetch") as pool:
        runner = build_runner(settings, embedder, versions.store, target, pool, on_batch,
                              serving_check=guard.check)
        if metrics is not None:
            runner.on_lag = metrics.observe_lag  # on the poll thread, every few turns
        try:
            with stop_on_signals(runner):
                report = runner.run(until_caught_up=until_caught_up)
        except IngestError as exc:
            if isinstance(exc.__cause__, ModelRetiredError):
                raise UserError(f"ingest stopped: the model switched. {exc.__cause__}",
                                ExitCode.MODEL_SWITCHED) from None
            raise UserError(str(exc), ExitCode.FAILED) from None  # "ingest stopped: ..."
        finally:
            bar.close()
    log.info("ingest finished stopped_by=%s batches=%d seconds=%.1f %s",
             report.stopped_by, report.batches, report.seconds, report.totals.summary())
    refused = paths_refused(settings, report.totals)
    if refused is not None:
        log.warning("%s", refused)
    return report


def _roots(settings: Settings) -> str:
    """The image roots as a message names them: "none set", or the folders."""
    return ", ".join(str(root) for root in settings.images.roots) or "none set"


def paths_refused(settings: Settings, totals: Any) -> str | None:
    """The one line a run ends with when events were dead-lettered because their photos are
    local paths outside the image roots (``path_not_allowed``), saying how to let them in;
    None when none were. Ingest does not stop for them (a hostile event may name any path),
    and each one's own warning, dozens of lines up, is easy to miss."""
    count = totals.dead_images.get(Reason.PATH_NOT_ALLOWED.value, 0)
    if not count:
        return None
    return (f"{count} event(s) dead-lettered: their photos are local paths outside "
            f"LOOKALIKE_IMAGES__ROOTS ({_roots(settings)}): pass --image-root DIR or set it, "
            f"then publish them again or replay the dead letters ({settings.kafka.dlq_topic})")


def publish(settings: Settings, args: argparse.Namespace) -> int:
    try:
        events = load_catalog(args.catalog, version=args.version, default_seller=args.seller_id)
    except (CatalogError, OSError) as exc:
        raise UserError(str(exc)) from None
    code = _publish(settings, events)
    unrooted = paths_unrooted(settings, events, args.catalog)  # once published: a failure
    if unrooted is not None:                                   # stays one line
        log.warning("%s", unrooted)
    return code


def paths_unrooted(settings: Settings, events: Sequence[Any], catalog: Path) -> str | None:
    """A warning when the catalog names local photo paths and no image root is set: ingest
    refuses such paths (it reads no file outside the roots, whatever an event names) and
    dead-letters their events. Publish reads no photo itself, so it only says so, once."""
    folders = {str(Path(image.path).parent) for event in events for image in event.images
               if image.path is not None}
    if not folders or settings.images.roots:
        return None
    local = sum(any(image.path is not None for image in event.images) for event in events)
    common = os.path.commonpath(sorted(folders))
    root = shlex.quote(common) if common != os.path.sep else "DIR"
    return (f"{local} of {len(events)} product(s) in {catalog} name local photo paths and no "
            f"image root is set: ingest will refuse them (path_not_allowed) unless it runs "
            f"with --image-root {root} (or LOOKALIKE_IMAGES__ROOTS)")


def _publish(settings: Settings, events: list[Any]) -> int:
    k = settings.kafka
    create_topics(settings)
    producer = build_producer(settings, "publish")
    try:
        with tqdm(total=len(events), unit="event", desc="publish",
                  disable=not sys.stderr.isatty()) as bar:
            sent = publish_events(producer, k.topic, events, progress=bar.update)
    finally:
        producer.close()
    log.info("published events=%d topic=%s", sent, k.topic)
    return ExitCode.OK


def _searcher(settings: Settings, product_id: str | None = None) -> ProductSearch:
    """Open the store first (a missing database or collection, or a ``product_id`` it does
    not hold, fails before the model's ~10 s load), then the model, then the searcher."""
    versions = open_versions(settings)
    require_serving(settings, versions)
    if product_id is not None:
        require_product(settings, versions, product_id)
    return build_search(settings, build_embedder(settings), versions)


def _query_images(settings: Settings, images: Sequence[Path]) -> list[bytes]:
    """Read and decode every query image before anything heavy is built, so an empty,
    truncated, non-image or oversized file fails at once with its reason. The bytes (not the
    decoded picture) go to the search, which decodes them at the model's scale as ingest does.
    """
    if len(images) > MAX_QUERY_VECTORS:
        raise UserError(f"at most {MAX_QUERY_VECTORS} images per search, got {len(images)}")
    out = []
    for image in images:
        if not image.exists():
            given = str(image).replace(":/", "://", 1)  # argparse's Path ate a URL's '/'
            if SCHEME.match(given):
                raise UserError(f"{given} is a URL: this command reads local files (download "
                                "the photo first)")
            raise UserError(f"no such image: {image}")
        if not image.is_file():  # a folder, a FIFO (which would wait), a device
            raise UserError(f"cannot use {image} as a query: not a regular file")
        check_photo_bytes(image, settings.images.max_bytes, f"cannot use {image} as a query")
        data = image.read_bytes()
        try:
            decode_image(data, settings.images.max_pixels)
        except ImageDecodeError as exc:
            raise UserError(f"cannot use {image} as a query: {exc}") from None
        out.append(data)
    return out


def search(settings: Settings, args: argparse.Namespace) -> int:
    search_filter = _search_filter(args)
    images = _query_images(settings, args.image)
    hits = _searcher(settings).by_images(images, k=settings.search.k, filter=search_filter,
                                         match=args.match)
    if args.json:
        _print_json(hits)
    else:
        _print_hits(hits)
    return ExitCode.OK


def compare_prices(settings: Settings, args: argparse.Namespace) -> int:
    if (args.image is None) == (args.product_id is None):
        raise UserError("give either IMAGE or --product-id")
    if args.product_id is not None:  # an id the store's expressions refuse, before the model
        try:
            check_string(args.product_id, "--product-id")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    search_filter = _search_filter(args)
    image = None if args.image is None else _query_images(settings, [args.image])[0]
    searcher = _searcher(settings, args.product_id)
    try:
        matches = searcher.compare_prices(
            image=image, product_id=args.product_id,
            threshold=settings.search.compare_threshold, k=settings.search.compare_k,
            filter=search_filter,
        )
    except ProductNotFound as exc:
        raise UserError(str(exc)) from None
    except StoredPhotoUnreadable as exc:
        raise UserError(listings_unreadable(settings, exc)) from None
    if args.json:
        _print_json(matches)
    else:
        _print_hits(matches, "similarity")
    return ExitCode.OK


def listings_unreadable(settings: Settings, exc: StoredPhotoUnreadable) -> str:
    """Why price comparison could not verify: the stored listing photos, not the query (exit
    2: the same command fails again until the roots or the catalog change). Local paths
    outside the image roots say how to set them."""
    if exc.reason is not Reason.PATH_NOT_ALLOWED:
        return f"cannot compare prices: {exc}"
    first = f"; the first: {shown(exc.ref)}" if exc.ref else ""
    return (f"cannot compare prices: {exc.unread} (path_not_allowed: outside the image roots: "
            f"{_roots(settings)}; pass --image-root DIR or set LOOKALIKE_IMAGES__ROOTS){first}")


def demo(settings: Settings, args: argparse.Namespace) -> int:
    from lookalike.demo_catalog import write_fashion_mnist_catalog

    synthetic = args.catalog is None
    catalog = args.catalog or write_fashion_mnist_catalog(
        Path("var/demo/fmnist"), n_products=args.n_products
    )
    try:
        events = load_catalog(catalog, default_seller="demo-shop")
    except (CatalogError, OSError) as exc:
        raise UserError(str(exc)) from None
    settings = settings.model_copy(update={
        "images": settings.images.model_copy(
            update={"roots": [*settings.images.roots, catalog.resolve().parent]}),
        "kafka": settings.kafka.model_copy(
            update={"group_id": f"lookalike-demo-{int(time.time())}"}),
    })
    local: LocalBroker | None = None
    host, port = kafka_addresses(settings.kafka.bootstrap_servers)[0]
    if args.bootstrap_servers is None and not port_open(host, port):
        local = LocalBroker().start()
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
            update={"bootstrap_servers": local.bootstrap_servers})})
        print(f"started the local Tansu broker on {local.bootstrap_servers}")
    try:
        return _demo(settings, events, synthetic)
    finally:
        if local is not None:
            local.stop()


def _demo(settings: Settings, events: list[Any], synthetic: bool) -> int:
    versions = open_versions(settings, create=True)
    embedder = build_embedder(settings)
    with warming_up(embedder):
        return _demo_steps(settings, events, synthetic, versions, embedder)


def _demo_steps(settings: Settings, events: list[Any], synthetic: bool,
                versions: ModelVersions, embedder: Any) -> int:
    resales = sum(e.product_id.endswith("-resale") for e in events)
    print(f"catalog: {len(events)} products, {sum(len(e.images) for e in events)} images; "
          f"Milvus: {settings.milvus.uri} collection {versions.base}; "
          f"model {embedder.model_version}")
    if resales:
        print(f"note: {resales} of the products are '-resale' listings of others at another "
              "price, for the price comparison")
    if synthetic:
        print("note: Fashion-MNIST prices are SYNTHETIC (attributes.price_source=synthetic)")
    held = versions.serving_unloaded()
    if held is not None:
        products = _counts(versions.store, held.physical)[1]
        print(f"note: {settings.milvus.uri} already holds {products} products in "
              f"{versions.base}: this catalog is added to them (--milvus-uri NEW.db starts "
              "afresh)")
    _publish(settings, events)
    started = time.monotonic()
    report = _ingest(settings, embedder, versions, until_caught_up=True, total=len(events))
    if report.stopped_by in ("SIGINT", "SIGTERM"):  # not "nothing indexed": the user stopped it
        raise UserError(f"stopped by {report.stopped_by} before it finished",
                        ExitCode.INTERRUPTED if report.stopped_by == "SIGINT"
                        else ExitCode.TERMINATED)
    totals = report.totals
    if not totals.applied:
        raise UserError(_nothing_indexed(settings, totals), ExitCode.FAILED)
    print(f"ingested in {time.monotonic() - started:.1f}s")
    searcher = build_search(settings, embedder, versions, read_your_writes=True)
    by_category: dict[str, Any] = {}
    for event in events:
        by_category.setdefault(event.category, event)
    for event in list(by_category.values())[:3]:
        image = event.images[-1]
        print(f"\nquery: {image.reference}  ({event.title}, {event.category})")
        _print_hits(searcher.by_image(image.path or image.reference, k=5))
    first = events[0]
    cheap = SearchFilter(categories=[first.category], max_price=float(first.price))
    print(f"\nfiltered: category={first.category!r} price<={first.price} for "
          f"{first.images[0].reference}")
    _print_hits(searcher.by_image(first.images[0].path or "", k=5, filter=cheap))
    resold = next((e for e in events if e.product_id.endswith("-resale")), first)
    print(f"\nprice comparison for {resold.product_id} (threshold "
          f"{settings.search.compare_threshold}):")
    try:
        _print_hits(searcher.compare_prices(
            product_id=resold.product_id, threshold=settings.search.compare_threshold,
            k=settings.search.compare_k,
        ), "similarity", "no other listing of this item in the catalog")
    except ProductNotFound:
        print(f"  ({resold.product_id} was not indexed: its event was dead-lettered; "
              f"dead letters: {_reasons(totals)})")
    print(f"\n{try_it_yourself(settings, resold.product_id)}")
    return ExitCode.OK


def _reasons(totals: Any) -> str:
    """The dead letters' reasons, and their images' when images failed."""
    def counts(counter: Any) -> str:
        return ", ".join(f"{reason} x{n}" for reason, n in sorted(counter.items()))

    images = f"; images: {counts(totals.images_failed)}" if totals.images_failed else ""
    return (counts(totals.dlq_reasons) or "none") + images


def _nothing_indexed(settings: Settings, totals: Any) -> str:
    """Why the demo has nothing to search: every event was dead-lettered."""
    hint = ""
    if "path_not_allowed" in totals.images_failed:
        roots = ", ".join(str(Path(r).resolve()) for r in settings.images.roots)
        hint = (f"; the demo reads photos under {roots} (its catalog's folder, as the links "
                "in it resolve): add the photos' folder with --image-root DIR")
    return (f"no product of the catalog was indexed: {totals.dead_lettered} event(s) "
            f"dead-lettered ({_reasons(totals)}){hint}")


def try_it_yourself(settings: Settings, product_id: str) -> str:
    """The demo's closing hint: the same price comparison by hand. Listing photos are read
    only under the allowed roots (docs/hardening.md), and the demo added its catalog's
    folder to them for its own run only, so the command sets it again."""
    roots = json.dumps([str(Path(r).resolve()) for r in settings.images.roots])
    program = Path(sys.argv[0])  # `make demo` runs .venv/bin/lookalike: name that one
    command = (os.path.relpath(program) if program.name == "lookalike" and program.is_file()
               else "lookalike")
    return ("try it yourself (listing photos are read only under LOOKALIKE_IMAGES__ROOTS):\n"
            f"  LOOKALIKE_IMAGES__ROOTS={shlex.quote(roots)} {shlex.quote(command)} compare-prices "
            f"--milvus-uri {shlex.quote(settings.milvus.uri)} --product-id "
            f"{shlex.quote(product_id)}")


def reindex(settings: Settings, args: argparse.Namespace) -> int:
    """Re-embed the serving catalog with the configured model, then switch the aliases."""
    from ingest.reindex import ReindexError

    versions = open_versions(settings)
    embedder = build_embedder(settings)
    bar = tqdm(unit="product", desc="reindex", disable=not sys.stderr.isatty())
    with ThreadPoolExecutor(settings.images.fetch_workers, thread_name_prefix="fetch") as pool:
        reindexer = build_reindexer(settings, embedder, versions, pool,
                                    max_passes=args.max_passes, settle_s=args.settle_s,
                                    switch_changes=args.switch_changes, lease_s=args.lease_s,
                                    on_chunk=bar.update)
        try:
            report = reindexer.run(switch=not args.no_switch, allow_failures=args.allow_failures)
        except ReindexError as exc:
            raise UserError(str(exc)) from None
        except LeaseHeldError as exc:
            raise _lease_held(exc) from None
        finally:
            bar.close()
    for product_id, problems in sorted(report.failures.items()):
        for problem in problems:
            print(f"  failed {product_id}: {problem.reason} {clipped(problem.image_ref, 120)} "
                  f"({clipped(problem.detail, 160)})")
    if report.imageless:
        print(f"  listed with no image in model {report.model_version} (every image failed; "
              f"publish them again): {' '.join(sorted(report.imageless))}")
    print(f"reindex {report.summary()}")
    if report.refused:
        raise UserError(f"not switched: {report.refused}", ExitCode.FAILED)
    if report.switched:
        print(f"{versions.base} now serves model {report.model_version} ({report.target}). "
              "Restart `lookalike ingest` with this model: the old one stops at its next batch, "
              "or within seconds while no events come.")
    elif report.caught_up:
        print(f"model {report.model_version} already served {versions.base}; ran the catch-up "
              f"pass its switch owed, from {', '.join(report.caught_up)}")
    else:
        print(f"built {report.target}; not switched (--no-switch)")
    return ExitCode.OK


def _lease_held(exc: LeaseHeldError) -> UserError:
    """Exit 4, as a Milvus Lite database or a train folder held by another process: the same
    command succeeds once the holder finished (or its lease expired)."""
    return UserError(f"another `lookalike reindex` or `lookalike models drop` is running: "
                     f"{exc}; wait for it (the lease of a killed run expires by itself), or "
                     "run `lookalike models unlock` if that run is known to be dead",
                     ExitCode.UNAVAILABLE)


def models(settings: Settings, args: argparse.Namespace) -> int:
    """Which model serves, and the other versions in the registry (``models drop``:
    :func:`drop_model`)."""
    if getattr(args, "models_command", None) == "drop":
        return drop_model(settings, args)
    if getattr(args, "models_command", None) == "unlock":
        return unlock(settings, args)
    versions = open_versions(settings)
    store, base = versions.store, versions.base
    serving = versions.load_serving()
    if serving is None:
        print(f"{base}: does not exist yet (the first ingest creates it)")
        return ExitCode.OK
    kind = "pre-alias collection" if serving.legacy else "alias"
    print(f"{base} ({kind}) -> {serving.physical}: serving model {serving.model_version}")
    for entry in versions.entries():
        images, products, delisted = _counts(store, entry.physical)
        mark = "*" if entry.physical == serving.physical else " "
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.created_at_ms / 1000))
        print(f" {mark} {entry.status.value:<8} {entry.model_version:<60} dim={entry.dim:<5} "
              f"images={images:<8} products={products:<8} delisted={delisted:<6} "
              f"{entry.physical}  created {created}Z")
    if serving.legacy:
        images, products, delisted = _counts(store, serving.physical)
        print(f" * legacy   {serving.model_version}  images={images} products={products} "
              f"delisted={delisted}")
    for entry in versions.catch_ups_owed():
        print(f"catch-up owed from {entry.physical} (a switch was cut short after the aliases "
              f"moved): run `lookalike reindex` with model {serving.model_version}")
    return ExitCode.OK


def drop_model(settings: Settings, args: argparse.Namespace) -> int:
    """Drop an old model version's collections and registry entry, holding the reindex lease
    so that no reindex fills or switches to that pair meanwhile."""
    versions = open_versions(settings)
    if versions.serving_unloaded() is None and not versions.entries():
        raise UserError(f"{versions.base}: does not exist yet (the first ingest creates it); "
                        "no model version to drop")
    try:
        versions.droppable(args.version, force=args.force)  # a refusal creates nothing
        with versions.reindex_lease("models-drop", ttl_s=DEFAULT_LEASE_S):
            entry = versions.drop_version(args.version, force=args.force)
    except LeaseHeldError as exc:
        raise _lease_held(exc) from None
    except ModelVersionError as exc:
        raise UserError(str(exc)) from None
    print(f"dropped model {entry.model_version} ({entry.status.value}): {entry.physical}, "
          f"{state_name(entry.physical)} and its registry entry")
    return ExitCode.OK


def unlock(settings: Settings, _args: argparse.Namespace) -> int:
    """Remove the reindex lease whoever holds it, naming the holder: for a run known to be
    dead whose lease has not expired yet (``--lease-s`` up to 6 hours). A live holder loses
    it at its next renewal and stops without switching (``not switched: ... lease ...``)."""
    versions = open_versions(settings)
    lease = versions.reindex_lease("models-unlock", ttl_s=DEFAULT_LEASE_S, confirm_s=0)
    holder, after = lease.remove()
    if holder is None:
        print(f"{versions.base}: no reindex lease is held; nothing to unlock")
        return ExitCode.OK
    if after is not None and after.owner == holder.owner:
        print(f"{versions.base}: the reindex lease of {holder.owner} was renewed meanwhile, "
              "so that run is alive; left in place (run unlock again only if it is known to "
              "be dead)", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if after is not None:
        print(f"{versions.base}: the reindex lease of {holder.owner} was taken over meanwhile;"
              f" left in place, now held by {after.describe()}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    state = ("expired" if holder.expires_at_ms <= time.time() * 1000 else
             "not expired: if that run is alive, it stops at its next renewal without switching")
    print(f"{versions.base}: removed the reindex lease of {holder.describe()} ({state})")
    return ExitCode.OK


def _counts(store: MilvusStore, physical: str) -> tuple[str, str, str]:
    """Image rows, listed products and delisted ones (whose state rows stay as tombstones,
    so a late older upsert cannot bring them back) of a physical pair: exact when loaded,
    else ``~`` and the stored row count (which counts deleted rows until compaction), the
    states' for products (listed or not) and ``?`` for delisted."""
    states = f"{physical}_state"
    if not store.has_collection(physical):
        images = "0"
    elif store.is_loaded(physical):
        images = str(store.count(physical, consistency="Strong"))
    else:
        images = f"~{store.stored_rows(physical)}"
    if not store.has_collection(states):
        return images, "0", "0"
    if not store.is_loaded(states):
        return images, f"~{store.stored_rows(states)}", "?"
    listed, delisted = (store.count(states, consistency="Strong", where=f"listed == {flag}")
                        for flag in ("true", "false"))
    return images, str(listed), str(delisted)
