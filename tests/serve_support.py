"""Builds the HTTP app over Milvus Lite with a fake embedder: no model, no broker."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from prometheus_client import CollectorRegistry

from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from schema.collection import CollectionSpec
from search.api import ProductSearch
from search.verify import SameItemVerifier
from serve.api import ServeConfig, create_app
from serve.health import Readiness
from serve.metrics import SearchMetrics, TimedEmbedder
from store import MilvusStore, ensure_collections
from tests.fakes import SimilarityOnlyVerifier
from tests.milvus_support import FakeEmbedder, record, rotate

# product -> (category, price, currency, seller, query colour, similarity to that colour's vector)
CATALOG = {
    "red-tee": ("Men/Tops/Tees", 20.0, "USD", "s1", 0.99),
    "red-tee-resale": ("Men/Tops/Tees", 12.0, "USD", "s2", 0.98),
    "red-dress": ("Women/Dresses", 55.0, "USD", "s1", 0.90),
    "red-top-eur": ("Men/Tops", 30.0, "EUR", "s3", 0.80),
    "far": ("Men/Tops", 1.0, "USD", "s1", 0.10),
}
RED = (200, 10, 10)


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Served:
    app: Any
    search: ProductSearch
    registry: CollectorRegistry
    embedder: FakeEmbedder
    spec: CollectionSpec
    image_root: Path


def build_served(tmp: Path, *, max_pixels: int = 40_000_000, max_upload_bytes: int = 200_000,
                 search: Any = None, config: ServeConfig | None = None,
                 probed_store: Any = None,
                 catalog: dict[str, tuple[str, float, str, str, float]] | None = None,
                 verifier: SameItemVerifier | None = None, workers: int = 4
                 ) -> Iterator[Served]:
    """The app over a small catalog whose vectors sit at known angles to the RED query;
    ``config``: limits other than the defaults (its roots, threshold and upload cap are
    replaced by the catalog's); ``probed_store``: the store the probes ask, when not the
    catalog's (one that hangs or whose process died); ``catalog``: another than
    :data:`CATALOG` (its ids are the images' file names, "/" written as "_"); ``verifier``:
    price comparison's, when not a :class:`SimilarityOnlyVerifier`; ``workers``: the size of
    the search pool."""
    store = MilvusStore.open(str(tmp / "serve.db"))
    spec = CollectionSpec(name="serve_api", dim=8)
    ensure_collections(store, spec)
    root = tmp / "images"
    root.mkdir()
    records = []
    for i, (pid, (cat, price, cur, seller, sim)) in enumerate((catalog or CATALOG).items()):
        path = root / f"{pid.replace('/', '_')}.png"
        path.write_bytes(png((i * 40, 100, 100), 8))
        rec = record(pid, "k0", rotate(sim, towards=1 + i), category=cat, price=price,
                     currency=cur, seller_id=seller)
        records.append(rec.model_copy(update={"image_ref": str(path)}))
    MilvusSink(store, spec).apply(WritePlan(upserts=records))
    embedder = FakeEmbedder()
    embedder.picture(RED, [1.0] + [0.0] * 7)
    embedder.picture((0, 0, 200), [0.0] * 7 + [1.0])
    registry = CollectorRegistry()
    metrics = SearchMetrics(registry)
    timed = TimedEmbedder(embedder)
    real = ProductSearch(store, spec, timed, consistency="Strong", max_pixels=max_pixels,
                         verifier=verifier or SimilarityOnlyVerifier())
    with ThreadPoolExecutor(workers) as pool:
        app = create_app(search or real, embedder=timed, store=store,
                         readiness=Readiness(probed_store or store, spec.name, lambda: True,
                                             model_version=embedder.model_version),
                         registry=registry, metrics=metrics, pool=pool,
                         config=replace(config or ServeConfig(), image_roots=[root],
                                        compare_threshold=0.90,
                                        max_upload_bytes=max_upload_bytes))
        yield Served(app, real, registry, embedder, spec, root)
    store.close()
