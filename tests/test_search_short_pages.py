"""A filtered search returns the filter's k best products even when the index answers a short
page (an HNSW index under a selective filter drops matches far from the query)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from schema.collection import CollectionSpec
from search.api import ProductSearch
from search.filters import SearchFilter
from store import MilvusStore, ensure_collections, parse_engine
from tests import milvus_support
from tests.milvus_support import (
    DIM,
    FakeEmbedder,
    Milvus,
    random_unit,
    record,
    rotate,
    unit,
)

milvus = milvus_support.milvus
spec = milvus_support.spec

FIELDS = ("product_id", "title", "category", "price", "currency", "seller_id", "image_ref",
          "image_key")


def _row(pid: str, vector: list[float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {f: "x" for f in FIELDS} | {"product_id": pid, "price": 1.0}
    if vector is not None:
        row["vector"] = vector
    return row


class ShortPages:
    """A server whose index answers from ``pages`` in turn; queries answer ``count`` and
    ``rows`` (the exactly scored matches)."""

    def __init__(self, pages: list[list[tuple[str, float]]], count: int,
                 rows: list[dict[str, Any]]) -> None:
        self.pages, self.count, self.rows = pages, count, rows
        self.filters: list[str] = []

    def has_collection(self, name: str, **kw: Any) -> bool:
        return False

    def search(self, collection: str, **kw: Any) -> list[list[dict[str, Any]]]:
        self.filters.append(kw["filter"])
        page = self.pages.pop(0) if self.pages else []
        return [[{"distance": score, "entity": _row(pid)} for pid, score in page]]

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        if kw["output_fields"] == ["count(*)"]:
            return [{"count(*)": self.count}]
        return [dict(r) for r in self.rows]


def _search(client: ShortPages) -> ProductSearch:
    store = MilvusStore(client, engine=parse_engine("v2.3.5"))
    return ProductSearch(store, CollectionSpec(name="c", dim=DIM), FakeEmbedder(),
                         consistency="Strong", max_pixels=milvus_support.MAX_PIXELS)


def test_a_short_page_is_searched_again_without_the_products_found() -> None:
    client = ShortPages([[("a", 0.9)], [("b", 0.8), ("c", 0.7)]], count=0, rows=[])
    hits = _search(client).by_vector(unit(0), k=3, filter=SearchFilter(categories=["X"]))
    assert [h.product_id for h in hits] == ["a", "b", "c"]
    assert 'product_id not in ["a"]' in client.filters[1]


def test_matches_the_index_keeps_missing_are_scored_exactly() -> None:
    far = [_row("f1", rotate(0.1)), _row("f2", rotate(0.3)), _row("a", unit(0))]
    client = ShortPages([[("a", 1.0)]], count=2, rows=far)
    search = _search(client)
    hits = search.by_vector(unit(0), k=3, filter=SearchFilter(categories=["X"]))
    assert [h.product_id for h in hits] == ["a", "f2", "f1"]
    assert [round(h.score, 3) for h in hits] == [1.0, 0.3, 0.1]
    assert search.short_page_recoveries == 1


def test_far_matches_of_a_selective_filter_fill_k_on_each_engine(
    milvus: Milvus, spec: CollectionSpec
) -> None:
    """2,000 rows near the query in one category; the 12 products of another category all
    lie far from it: a search filtered on that category still returns 10 of them, best
    first."""
    ensure_collections(milvus.store, spec)
    near = [record(f"n{i}", "k", rotate(0.99 - i * 1e-5, towards=1 + i % 6))
            for i in range(2000)]
    far = [record(f"f{i}", "k", rotate(0.05 + 0.01 * i, towards=7), category="Women/Shoes")
           for i in range(12)]
    sink = MilvusSink(milvus.store, spec)
    sink.apply(WritePlan(upserts=near + far))
    sink.flush()
    search = ProductSearch(milvus.store, spec, FakeEmbedder(), consistency="Strong",
                           max_pixels=milvus_support.MAX_PIXELS)
    hits = search.by_vector(unit(0), k=10, filter=SearchFilter(categories=["Women/Shoes"]))
    assert [h.product_id for h in hits] == [f"f{i}" for i in range(11, 1, -1)]


def test_a_category_filter_is_exact_over_an_indexed_segment(
    milvus: Milvus, spec: CollectionSpec
) -> None:
    """3,000 rows, sealed and indexed: nine tenths lean towards the queries, a tenth (one
    category) lie anywhere. Every search filtered on that category returns its exact top 10
    from full pages. On a server the index is first shown to answer (a one-list probe misses
    rows), so the exactness is the index's: IVF_FLAT probes every list under a filter
    (store.engine; probing the unfiltered 32 of 1,024 lists found ~0.7 of them)."""
    rng = np.random.default_rng(7)
    lean = np.asarray(unit(0), dtype=np.float32) * 1.5
    shoes = rng.random(3000) < 0.1
    vectors = np.asarray([random_unit(rng) for _ in shoes], dtype=np.float32)
    vectors[~shoes] += lean
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ensure_collections(milvus.store, spec)
    sink = MilvusSink(milvus.store, spec)
    sink.apply(WritePlan(upserts=[
        record(f"p{i}", "k", v.tolist(), category="Women/Shoes" if s else "Men/Tops")
        for i, (v, s) in enumerate(zip(vectors, shoes, strict=True))]))
    sink.flush()
    queries = np.asarray([random_unit(rng) for _ in range(20)], dtype=np.float32) + lean
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [[f"p{i}" for i in np.argsort(-np.where(shoes, vectors @ q, -np.inf))[:10]]
             for q in queries]
    if not milvus.engine.is_lite:
        _wait_until_the_index_answers(milvus, spec, queries, exact)
    search = ProductSearch(milvus.store, spec, FakeEmbedder(), consistency="Strong",
                           max_pixels=milvus_support.MAX_PIXELS)
    for query, want in zip(queries, exact, strict=True):
        hits = search.by_vector(query, k=10, filter=SearchFilter(categories=["Women/Shoes"]))
        assert [h.product_id for h in hits] == want
    assert search.short_page_recoveries == 0  # full pages, not the exact fallback


def _wait_until_the_index_answers(milvus: Milvus, spec: CollectionSpec, queries: np.ndarray,
                                  exact: list[list[str]]) -> None:
    """Until a filtered one-list probe misses some of the exact top 10 (the sealed segment
    is searched through its index, not scanned), at most 180 s."""
    deadline = time.monotonic() + 180
    where = milvus.store.expr().in_categories(["Women/Shoes"])
    while True:
        hits = milvus.store.search(
            spec.name, queries.tolist(), limit=10, where=where, fields=["product_id"],
            params={"metric_type": "COSINE", "params": {"nprobe": 1}}, consistency="Strong")
        found = sum(len({h["entity"]["product_id"] for h in per_query} & set(want))
                    for per_query, want in zip(hits, exact, strict=True))
        if found < 10 * len(queries):
            return
        assert time.monotonic() < deadline, "the server never searched through the index"
        time.sleep(1)
