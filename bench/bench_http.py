"""What the HTTP API adds to a search (``make bench-http``).

Prints p50/p95 of ``POST /v1/search`` by vector (JSON) and by image (multipart upload) next to
the same searches made in-process on the same ``ProductSearch``, and the throughput of 4
concurrent HTTP clients. Target: HTTP by-vector p50 within 5 ms of in-process on Milvus Lite.

The catalog is synthetic (random unit vectors under the real model's version and dimension),
as only latency is measured; queries by image embed a Luma photo with the real model. Uses a
fresh Milvus Lite file unless --milvus-uri is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest.plan import WritePlan  # noqa: E402
from ingest.sink import MilvusSink  # noqa: E402
from lookalike.app import (  # noqa: E402
    build_api,
    build_embedder,
    build_search,
    open_for_writing,
    open_versions,
)
from lookalike.settings import MilvusSettings, Settings  # noqa: E402
from schema.records import ImageRecord, category_levels, image_pk  # noqa: E402
from serve.server import BackgroundServer  # noqa: E402

LUMA = REPO.parent / "shared" / "data" / "luma"
CATEGORIES = ["Men/Tops/Tees", "Men/Bottoms/Pants", "Women/Tops/Jackets", "Gear/Bags"]


def fill(versions: Any, embedder: Any, n: int) -> None:
    """``n`` products of random unit vectors in the model's own collections."""
    target, _ = open_for_writing(versions, embedder)
    rng = np.random.default_rng(0)
    sink = MilvusSink(versions.store, target)
    for start in range(0, n, 500):
        rows = []
        for i in range(start, min(n, start + 500)):
            v = rng.standard_normal(embedder.dim).astype(np.float32)
            category = CATEGORIES[i % len(CATEGORIES)]
            rows.append(ImageRecord(
                pk=image_pk(f"p{i}", "k0"), product_id=f"p{i}", image_key="k0",
                category=category, **category_levels(category), price=float(5 + i % 100),
                currency="USD", title=f"Product {i}", seller_id="bench",
                image_ref=f"https://img.example/{i}.jpg", model_version=embedder.model_version,
                version=1, updated_at_ms=0, vector=[float(x) for x in v / np.linalg.norm(v)]))
        sink.apply(WritePlan(upserts=rows))


def paired(inproc: Callable[[], Any], http: Callable[[], Any], n: int,
           warm: int = 3) -> tuple[list[float], list[float]]:
    """Alternate the two calls, so load from other processes hits both alike."""
    for _ in range(warm):
        inproc()
        http()
    a, b = [], []
    for _ in range(n):
        for fn, out in ((inproc, a), (http, b)):
            started = time.perf_counter()
            fn()
            out.append((time.perf_counter() - started) * 1000)
    return a, b


def pct(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):7.2f} ms   p95 {np.percentile(ms, 95):7.2f} ms"


def throughput(call: Callable[[requests.Session], Any], clients: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(i: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                call(session)
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--milvus-uri", help="default: a fresh Milvus Lite file")
    p.add_argument("--products", type=int, default=2000)
    p.add_argument("--n-vector", type=int, default=300)
    p.add_argument("--n-image", type=int, default=30)
    p.add_argument("--seconds", type=float, default=10.0, help="per throughput run")
    p.add_argument("--image", type=Path, default=LUMA / "images" / "mh01-gray_back.jpg")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-http-")
    uri = args.milvus_uri or str(Path(tmp) / "bench.db")
    settings = Settings(milvus=MilvusSettings(uri=uri, collection="bench_http"))
    embedder = build_embedder(settings)
    versions = open_versions(settings, create=True)
    fill(versions, embedder, args.products)
    search = build_search(settings, embedder, versions)
    photo = args.image.read_bytes()
    vector = [float(x) for x in np.asarray(embedder.embed([_load(photo)]))[0]]
    figures: dict[str, Any] = {"products": args.products}

    from prometheus_client import CollectorRegistry

    with ThreadPoolExecutor(settings.serve.workers, thread_name_prefix="search") as pool:
        app = build_api(settings, embedder, versions, CollectorRegistry(), pool)
        with BackgroundServer(app) as server, requests.Session() as session:
            url = f"{server.url}/v1/search"

            def by_vector(s: requests.Session = session) -> None:
                r = s.post(url, json={"vector": vector, "k": 10})
                assert r.status_code == 200, r.text

            def by_image(s: requests.Session = session) -> None:
                r = s.post(url, files={"image": ("q.jpg", photo, "image/jpeg")},
                           data={"k": "10"})
                assert r.status_code == 200, r.text

            figures["inproc_vector_ms"], figures["http_vector_ms"] = paired(
                lambda: search.by_vector(vector, k=10), by_vector, args.n_vector)
            figures["inproc_image_ms"], figures["http_image_ms"] = paired(
                lambda: search.by_image(photo, k=10), by_image, args.n_image)
            figures["http_vector_4_clients_rps"] = throughput(by_vector, 4, args.seconds)
            figures["http_image_4_clients_rps"] = throughput(by_image, 4, args.seconds)

    print(f"POST /v1/search on {args.products} products ({uri}), model {embedder.model_version}"
          f"; HTTP and in-process calls alternate")
    for kind in ("vector", "image"):
        inproc, http = figures[f"inproc_{kind}_ms"], figures[f"http_{kind}_ms"]
        print(f"  by {kind:<6} in-process {pct(inproc)}")
        print(f"  by {kind:<6} HTTP       {pct(http)}   (+{np.median(http) - np.median(inproc):.2f}"
              " ms at p50)")
    print(f"  4 concurrent clients: by vector {figures['http_vector_4_clients_rps']:.0f} req/s, "
          f"by image {figures['http_image_4_clients_rps']:.1f} req/s")
    gap = float(np.median(figures["http_vector_ms"]) - np.median(figures["inproc_vector_ms"]))
    print(f"  target: HTTP by-vector p50 within 5 ms of in-process: {gap:.2f} ms -> "
          f"{'met' if gap <= 5 else 'NOT met'}")
    if args.json:
        summary = {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95)))
                   if isinstance(v, list) else v for k, v in figures.items()}
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def _load(data: bytes) -> Any:
    from embedding.decode import decode_image

    return decode_image(data, 40_000_000)


if __name__ == "__main__":
    sys.exit(main())
