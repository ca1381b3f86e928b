"""A write cut short between two Milvus calls, then redelivered: what is searchable must be
what the product's state says (ingest/plan.py, ingest/sink.py; each engine).

The events go through the write stage's own steps (states, :func:`plan_writes`,
:meth:`MilvusSink.apply`) with a fresh sink after each crash, as after a restart; a crash is a
``BaseException`` raised right after the chosen store call returned (nothing after it runs).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from ingest.plan import EmbeddedProduct, EventItem, plan_writes, select_upserts
from ingest.sink import MilvusSink
from schema.collection import CollectionSpec
from schema.errors import ItemFailure, Reason
from schema.events import ProductEvent, ProductPriceChanged, ProductUpserted
from schema.records import image_pk
from store import ensure_collections
from tests import milvus_support
from tests.milvus_support import DIM, MODEL, Milvus, unit

milvus = milvus_support.milvus
spec = milvus_support.spec


class Crash(BaseException):
    """The process died: nothing of the apply after the call runs (no cleanup either)."""


def up(pid: str, version: int, refs: Sequence[str], price: str = "10") -> ProductUpserted:
    return ProductUpserted(product_id=pid, version=version, title=f"t{pid}", category="A/B",
                           price=price, currency="USD", images=[f"img/{r}.jpg" for r in refs],
                           seller_id="s")


def pks(pid: str, refs: Sequence[str]) -> set[str]:
    return {image_pk(pid, e.key) for e in up(pid, 1, refs).images}


def deliver(sink: MilvusSink, events: Sequence[ProductEvent],
            missing: frozenset[str] = frozenset()) -> list[str]:
    """One batch through the write stage's steps; images named in ``missing`` fail."""
    batch = [EventItem(i, e, None) for i, e in enumerate(events)]
    stored = sink.get_states(sorted({e.product_id for e in events}))
    embedded: dict[str, EmbeddedProduct] = {}
    for pid, event in select_upserts(batch).items():
        if pid in stored and stored[pid].version >= event.resolved_version:
            continue  # the prepare stage does not embed stale upserts
        emb = embedded[pid] = EmbeddedProduct(event)
        for i, image in enumerate(event.images):
            if image.reference.removeprefix("img/").removesuffix(".jpg") in missing:
                emb.failures[i] = ItemFailure(Reason.NOT_FOUND, "gone")
            else:
                emb.vectors[i] = unit(zlib.crc32(image.reference.encode()) % DIM)
    plan = plan_writes(batch, stored, embedded, MODEL, 1_000)
    if not plan.is_empty():
        sink.apply(plan)
    return [i.outcome.status.value if i.outcome else "?" for i in batch]


