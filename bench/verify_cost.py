"""What price comparison costs per query, stage by stage (``make bench-verify``).

Indexes a same-item protocol's gallery (``gallery.jsonl`` + ``queries.jsonl``, as
``lookalike eval --task same-item`` reads them; ``bench/protocols_same_item.py`` writes
them) into a scratch Milvus Lite, runs its first ``--queries`` query photos through
``compare_prices`` once to fill the verifier's feature cache, then again, timed: per query,
process CPU time (all threads) and wall time of the whole call and of its stages:

* ``embed``: the query photo, its quarter turns and cut-outs through the model;
* ``search``: the vector searches;
* ``query_features``: SIFT (and the product mask) of the query photo;
* ``first_page``: keypoint matching and verification of the first ``k`` (20) candidates,
  the budget issue 8 sets (~150 ms of CPU);
* ``beyond``: the second page, the look below a family of look-alikes, corroboration;
* ``vouched``: the listings below the candidates compared with the listing that matched
  (``ProductSearch._vouched_below``; its searches also count under ``search``).

The stages are timed by wrapping the product's own functions (no copy of its logic), so the
decisions are those of ``compare_prices``; the precision and recall printed with them are
the eval's. Figures and the round they come from: docs/matching.md, "Speed round" and "Second
speed round".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import search.api as search_api  # noqa: E402
import search.verify as verify  # noqa: E402
from evaluation.cache import EmbeddingCache  # noqa: E402
from evaluation.protocol import load_gallery, load_queries  # noqa: E402
from evaluation.run import EmbedStats, index_products  # noqa: E402
from evaluation.same_item import SameItemCounts, gallery_roots  # noqa: E402
from ingest.fetch import ImageFetcher  # noqa: E402
from lookalike.app import build_embedder, build_verifier, open_store, scratch_milvus  # noqa: E402
from lookalike.settings import Settings  # noqa: E402
from schema.collection import CollectionSpec  # noqa: E402
from search.api import ProductSearch  # noqa: E402

STAGES = ("embed", "search", "query_features", "first_page", "beyond", "vouched")


class StageClock:
    """CPU and wall seconds per stage, for the current query. ``beyond`` counts what runs
    inside the second page, the deeper look and corroboration; calls they make to the
    verifier are theirs, not the first page's."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.depth = 0

    def reset(self) -> None:
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.wall = dict.fromkeys(STAGES, 0.0)

    def wrap(self, stage: str, call: Callable[..., Any], *, first_page: bool = False,
             beyond: bool = False) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if first_page and self.depth:
                return call(*args, **kwargs)
            self.depth += beyond
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.cpu[stage] += time.process_time() - cpu
                self.wall[stage] += time.perf_counter() - wall
                self.depth -= beyond
        return timed


def instrument(clock: StageClock) -> None:
    ProductSearch._embed_pictures = clock.wrap(  # type: ignore[method-assign]
        "embed", ProductSearch._embed_pictures)
    ProductSearch._search = clock.wrap("search", ProductSearch._search)  # type: ignore
    ProductSearch._rows = clock.wrap("search", ProductSearch._rows)  # type: ignore
    search_api.photo_features = clock.wrap("query_features", search_api.photo_features)
    verifier = verify.SameItemVerifier
    verifier.verify = clock.wrap("first_page", verifier.verify,  # type: ignore[method-assign]
                                 first_page=True)
    verifier.keypoint_matches = clock.wrap(  # type: ignore[method-assign]
        "first_page", verifier.keypoint_matches, first_page=True)
    ProductSearch._vouched_below = clock.wrap(  # type: ignore[method-assign]
        "vouched", ProductSearch._vouched_below, beyond=True)
    for name in ("_second_page", "_look_deeper", "_corroborate"):
        setattr(search_api, name, clock.wrap("beyond", getattr(search_api, name), beyond=True))


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 1),
            "p50": round(float(np.percentile(values, 50)), 1),
            "p95": round(float(np.percentile(values, 95)), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", type=Path,
                        default=REPO / "var" / "protocols" / "same-item-fresh",
                        help="a same-item protocol folder (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=60, help="first N queries (60)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (args.protocol / "gallery.jsonl").is_file():
        print(f"{args.protocol}: no gallery.jsonl; write the protocols first: "
              "python bench/protocols_same_item.py --out var/protocols", file=sys.stderr)
        return 2
    settings = Settings()
    products = load_gallery(args.protocol / "gallery.jsonl")
    queries = load_queries(args.protocol / "queries.jsonl", products)[: args.queries]
    clock = StageClock()
    instrument(clock)
    with tempfile.TemporaryDirectory() as tmp, \
            scratch_milvus(settings, str(Path(tmp) / "bench.db")) as scratch:
        store = open_store(scratch, create=True)
        embedder = build_embedder(settings)
        spec = CollectionSpec(name=scratch.milvus.collection, dim=embedder.dim)
        index_products(products, embedder, store, spec,
                       EmbeddingCache(REPO / "var" / "cache" / "emb.sqlite"),
                       max_pixels=settings.images.max_pixels, stats=EmbedStats())
        searcher = ProductSearch(store, spec, embedder, consistency="Strong",
                                 max_pixels=settings.images.max_pixels,
                                 # The configured rule, reading the gallery's folders.
                                 verifier=build_verifier(
                                     settings, ImageFetcher(gallery_roots(products))),
                                 family_depth=settings.search.family_depth)
        for query in queries:  # fills the verifier's cache of listing features
            searcher.compare_prices(image=query.image)
        cpu: dict[str, list[float]] = {s: [] for s in ("total", *STAGES)}
        wall: dict[str, list[float]] = {s: [] for s in ("total", *STAGES)}
        counts = SameItemCounts()
        for query in queries:
            clock.reset()
            started_cpu, started = time.process_time(), time.perf_counter()
            matches = searcher.compare_prices(image=query.image)
            cpu["total"].append(1000 * (time.process_time() - started_cpu))
            wall["total"].append(1000 * (time.perf_counter() - started))
            for stage in STAGES:
                cpu[stage].append(1000 * clock.cpu[stage])
                wall[stage].append(1000 * clock.wall[stage])
            counts.add({m.product_id for m in matches}, set(query.relevant))
    report = {"protocol": args.protocol.name, "n_queries": len(queries),
              "outcome": {k: round(v, 4) for k, v in counts.summary().items()},
              "cpu_ms": {s: summary(v) for s, v in cpu.items()},
              "wall_ms": {s: summary(v) for s, v in wall.items()}}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['protocol']}, {len(queries)} queries, warm cache: {report['outcome']}")
    print(f"{'ms per query':<16}{'CPU mean':>10}{'p50':>8}{'p95':>8}{'wall mean':>11}{'p95':>8}")
    for stage in ("total", *STAGES):
        c, w = report["cpu_ms"][stage], report["wall_ms"][stage]
        print(f"{stage:<16}{c['mean']:>10.0f}{c['p50']:>8.0f}{c['p95']:>8.0f}"
              f"{w['mean']:>11.0f}{w['p95']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
