"""Scale bench: fill Milvus Lite and a Milvus server through the product's own write path,
then time ``ProductSearch.by_vector`` with and without filters and check it against exact
search.

    python bench/scale.py                         # 10k and 100k rows, both engines
    python bench/scale.py --sizes 10000,100000,300000 --engines server
    python bench/scale.py --json                  # one JSON object

What is written: synthetic products shaped like real ones. ~200 Luma photos are embedded once
with the configured model (cached under ``var/cache/``); each product mixes two of them plus
noise, and each of its 1-3 images (2 on average) perturbs the product's vector. Categories have
3 levels (10 x 5 x 4), prices are log-uniform between 5 and 5,000.

How it is written: ``ingest.stages.Stages`` run in ``ingest.runner.Pipeline`` (prepare ->
embed -> write, the batches the runner makes), writing through ``MilvusSink`` into the
collections ``lookalike.app.open_for_writing`` gives, with the state reads the ingest does.
Searches use ``lookalike.app.build_search``, over a store whose raw client records its calls.
Only the image bytes and the model are stand-ins: each image is an inline 8x8 PNG whose colour
is the row number, and the embedder returns that row's synthetic vector.

What is measured, per engine and size:
  * ``write_rows_per_s``: rows / wall time of the whole pipeline, from parsing the Kafka
    records to the last acknowledged write (the events themselves are built before the clock
    starts: a shop's producer makes them, not the consumer; ``apply_rows_per_s``: rows /
    time inside the write stage);
  * ``searchable_s``: from the last acknowledged write until a search finds the last product;
  * per filter (none, a level-1 category ~10%, a price range ~5%, both): ``by_vector`` p50/p95
    (k=10), ``raw_p50_ms`` (every ``MilvusClient.search`` that call sent, replayed alone; None
    when it sent none, as on Milvus Lite answered from the store's in-memory copy),
    ``recall_at_10`` against a numpy brute force (best image per product), ``short_answers``
    (fewer than min(10, matching products) products);
  * on the server, ``indexed_s`` (from the last write until the server reports every row
    indexed) and ``filters_indexed``: the same searches again then. Right after the fill the
    server still seals and indexes the last segments and scans their rows meanwhile; serving
    after a bulk load sees the second figure, serving during one the first;
  * on the server, ``settled_s`` (until the server process also stops its background work:
    compactions, index rebuilds and reloads; :func:`wait_quiet`) and ``filters_settled``:
    the same searches once more, as a catalog that changes at a shop's pace is served;
  * ``engine_rss_mb``: resident memory of the Milvus server's processes; for Milvus Lite,
    how much this process and its children (Lite's own process) grew while filling and
    searching.

The Milvus server is started on ``--milvus-port`` with ``scripts/milvus_server.sh`` and
removed at the end; Lite files live under ``var/scale/`` and are removed too.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.services import (  # noqa: E402
    MilvusServer,
    milvus_available,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from ingest.dlq import DeadLetterQueue  # noqa: E402
from ingest.fetch import ImageFetcher  # noqa: E402
from ingest.outage import OutageWait  # noqa: E402
from ingest.runner import Pipeline  # noqa: E402
from ingest.sink import MilvusSink  # noqa: E402
from ingest.stages import Batch, Stages, parse_records  # noqa: E402
from lookalike.app import (  # noqa: E402
    build_search,
    decode_workers,
    open_for_writing,
    open_versions,
)
from lookalike.settings import Settings  # noqa: E402
from search.filters import SearchFilter  # noqa: E402
from store import MilvusStore  # noqa: E402
from store.versions import ModelVersions  # noqa: E402

log = logging.getLogger("bench.scale")

DEFAULT_LUMA = REPO.parent / "shared" / "data" / "luma"
K = 10
L1 = ["Women", "Men", "Gear", "Home", "Kids", "Beauty", "Sport", "Garden", "Toys", "Books"]
L2_PER_L1, L3_PER_L2 = 5, 4
PRICE_MIN, PRICE_MAX = 5.0, 5000.0
PRICE_WINDOW = float(np.exp(0.05 * np.log(PRICE_MAX / PRICE_MIN)))
"""Upper/lower bound ratio of a price range holding ~5% of log-uniform prices."""
FILTERS = ("none", "category", "price", "both")


# -- synthetic catalog -------------------------------------------------------------------------


def base_vectors(settings: Settings, luma: Path, cache: Path, n: int) -> NDArray[np.float32]:
    """Real embeddings of ``n`` Luma photos with the configured model (cached by version)."""
    from embedding.decode import decode_image
    from lookalike.app import build_embedder

    embedder = build_embedder(settings)
    meta = cache.with_suffix(".json")
    if cache.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("model_version") == embedder.model_version and info.get("n") == n:
            cached: NDArray[np.float32] = np.load(cache).astype(np.float32)
            return cached
    paths = sorted((luma / "images").glob("*.jpg"))[:n]
    images = [decode_image(p.read_bytes(), settings.images.max_pixels,
                           min_size=getattr(embedder, "decode_size", None)) for p in paths]
    vectors = np.asarray(embedder.embed(images), dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    meta.write_text(json.dumps({"model_version": embedder.model_version, "n": len(paths)}))
    return vectors


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


@dataclass
class Catalog:
    """``rows`` image vectors in product order; ``row_product[i]`` is row i's product."""

    vectors: NDArray[np.float32]
    row_product: NDArray[np.int64]
    product_start: NDArray[np.int64]
    categories: list[str]
    prices: NDArray[np.float64]
    centers: NDArray[np.float32]

    @property
    def n_products(self) -> int:
        return len(self.categories)

    def product_id(self, p: int) -> str:
        return f"sp{p:07d}"


