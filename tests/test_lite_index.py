"""The in-memory copy of a Milvus Lite image collection (store/lite_index.py) answers searches,
queries and counts as Milvus Lite itself does, and stays in step with upserts, deletes, a
text-filtered delete, alias switches and a build that runs while writes arrive."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import store.client as store_client
from schema.collection import CollectionSpec
from store import ExpressionBuilder, MilvusStore, StoreError, ensure_collections
from store.engine import search_params
from store.lite_index import LiteIndex, Unsupported
from tests.milvus_support import DIM, MODEL, random_unit, record

CATEGORIES = ["Men/Tops/Tees", "Men/Tops", "Men/Shoes", "Women/Tops/Tees", "Women", "Kids/Toys"]
CURRENCIES = ["USD", "EUR", "GBP"]
FIELDS = ["product_id", "title", "category", "price", "currency", "image_key", "version"]

Filter = Callable[[ExpressionBuilder], ExpressionBuilder]
FILTERS: list[Filter] = [
    lambda e: e,
    lambda e: e.eq("model_version", MODEL),
    lambda e: e.eq("model_version", MODEL).in_categories(["Men/Tops"]),
    lambda e: e.in_categories(["Men", "Women/Tops/Tees"]),
    lambda e: e.compare("price", ">=", 20.0).compare("price", "<", 60.0),
    lambda e: e.eq("currency", "EUR").not_in("product_id", ["p1", "p2", "p3", "p4"]),
    lambda e: e.in_("product_id", [f"p{i}" for i in range(0, 90, 3)]),
    lambda e: e.compare("version", ">", 1).compare("price", "!=", 50.0),
    lambda e: e.compare("category", ">", "Men/Tops"),
    lambda e: e.eq("model_version", "another-model"),
]


class Counting:
    """A pymilvus client that counts the searches and queries that reach Milvus Lite."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0
        self.collections: list[str] = []

    def search(self, collection: str, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        self.collections.append(f"search {collection}")
        return self._client.search(collection, *args, **kwargs)

    def query(self, collection: str, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        self.collections.append(f"query {collection} {kwargs.get('filter')}")
        return self._client.query(collection, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[MilvusStore, MilvusStore, Counting]]:
    """A store with the copy (over a counting client) and one without, on one Lite file."""
    from pymilvus import MilvusClient

    uri = str(tmp_path / "copy.db")
    client = MilvusClient(uri)
    counting = Counting(client)
    store = MilvusStore(counting, uri=uri)
    plain = MilvusStore(client, uri=uri, memory_index=False)
    yield store, plain, counting
    store.close()


def _records(rng: np.random.Generator, n: int, version: int = 1,
             first: int = 0) -> list[dict[str, Any]]:
    return [record(f"p{i // 2}", f"k{i % 2}", random_unit(rng),
                   category=CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                   price=float(rng.choice([50.0, float(round(rng.uniform(1, 100), 2))])),
                   currency=CURRENCIES[int(rng.integers(len(CURRENCIES)))],
                   version=version).to_row() for i in range(first, first + n)]


def _assert_same(store: MilvusStore, plain: MilvusStore, spec: CollectionSpec,
                 rng: np.random.Generator) -> None:
    """Every filter: the same hits, scores, rows and counts from the copy and from Lite."""
    for make in FILTERS:
        for _ in range(3):
            query = [random_unit(rng)]
            mine, theirs = (s.search(spec.name, query, limit=25, where=make(s.expr()),
                                     fields=FIELDS, params=search_params(spec, s.engine, 25,
                                                                 filtered=True),
                                     consistency="Strong")[0] for s in (store, plain))
            assert [h["pk"] for h in mine] == [h["pk"] for h in theirs]
            for a, b in zip(mine, theirs, strict=True):
                assert a["distance"] == pytest.approx(b["distance"], abs=1e-5)
                assert a["entity"] == b["entity"]
        rows_mine, rows_theirs = (
            s.query(spec.name, make(s.expr()), ["product_id", "price", "vector"],
                    consistency="Strong") for s in (store, plain))
        assert sorted(map(repr, rows_mine)) == sorted(map(repr, rows_theirs))
        assert store.count(spec.name, consistency="Strong", where=make(store.expr())) == \
            plain.count(spec.name, consistency="Strong", where=make(plain.expr()))


def test_the_copy_answers_as_milvus_lite_through_upserts_and_deletes(
    stores: tuple[MilvusStore, MilvusStore, Counting],
) -> None:
    store, plain, counting = stores
    spec = CollectionSpec(name="copy_images", dim=DIM)
    ensure_collections(store, spec)
    rng = np.random.default_rng(7)
    store.upsert(spec.name, _records(rng, 300))
    counting.reads = 0
    _assert_same(store, plain, spec, rng)

    store.upsert(spec.name, _records(rng, 60, version=2, first=100))  # new vectors, prices
    store.delete_in(spec.name, "pk", [f"p{i}:k0" for i in range(0, 80, 4)])
    store.delete_in(spec.name, "product_id", [f"p{i}" for i in range(100, 110)])
    store.delete(spec.name, store.expr().compare("price", "<", 10.0).eq("currency", "GBP"))
    store.upsert(spec.name, _records(rng, 20, version=3, first=300))  # new products
    _assert_same(store, plain, spec, rng)
    assert counting.reads == 0  # every read above was answered by the copy

    # A filter given as text cannot be mirrored: the copy is dropped, then rebuilt.
    store.delete(spec.name, 'price > 90.0')
    _assert_same(store, plain, spec, rng)
    assert not store.query(spec.name, store.expr().compare("price", ">", 90.0), ["pk"],
                           consistency="Strong")


def test_text_filters_and_unknown_fields_are_left_to_milvus_lite(
    stores: tuple[MilvusStore, MilvusStore, Counting],
) -> None:
    store, plain, counting = stores
    spec = CollectionSpec(name="copy_text", dim=DIM)
    ensure_collections(store, spec)
    rng = np.random.default_rng(3)
    store.upsert(spec.name, _records(rng, 40))
    counting.reads = 0
    rows = store.query(spec.name, 'price >= 50.0', ["pk"], consistency="Strong")
    assert {r["pk"] for r in rows} == {r["pk"] for r in plain.query(
        spec.name, plain.expr().compare("price", ">=", 50.0), ["pk"], consistency="Strong")}
    assert counting.reads == 1
    with pytest.raises(StoreError):
        store.search(spec.name, [random_unit(rng)], limit=5, where=store.expr().eq("nope", 1),
                     fields=["pk"], params={}, consistency="Strong")


def test_searches_through_an_alias_follow_its_switch(
    stores: tuple[MilvusStore, MilvusStore, Counting],
) -> None:
    store, _plain, counting = stores
    old, new = CollectionSpec(name="copy_v1", dim=DIM), CollectionSpec(name="copy_v2", dim=DIM)
    rng = np.random.default_rng(5)
    for spec, first in ((old, 0), (new, 1000)):
        ensure_collections(store, spec)
        store.upsert(spec.name, _records(rng, 10, first=first))
    store.create_alias(old.name, "copy_alias")

    def products() -> set[str]:
        hits = store.search("copy_alias", [random_unit(rng)], limit=50, where=store.expr(),
                            fields=["product_id"], params={}, consistency="Strong")[0]
        return {h["entity"]["product_id"] for h in hits}

    counting.reads = 0
    assert products() == {f"p{i}" for i in range(5)}
    store.alter_alias(new.name, "copy_alias")
    assert products() == {f"p{i}" for i in range(500, 505)}
    assert counting.reads == 0


def test_a_build_in_the_background_takes_in_the_writes_made_meanwhile(
    stores: tuple[MilvusStore, MilvusStore, Counting], monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, plain, _counting = stores
    spec = CollectionSpec(name="copy_background", dim=DIM)
    ensure_collections(plain, spec)
    rng = np.random.default_rng(11)
    plain.upsert(spec.name, _records(rng, 400))  # written before this store kept a copy
    monkeypatch.setattr(store_client, "SYNC_BUILD_ROWS", 0)
    monkeypatch.setattr(store_client, "SCAN_BATCH", 50)
    store.upsert(spec.name, _records(rng, 40, version=2))  # starts the build, then writes
    store.delete_in(spec.name, "product_id", [f"p{i}" for i in range(150, 170)])
    store.upsert(spec.name, _records(rng, 40, version=3, first=380))
    deadline = time.monotonic() + 60
    while store.count(spec.name, consistency="Strong") != plain.count(spec.name,
                                                                       consistency="Strong"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    index = store._lite_copy(spec.name)
    while index is not None and not index.ready:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert index is not None and len(index) == plain.count(spec.name, consistency="Strong")
    _assert_same(store, plain, spec, rng)


def _row(pk: str, vector: list[float], price: float = 1.0) -> dict[str, Any]:
    return {"pk": pk, "price": price, "vector": vector}


def test_journaled_writes_win_over_an_older_scan() -> None:
    index = LiteIndex("c", [("pk", "str"), ("price", "float"), ("vector", "vector")], "pk", 2)
    index.apply("upsert", [_row("a", [0.0, 1.0], price=2.0)])
    index.apply("delete_where", ExpressionBuilder(templates=False).in_("pk", ["b"]).clauses())
    assert not index.ready
    index.load([_row("a", [1.0, 0.0]), _row("b", [1.0, 0.0]), _row("c", [1.0, 1.0])])
    index.finish_build()
    assert index.ready
    assert index.query((), ["price"], None) == [{"pk": "a", "price": 2.0},
                                                {"pk": "c", "price": 1.0}]
    hits = index.search([[0.0, 1.0]], 5, (), [])[0]
    assert [(h["pk"], round(h["distance"], 4)) for h in hits] == [("a", 1.0), ("c", 0.7071)]
    with pytest.raises(Unsupported):
        index.query(ExpressionBuilder(templates=False).eq("price", "cheap").clauses(), [], None)


def test_far_matches_of_a_selective_filter_fill_k_with_and_without_the_copy(
    stores: tuple[MilvusStore, MilvusStore, Counting],
) -> None:
    """The short-page case of tests/test_search_short_pages.py, searched through the copy and
    through Lite's own index: 10 of the 12 far products, best first, either way."""
    from ingest.plan import WritePlan
    from ingest.sink import MilvusSink
    from search.api import ProductSearch
    from search.filters import SearchFilter
    from tests.milvus_support import MAX_PIXELS, FakeEmbedder, rotate, unit

    store, plain, counting = stores
    spec = CollectionSpec(name="copy_far", dim=DIM)
    ensure_collections(store, spec)
    near = [record(f"n{i}", "k", rotate(0.99 - i * 1e-5, towards=1 + i % 6))
            for i in range(600)]
    far = [record(f"f{i}", "k", rotate(0.05 + 0.01 * i, towards=7), category="Women/Shoes")
           for i in range(12)]
    MilvusSink(store, spec).apply(WritePlan(upserts=near + far))
    counting.collections = []
    for s in (store, plain):
        search = ProductSearch(s, spec, FakeEmbedder(), consistency="Strong",
                               max_pixels=MAX_PIXELS)
        hits = search.by_vector(unit(0), k=10, filter=SearchFilter(categories=["Women/Shoes"]))
        assert [h.product_id for h in hits] == [f"f{i}" for i in range(11, 1, -1)]
    # The copy answered the first searcher; only its model check, a fixed text filter, went to
    # Milvus Lite.
    assert counting.collections == [f'query {spec.name} pk != ""']



class _CountingGuard:
    def __init__(self) -> None:
        self.entered = 0

    def __enter__(self) -> None:
        self.entered += 1

    def __exit__(self, *_: object) -> None:
        pass


def test_a_small_collection_is_scored_in_one_blas_thread_a_large_one_on_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scored whole, a collection of up to SMALL_PRODUCT_ROWS rows runs its product inside
    store.blas's guard (threads cost more than they save there), a larger one outside it;
    the answer is the same either way."""
    import store.lite_index as lite_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((12, 8)).astype(np.float32)
    answers, entered = [], []
    for small_rows in (100, 4):  # the same 12 rows counted small, then large
        guard = _CountingGuard()
        monkeypatch.setattr(lite_index, "SMALL_PRODUCT_ROWS", small_rows)
        monkeypatch.setattr(lite_index, "one_blas_thread", guard)
        index = LiteIndex("c", [("pk", "str"), ("vector", "vector")], "pk", 8)
        index.load([{"pk": f"p{n}", "vector": v.tolist()} for n, v in enumerate(vectors)])
        index.finish_build()
        answers.append([h["pk"] for h in index.search([vectors[3].tolist()], 5, (), [])[0]])
        entered.append(guard.entered)
    assert entered == [1, 0]
    assert answers[0] == answers[1] and answers[0][0] == "p3"
