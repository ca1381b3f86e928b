"""Hostile filter values on the real engines: matched literally or rejected, never obeyed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from schema.collection import CollectionSpec
from schema.events import normalize_category
from search.api import ProductSearch
from search.filters import SearchFilter
from store import ExpressionBuilder, ensure_collections
from tests import milvus_support
from tests.milvus_support import (
    FakeEmbedder,
    Milvus,
    record,
    rotate,
    unit,
)

# shared fixtures (pytest finds them as module attributes)
milvus = milvus_support.milvus

HOSTILE_CATEGORIES = [
    'x" or 1==1',
    'x" or category != "',
    'x\\" or 1==1 or \\"',
    "') or true or ('",
    "' or ''=='",
    '" || true || "',
    "\\",
    "\\\\",
    'a\\"b',
    "trailing\\",
    "ünïcødé ß 日本語 🙂",
    "\u2028line\u2029sep",
    "{p0}",
    "x) or (1==1",
    "L" * 512,
]
PLAIN = ["x", "a", "a\\b"]  # near-misses that must not match the hostile ones


@dataclass
class Data:
    spec: CollectionSpec
    search: ProductSearch
    milvus: Milvus
    by_category: dict[str, str]  # category -> product_id


@pytest.fixture(scope="module")
def data(milvus: Milvus) -> Iterator[Data]:
    s = milvus.new_spec(prefix="hostile")
    ensure_collections(milvus.store, s)
    by_category: dict[str, str] = {}
    records = []
    for i, cat in enumerate(HOSTILE_CATEGORIES + PLAIN):
        pid = f"h{i}"
        stored = normalize_category(cat)  # as events store it
        by_category[stored] = pid
        records.append(record(pid, "k", rotate(0.5 + i / 100), category=stored, price=float(i)))
    # products whose ids are hostile too
    for j, pid in enumerate(['q" or 1==1 or "', "q') or ('", "q\\", 'q\\"']):
        records.append(record(pid, "k", rotate(0.4 + j / 100), category="Ids"))
    MilvusSink(milvus.store, s).apply(WritePlan(upserts=records))
    search = ProductSearch(milvus.store, s, FakeEmbedder(), consistency="Strong")
    yield Data(s, search, milvus, by_category)
    milvus.drop(s)


@pytest.mark.parametrize("category", HOSTILE_CATEGORIES + PLAIN)
def test_hostile_category_matches_only_itself(data: Data, category: str) -> None:
    hits = data.search.by_vector(unit(0), k=50, filter=SearchFilter(categories=[category]))
    assert [h.product_id for h in hits] == [data.by_category[normalize_category(category)]]
    assert hits[0].category == normalize_category(category)


@pytest.mark.parametrize("category", HOSTILE_CATEGORIES)
def test_hostile_values_in_plain_equality(data: Data, category: str) -> None:
    """The builder's literals, straight to query(), on every string operator."""
    value = normalize_category(category)
    expr, params = ExpressionBuilder(templates=False).eq("category", value).build()
    assert params == {}
    rows = data.milvus.rows(data.spec, expr, ["product_id"])
    assert [r["product_id"] for r in rows] == [data.by_category[value]]
    expr, _ = ExpressionBuilder(templates=False).in_("category", [value, "nothing"]).build()
    assert [r["product_id"] for r in data.milvus.rows(data.spec, expr, ["product_id"])] == [
        data.by_category[value]
    ]


def test_hostile_product_ids_excluded_literally(data: Data) -> None:
    everything = SearchFilter(categories=["Ids"])
    all_ids = {h.product_id for h in data.search.by_vector(unit(0), k=50, filter=everything)}
    assert all_ids == {'q" or 1==1 or "', "q') or ('", "q\\", 'q\\"'}
    for pid in all_ids:
        f = SearchFilter(categories=["Ids"], exclude_product_ids=[pid])
        got = {h.product_id for h in data.search.by_vector(unit(0), k=50, filter=f)}
        assert got == all_ids - {pid}
        similar = {h.product_id for h in data.search.by_product(pid, k=50, filter=everything)}
        assert similar == all_ids - {pid}


def test_unrenderable_values_are_rejected_before_any_query(data: Data) -> None:
    for bad in ("x\nor 1==1", "x\x00", "x\r", "\x1b[2J"):
        with pytest.raises(ValidationError, match="control"):
            SearchFilter(categories=[bad])
        with pytest.raises(ValueError, match="control"):
            data.search.by_product(bad)
    with pytest.raises(ValidationError, match="at most 512"):
        SearchFilter(categories=["L" * 513])
    with pytest.raises(ValidationError, match="at most 512"):
        SearchFilter(exclude_product_ids=["p" * 513])