def make_catalog(base: NDArray[np.float32], rows: int, seed: int) -> Catalog:
    rng = np.random.default_rng(seed)
    n_base, dim = base.shape
    counts: list[int] = []
    while sum(counts) < rows:
        counts.append(int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])))
    counts[-1] -= sum(counts) - rows
    if counts[-1] == 0:
        counts.pop()
    n_products = len(counts)
    a, b = rng.integers(0, n_base, n_products), rng.integers(0, n_base, n_products)
    w = rng.uniform(0.55, 0.9, (n_products, 1)).astype(np.float32)
    noise = rng.standard_normal((n_products, dim), dtype=np.float32) * (0.25 / np.sqrt(dim))
    centers = _unit(np.maximum(w * base[a] + (1 - w) * base[b] + noise, 0))
    row_product = np.repeat(np.arange(n_products), counts)
    vectors = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 20_000):  # in chunks: 300k rows are 1.8 GB already
        end = min(rows, start + 20_000)
        jitter = rng.standard_normal((end - start, dim), dtype=np.float32) * (0.12 / np.sqrt(dim))
        vectors[start:end] = _unit(np.maximum(centers[row_product[start:end]] + jitter, 0))
    leaves = rng.integers(0, len(L1) * L2_PER_L1 * L3_PER_L2, n_products)
    categories = [
        f"{L1[x // (L2_PER_L1 * L3_PER_L2)]}/Sub{(x // L3_PER_L2) % L2_PER_L1}/Leaf{x % L3_PER_L2}"
        for x in leaves
    ]
    log_prices = rng.uniform(np.log(PRICE_MIN), np.log(PRICE_MAX), n_products)
    prices = np.round(np.exp(log_prices), 2).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return Catalog(vectors, row_product.astype(np.int64), starts, categories, prices, centers)


def row_png(row: int) -> str:
    """An 8x8 PNG whose colour is the row number: decodable bytes, unique per image."""
    colour = (row >> 16 & 255, row >> 8 & 255, row & 255)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class RowEmbedder:
    """Stands in for the model: ``prepare`` reads the row number from the image's colour,
    ``embed_prepared`` returns those rows' synthetic vectors."""

    decode_size: int | None = None

    def __init__(self, vectors: NDArray[np.float32], model_version: str) -> None:
        self._vectors = vectors
        self.model_version = model_version
        self.dim = int(vectors.shape[1])

    def prepare(self, image: Any) -> NDArray[np.int64]:
        r, g, b = image.convert("RGB").getpixel((0, 0))
        return np.array([r << 16 | g << 8 | b], dtype=np.int64)

    def embed_prepared(self, batch: NDArray[np.int64]) -> NDArray[np.float32]:
        return self._vectors[batch.reshape(-1)]

    def embed(self, images: Sequence[Any]) -> NDArray[np.float32]:
        return self.embed_prepared(np.stack([self.prepare(i) for i in images]))