def crash_after(milvus: Milvus, op: str) -> Iterator[None]:
    """Context: the store "dies" right after its first call of ``op`` returns."""
    store: Any = milvus.store
    originals = {name: getattr(store, name) for name in ("upsert", "delete_in")}

    def wrap(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = originals[name](*args, **kwargs)
            if kwargs.get("op") == op:
                raise Crash(op)
            return result
        return call

    for name in originals:
        setattr(store, name, wrap(name))
    try:
        yield
    finally:
        for name in originals:
            delattr(store, name)


def stored(milvus: Milvus, s: CollectionSpec, pid: str) -> tuple[int, set[str]]:
    """The product's state version and its image pks."""
    state = MilvusSink(milvus.store, s).get_states([pid])[pid]
    rows = milvus.rows(s, f'product_id == "{pid}"', ["pk"])
    return state.version, {str(r["pk"]) for r in rows}


def fresh(milvus: Milvus, s: CollectionSpec) -> MilvusSink:
    ensure_collections(milvus.store, s)
    return MilvusSink(milvus.store, s)


V1 = ("r1", "r2", "r3")
V2 = ("new",)


def write_v1_then_crash_v2(milvus: Milvus, s: CollectionSpec, op: str) -> None:
    assert deliver(fresh(milvus, s), [up("a", 1, V1), up("b", 1, ["b1"])]) == ["applied"] * 2
    gen = crash_after(milvus, op)
    next(gen)
    try:
        with pytest.raises(Crash):
            deliver(fresh(milvus, s), [up("a", 2, V2)])
    finally:
        gen.close()


@pytest.mark.parametrize("op", ["upsert_images", "upsert_states", "delete_pruned"])
def test_a_redelivered_upsert_whose_photo_is_gone_leaves_what_its_state_says(
        milvus: Milvus, spec: CollectionSpec, op: str) -> None:
    """The probe's s1 (issues 2 and 3): v2 replaces a's three photos with a new one and is
    cut short; on redelivery the new photo is gone. Before, after ``upsert_images`` v2's row
    stayed beside v1's (state v1, v2 dead-lettered), and after ``delete_pruned`` (then ahead
    of the state) v1's photos were gone under state v1."""
    write_v1_then_crash_v2(milvus, spec, op)
    outcome = deliver(fresh(milvus, spec), [up("a", 2, V2)], missing=frozenset(V2))
    version, rows = stored(milvus, spec, "a")
    if op == "upsert_images":  # the state was not reached: v2 is retried, fails, v1 stays
        assert outcome == ["dead_lettered"]
        assert (version, rows) == (1, pks("a", V1))
    else:  # the state says v2: the redelivery is stale, and the prune is done (again)
        assert outcome == ["stale"]
        assert (version, rows) == (2, pks("a", V2))
    assert stored(milvus, spec, "b") == (1, pks("b", ["b1"]))


@pytest.mark.parametrize("op", ["upsert_images", "upsert_states", "delete_pruned"])
def test_a_redelivered_upsert_whose_photo_comes_is_applied_whole(
        milvus: Milvus, spec: CollectionSpec, op: str) -> None:
    write_v1_then_crash_v2(milvus, spec, op)
    deliver(fresh(milvus, spec), [up("a", 2, V2)])
    assert stored(milvus, spec, "a") == (2, pks("a", V2))


def test_an_image_that_fails_keeps_its_stored_row(milvus: Milvus, spec: CollectionSpec) -> None:
    """Issue 4: a re-upsert listing the same photos, one failing for now. Before, only the
    rows embedded now were kept: the prune deleted the failed photo's indexed row, and the
    event was applied, so nothing ever put it back."""
    sink = fresh(milvus, spec)
    deliver(sink, [up("a", 1, V1)])
    assert deliver(sink, [up("a", 2, V1, price="12")], missing=frozenset({"r2"})) == ["applied"]
    version, rows = stored(milvus, spec, "a")
    assert (version, rows) == (2, pks("a", V1))
    by_pk = {r["pk"]: r for r in milvus.rows(spec, 'product_id == "a"', ["pk", "version"])}
    assert by_pk[image_pk("a", up("a", 1, ["r2"]).images[0].key)]["version"] == 1
    # a dropped photo is still pruned when another one fails
    assert deliver(sink, [up("a", 3, ["r1", "r2"])], missing=frozenset({"r2"})) == ["applied"]
    assert stored(milvus, spec, "a") == (3, pks("a", ["r1", "r2"]))


def test_repriced_rows_are_not_taken_for_leftovers(milvus: Milvus, spec: CollectionSpec) -> None:
    """A price change cut short before its state, redelivered with a newer upsert that fails:
    the repair deletes rows above the stored version, which a price change must not put
    there (a row keeps the version of the write that embedded it)."""
    deliver(fresh(milvus, spec), [up("a", 1, V1)])
    change = ProductPriceChanged(product_id="a", version=2, price="5", currency="USD")
    gen = crash_after(milvus, "upsert_prices")
    next(gen)
    try:
        with pytest.raises(Crash):
            deliver(fresh(milvus, spec), [change])
    finally:
        gen.close()
    outcome = deliver(fresh(milvus, spec), [change, up("a", 3, V2)], missing=frozenset(V2))
    assert outcome == ["applied", "dead_lettered"]
    assert stored(milvus, spec, "a") == (2, pks("a", V1))
    assert {r["price"] for r in milvus.rows(spec, 'product_id == "a"', ["price"])} == {5.0}


def test_an_equal_version_upsert_with_other_photos_deletes_nothing(
        milvus: Milvus, spec: CollectionSpec) -> None:
    """A stale upsert is ignored: the repeated prune of an equal version only deletes rows
    older than the stored version, so a different event sent with the same version cannot
    prune the photos of the one that was applied."""
    deliver(fresh(milvus, spec), [up("a", 2, V1)])
    assert deliver(fresh(milvus, spec), [up("a", 2, V2)]) == ["stale"]
    assert stored(milvus, spec, "a") == (2, pks("a", V1))


def test_a_sink_that_wrote_the_product_reads_nothing_for_an_equal_version(
        milvus: Milvus, spec: CollectionSpec) -> None:
    """A re-published catalog costs no read of rows for products this sink wrote."""
    sink = fresh(milvus, spec)
    deliver(sink, [up("a", 1, V1)])
    batch = [EventItem(0, up("a", 1, V1), None)]
    plan = plan_writes(batch, sink.get_states(["a"]), {}, MODEL, 1_000)
    assert plan.repairs and not plan.states
    result = sink.apply(plan)
    assert [c.op for c in result.calls] == [] and result.deleted == 0