class _NoProducer:
    """The dead-letter producer: nothing here is invalid, so sending is a bench bug."""

    def send(self, *_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the scale bench dead-lettered an event")

    def flush(self, timeout: float | None = None) -> None:
        return None


def events_of(catalog: Catalog, products: range, version: int) -> list[tuple[bytes, bytes]]:
    out = []
    for p in products:
        start = int(catalog.product_start[p])
        end = int(catalog.product_start[p + 1]) if p + 1 < catalog.n_products else len(
            catalog.row_product)
        pid = catalog.product_id(p)
        event = {
            "type": "product.upserted", "product_id": pid, "version": version,
            "title": f"Synthetic product {p}", "category": catalog.categories[p],
            "price": float(catalog.prices[p]), "currency": "USD", "seller_id": "scale",
            "images": [{"data": row_png(r)} for r in range(start, end)],
        }
        out.append((pid.encode(), json.dumps(event).encode()))
    return out


def consumer_records(messages: list[tuple[bytes, bytes]], offset: int) -> list[Any]:
    from kafka.consumer.fetcher import ConsumerRecord

    now = int(time.time() * 1000)
    return [ConsumerRecord("scale", 0, None, offset + i, now, 0, key, value, [], None,
                           len(key), len(value), 0) for i, (key, value) in enumerate(messages)]


# -- one engine, one size ----------------------------------------------------------------------


class RecordingClient:
    """Wraps the store's raw client and remembers every ``search`` call passed through it, so
    that each product call can be replayed as the raw ``MilvusClient.search`` calls it sent."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.searches: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.searches.append((args, kwargs))
        return self._client.search(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def fill(settings: Settings, catalog: Catalog, versions: ModelVersions,
         embedder: RowEmbedder) -> dict[str, float]:
    """Write the catalog through Stages in the runner's Pipeline; returns timings."""
    target, _guard = open_for_writing(versions, embedder)
    sink = MilvusSink(versions.store, target)
    dlq = DeadLetterQueue(_NoProducer(), "scale.dlq")
    g = settings.ingest
    per_batch = max(1, min(g.batch_events, g.batch_images // 2))
    # the shop's producer builds the events, not the consumer: made before the clock starts
    batches = [events_of(catalog, range(first, min(first + per_batch, catalog.n_products)), 1)
               for first in range(0, catalog.n_products, per_batch)]
    started = time.perf_counter()
    write_s = 0.0
    rows = 0
    with ThreadPoolExecutor(settings.images.fetch_workers) as pool:
        stages = Stages(ImageFetcher([]), embedder, sink, dlq, pool,
                        max_pixels=settings.images.max_pixels,
                        decode_workers=decode_workers(settings, embedder),
                        outage=OutageWait(g.outage_budget_s))
        pipeline = Pipeline(stages)
        in_flight = 0
        for seq, messages in enumerate(batches):
            records = consumer_records(messages, seq * per_batch)
            items, n_images = parse_records(records)
            pipeline.submit(Batch(seq, records, items, n_images, time.monotonic()))
            in_flight += 1
            while in_flight >= g.max_in_flight:
                rows_, w = _collect(pipeline.done.get())
                rows, write_s, in_flight = rows + rows_, write_s + w, in_flight - 1
        while in_flight:
            rows_, w = _collect(pipeline.done.get())
            rows, write_s, in_flight = rows + rows_, write_s + w, in_flight - 1
        pipeline.close()
        sink.seal_if_idle(final=True)  # as the runner does after its last batch
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "write_s": write_s}


def _collect(batch: Batch) -> tuple[int, float]:
    if batch.error is not None:
        raise RuntimeError(f"batch {batch.seq} failed: {batch.error!r}") from batch.error
    return batch.stats.rows_upserted, batch.stats.write_s


def exact_top(catalog: Catalog, query: NDArray[np.float32], mask: NDArray[np.bool_],
              k: int) -> tuple[list[str], int]:
    """Best-image-per-product brute force over the rows in ``mask``: (top k product ids,
    matching products)."""
    scores = catalog.vectors @ query
    scores = np.where(mask, scores, -np.inf)
    per_product = np.maximum.reduceat(scores, catalog.product_start)
    matching = int(np.isfinite(per_product).sum())
    top = np.argsort(-per_product, kind="stable")[: min(k, matching)]
    return [catalog.product_id(int(p)) for p in top], matching


@dataclass
class QuerySet:
    vectors: NDArray[np.float32]
    filters: dict[str, list[SearchFilter | None]]
    masks: dict[str, list[NDArray[np.bool_]]]


def make_queries(catalog: Catalog, n: int, seed: int) -> QuerySet:
    rng = np.random.default_rng(seed + 1)
    dim = catalog.vectors.shape[1]
    picks = rng.integers(0, catalog.n_products, n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * (0.2 / np.sqrt(dim))
    vectors = _unit(np.maximum(catalog.centers[picks] + noise, 0))
    row_l1 = np.array([c.split("/")[0] for c in catalog.categories])[catalog.row_product]
    row_price = catalog.prices[catalog.row_product]
    filters: dict[str, list[SearchFilter | None]] = {f: [] for f in FILTERS}
    masks: dict[str, list[NDArray[np.bool_]]] = {f: [] for f in FILTERS}
    everything = np.ones(len(catalog.row_product), dtype=bool)
    for _ in range(n):
        l1 = str(rng.choice(L1))
        low = float(np.exp(rng.uniform(np.log(PRICE_MIN), np.log(PRICE_MAX / PRICE_WINDOW))))
        high = round(low * PRICE_WINDOW, 2)
        low = round(low, 2)
        cat_mask = row_l1 == l1
        price_mask = (row_price >= low) & (row_price <= high)
        for name, flt, mask in (
            ("none", None, everything),
            ("category", SearchFilter(categories=[l1]), cat_mask),
            ("price", SearchFilter(min_price=low, max_price=high), price_mask),
            ("both", SearchFilter(categories=[l1], min_price=low, max_price=high),
             cat_mask & price_mask),
        ):
            filters[name].append(flt)
            masks[name].append(mask)
    return QuerySet(vectors, filters, masks)


def measure_search(searcher: Any, recorder: RecordingClient, catalog: Catalog,
                   queries: QuerySet) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name in FILTERS:
        product_ms: list[float] = []
        raw_ms: list[float] = []
        recalls: list[float] = []
        short = 0
        for q, flt, mask in zip(queries.vectors, queries.filters[name], queries.masks[name],
                                strict=True):
            recorder.searches.clear()
            t0 = time.perf_counter()
            hits = searcher.by_vector(q, k=K, filter=flt)
            product_ms.append((time.perf_counter() - t0) * 1000)
            calls = list(recorder.searches)
            t0 = time.perf_counter()
            for args, kwargs in calls:
                recorder._client.search(*args, **kwargs)
            if calls:  # none when the store answered from its Lite copy
                raw_ms.append((time.perf_counter() - t0) * 1000)
            exact, matching = exact_top(catalog, q, mask, K)
            got = [h.product_id for h in hits]
            want = min(K, matching)
            short += len(got) < want
            if want:
                recalls.append(len(set(got) & set(exact)) / want)
        out[name] = {
            "p50_ms": round(float(np.percentile(product_ms, 50)), 2),
            "p95_ms": round(float(np.percentile(product_ms, 95)), 2),
            "raw_p50_ms": round(float(np.percentile(raw_ms, 50)), 2) if raw_ms else None,
            "recall_at_10": round(float(np.mean(recalls)) if recalls else 1.0, 4),
            "short_answers": short,
            "queries": len(product_ms),
        }
    return out


def engine_rss(server: MilvusServer | None, baseline: int) -> float:
    """MiB resident in the engine: the server process tree, or for Milvus Lite (in a child
    process by default, else on threads in this one) how much this process and its children
    grew since ``baseline`` (the store's in-memory copy included)."""
    if server is not None:
        pid = server.server_pid()
        return tree_rss_bytes(pid) / 2**20 if pid else float("nan")
    return (tree_rss_bytes(os.getpid()) - baseline) / 2**20


def run_one(engine: str, uri: str, rows: int, base: NDArray[np.float32], args: argparse.Namespace,
            server: MilvusServer | None, model_version: str) -> dict[str, Any]:
    catalog = make_catalog(base, rows, args.seed)
    queries = make_queries(catalog, args.queries, args.seed)
    settings = Settings()
    collection = f"scale_{rows}"
    settings = settings.model_copy(update={"milvus": settings.milvus.model_copy(
        update={"uri": uri, "collection": collection})})
    embedder = RowEmbedder(catalog.vectors, model_version)
    baseline = tree_rss_bytes(os.getpid())
    versions = open_versions(settings, create=True)
    store = versions.store
    try:
        filled = fill(settings, catalog, versions, embedder)
        done = time.perf_counter()
        recorder = RecordingClient(store.client)
        recorded = MilvusStore(recorder, engine=store.engine, uri=store.uri)
        searcher = build_search(settings, embedder, ModelVersions(recorded, versions.base))
        last = catalog.n_products - 1
        last_vector = catalog.vectors[-1]
        searchable_s = None
        while time.perf_counter() - done < 120:
            hits = searcher.by_vector(last_vector, k=1)
            if hits and hits[0].product_id == catalog.product_id(last):
                searchable_s = time.perf_counter() - done
                break
            time.sleep(0.05)
        filters = measure_search(searcher, recorder, catalog, queries)
        indexed_s, filters_indexed = None, None
        settled_s, filters_settled = None, None
        if engine == "server":  # steady state: the same searches once every row is indexed
            indexed_s = wait_indexed(store.client, collection, done)
            if indexed_s is not None:
                filters_indexed = measure_search(searcher, recorder, catalog, queries)
            pid = server.server_pid() if server is not None else None
            settled_s = wait_quiet(partial(tree_cpu_seconds, pid), done) if pid else None
            if settled_s is not None:
                filters_settled = measure_search(searcher, recorder, catalog, queries)
        rss = engine_rss(server if engine == "server" else None, baseline)
    finally:
        if not args.keep:
            for name in store.client.list_collections():
                if name.startswith(collection):
                    store.drop_collection(name)
        store.close()
    return {
        "rows": int(filled["rows"]),
        "products": catalog.n_products,
        "write_rows_per_s": round(filled["rows"] / filled["seconds"], 1),
        "apply_rows_per_s": round(filled["rows"] / max(filled["write_s"], 1e-9), 1),
        "write_s": round(filled["seconds"], 1),
        "searchable_s": round(searchable_s, 3) if searchable_s is not None else None,
        "engine_rss_mb": round(rss, 0),
        "filters": filters,
        "indexed_s": round(indexed_s, 1) if indexed_s is not None else None,
        "filters_indexed": filters_indexed,
        "settled_s": round(settled_s, 1) if settled_s is not None else None,
        "filters_settled": filters_settled,
    }


def wait_indexed(client: Any, prefix: str, since: float, timeout_s: float = 600.0
                 ) -> float | None:
    """Seconds from ``since`` until the server reports every row of the ``prefix``
    collections indexed (None when it does not say, or not within ``timeout_s``). Right
    after the fill the server still seals and indexes the last segments and scans their
    rows meanwhile: the figures "right after the fill" and "indexed" are both reported."""
    while time.perf_counter() - since < timeout_s:
        pending = False
        for name in client.list_collections():
            if not name.startswith(prefix):
                continue
            for index in client.list_indexes(name):
                info = client.describe_index(name, index)
                if "indexed_rows" not in info or "total_rows" not in info:
                    return None
                pending |= int(info["indexed_rows"]) < int(info["total_rows"])
        if not pending:
            return time.perf_counter() - since
        time.sleep(1.0)
    return None


QUIET_CORE_SHARE = 0.15
"""The server counts as settled once it uses less than this share of one core (an idle
2.3.5 standalone server ticks along at ~5 %)."""


def wait_quiet(cpu_seconds: Callable[[], float], since: float, window_s: float = 5.0,
               timeout_s: float = 900.0, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.perf_counter) -> float | None:
    """Seconds from ``since`` until the server, having reported its index done, also stops
    working in the background (compacting segments, rebuilding their indexes, loading the
    results): ``cpu_seconds`` grows by less than ``QUIET_CORE_SHARE`` of one core over a
    ``window_s`` window. None when it does not settle within ``timeout_s``. Searches meet
    those background jobs for minutes after a bulk load (p95 up to 0.4 s), and never in a
    catalog that changes at the pace of a shop."""
    while clock() - since < timeout_s:
        before, start = cpu_seconds(), clock()
        sleep(window_s)
        if (cpu_seconds() - before) / max(clock() - start, 1e-9) < QUIET_CORE_SHARE:
            return clock() - since
    return None


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    for engine, sizes in results.items():
        for size, r in sizes.items():
            print(f"{engine} rows={size} products={r['products']} "
                  f"write_rows_per_s={r['write_rows_per_s']} "
                  f"apply_rows_per_s={r['apply_rows_per_s']} write_s={r['write_s']} "
                  f"searchable_s={r['searchable_s']} engine_rss_mb={r['engine_rss_mb']}")
            _print_filters(r["filters"])
            if r.get("filters_indexed"):
                print(f"  once indexed ({r['indexed_s']} s after the last write):")
                _print_filters(r["filters_indexed"])
            if r.get("filters_settled"):
                print(f"  settled ({r['settled_s']} s after the last write, the server idle):")
                _print_filters(r["filters_settled"])
            sys.stdout.flush()


def _print_filters(filters: dict[str, dict[str, Any]]) -> None:
    for name, f in filters.items():
        raw = "-" if f["raw_p50_ms"] is None else f"{f['raw_p50_ms']:.1f}ms"
        print(f"  {name:<9} p50={f['p50_ms']:>8.1f}ms p95={f['p95_ms']:>8.1f}ms "
              f"raw_p50={raw:>9} recall@10={f['recall_at_10']:.3f} "
              f"short={f['short_answers']}/{f['queries']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000",
                   help="image rows per run, comma-separated (300000 on request)")
    p.add_argument("--engines", default="lite,server")
    p.add_argument("--queries", type=int, default=50, help="queries per filter")
    p.add_argument("--base-images", type=int, default=200,
                   help="Luma photos embedded as the seeds of the synthetic vectors")
    p.add_argument("--luma", type=Path, default=Path(os.environ.get("LOOKALIKE_LUMA",
                                                                    DEFAULT_LUMA)))
    p.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "scale_base.npy")
    p.add_argument("--workdir", type=Path, default=REPO / "var" / "scale")
    p.add_argument("--milvus-port", type=int, default=19591)
    p.add_argument("--etcd-port", type=int, default=18092,
                   help="the Milvus server's embedded etcd (clients; peers on the next port)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--keep", action="store_true", help="keep the collections and files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.engines = [e for e in args.engines.split(",") if e]
    if set(args.engines) - {"lite", "server"}:
        p.error("engines are lite and server")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if "server" in args.engines and not milvus_available():
        print("scale: the server engine needs the milvus package (set MILVUS_VENV, see "
              "scripts/milvus_server.sh), or run --engines lite", file=sys.stderr)
        return 2
    settings = Settings()
    base = base_vectors(settings, args.luma, args.cache, args.base_images)
    info = json.loads(args.cache.with_suffix(".json").read_text())
    model_version = f"{info['model_version']}+scale-synthetic"
    workdir = (args.workdir / time.strftime("%H%M%S")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for engine in args.engines:
            server = None
            if engine == "server":
                server = MilvusServer(workdir / "milvus", args.milvus_port, args.etcd_port)
                server.start()
            try:
                for rows in args.sizes:
                    uri = server.uri if server else str(workdir / f"lite_{rows}.db")
                    print(f"scale: {engine} {rows} rows ...", file=sys.stderr, flush=True)
                    results.setdefault(engine, {})[str(rows)] = run_one(
                        engine, uri, rows, base, args, server, model_version)
                    if not args.json:
                        print_table({engine: {str(rows): results[engine][str(rows)]}})
            finally:
                if server is not None:
                    server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
