"""Collections and the sink, on each engine (milvus-lite always; a server when configured)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from schema.collection import (
    IMAGE_FIELDS,
    CollectionSpec,
    SchemaMismatchError,
)
from schema.records import CATEGORY_LEVEL_FIELDS, ProductState, category_levels
from store import MilvusStore, StoreError, StoreUnavailableError, ensure_collections
from store.engine import image_indexes
from store.expressions import in_expression
from tests import milvus_support
from tests.milvus_support import (
    DIM,
    Milvus,
    random_unit,
    record,
    unit,
)

# shared fixtures (pytest finds them as module attributes)
milvus = milvus_support.milvus
spec = milvus_support.spec


def _sink(m: Milvus, s: CollectionSpec) -> MilvusSink:
    ensure_collections(m.store, s)
    return MilvusSink(m.store, s)


def _pks(m: Milvus, s: CollectionSpec) -> list[str]:
    return sorted(str(r["pk"]) for r in m.rows(s, fields=["pk"]))


def test_ensure_collections_is_idempotent(milvus: Milvus, spec: CollectionSpec) -> None:
    engine = ensure_collections(milvus.store, spec)
    assert engine.kind == ("milvus-lite" if milvus.kind == "lite" else "milvus")
    ensure_collections(milvus.store, spec)
    assert milvus.client.has_collection(spec.name)
    assert milvus.client.has_collection(spec.state_name)
    desc = milvus.client.describe_collection(spec.name)
    assert [f["name"] for f in desc["fields"]] == list(IMAGE_FIELDS)
    assert set(milvus.client.list_indexes(spec.name)) == {
        c.field for c in image_indexes(spec, engine)
    }
    vector = milvus.client.describe_index(spec.name, "vector")
    assert vector["metric_type"] == "COSINE"
    assert vector["index_type"] == ("FLAT" if engine.is_lite else "IVF_FLAT")


def test_ensure_collections_rejects_another_dimension(milvus: Milvus, spec: CollectionSpec) -> None:
    ensure_collections(milvus.store, spec)
    other = CollectionSpec(name=spec.name, dim=DIM * 2)
    with pytest.raises(SchemaMismatchError, match=f"dimension {DIM}.*produces {DIM * 2}"):
        ensure_collections(milvus.store, other)


def test_upsert_twice_gives_no_duplicates(milvus: Milvus, spec: CollectionSpec) -> None:
    sink = _sink(milvus, spec)
    rng = np.random.default_rng(1)
    records = [record(f"p{i}", f"k{j}", random_unit(rng)) for i in range(5) for j in range(3)]
    first = sink.apply(WritePlan(upserts=records))
    assert first.upserted == 15
    assert first.write_seconds > 0 and first.calls and all(c.seconds >= 0 for c in first.calls)
    # the flush schedule is tested in test_store_policies.py
    sink.apply(WritePlan(upserts=records))
    assert _pks(milvus, spec) == sorted(r.pk for r in records)


def test_upserts_are_chunked(milvus: Milvus, spec: CollectionSpec) -> None:
    sink = _sink(milvus, spec)
    rng = np.random.default_rng(2)
    records = [record(f"p{i}", "k", random_unit(rng)) for i in range(600)]
    result = sink.apply(WritePlan(upserts=records))
    assert [c.rows for c in result.calls if c.op == "upsert_images"] == [256, 256, 88]
    assert len(_pks(milvus, spec)) == 600


def test_prune_deletes_dropped_images_only(milvus: Milvus, spec: CollectionSpec) -> None:
    sink = _sink(milvus, spec)
    a = [record("a", k, unit(0)) for k in ("k1", "k2", "k3")]
    b = [record("b", k, unit(1)) for k in ("k1", "k2")]
    sink.apply(WritePlan(upserts=a + b))
    # an update of "a" keeps k2, adds k4 and drops k1 and k3
    update = [record("a", k, unit(2), version=2) for k in ("k2", "k4")]
    result = sink.apply(WritePlan(upserts=update, prune={"a": {r.pk for r in update}}))
    assert result.deleted == 2
    assert _pks(milvus, spec) == ["a#k2", "a#k4", "b#k1", "b#k2"]
    versions = {r["pk"]: r["version"] for r in milvus.rows(spec, fields=["pk", "version"])}
    assert versions == {"a#k2": 2, "a#k4": 2, "b#k1": 1, "b#k2": 1}


def test_delete_products(milvus: Milvus, spec: CollectionSpec) -> None:
    sink = _sink(milvus, spec)
    sink.apply(
        WritePlan(upserts=[record(p, k, unit(0)) for p in ("a", "b", "c") for k in ("k1", "k2")])
    )
    result = sink.apply(
        WritePlan(
            delete_products=["a", "c", "never-stored"],
            states=[ProductState(product_id="a", version=5, listed=False, updated_at_ms=9)],
        )
    )
    assert result.deleted == 4
    assert _pks(milvus, spec) == ["b#k1", "b#k2"]
    assert sink.get_states(["a"])["a"].listed is False


def test_price_update_keeps_vectors_identical(milvus: Milvus, spec: CollectionSpec) -> None:
    sink = _sink(milvus, spec)
    rng = np.random.default_rng(3)
    before = [record("a", f"k{i}", random_unit(rng), price=10.0) for i in range(3)]
    other = record("b", "k1", random_unit(rng), price=7.0)
    newer = record("c", "k1", random_unit(rng), price=1.0, version=9)
    sink.apply(WritePlan(upserts=[*before, other, newer]))
    stored = {r["pk"]: r for r in milvus.rows(spec)}

    result = sink.apply(WritePlan(price_updates={"a": (12.5, "EUR", 2), "c": (99.0, "EUR", 3)}))
    assert result.repriced == 3  # c's row is at version 9: a stale update leaves it alone
    after = {r["pk"]: r for r in milvus.rows(spec)}
    assert set(after) == set(stored)
    for pk, row in after.items():
        assert np.array_equal(
            np.asarray(row["vector"], np.float32), np.asarray(stored[pk]["vector"], np.float32)
        )
        if row["product_id"] == "a":
            # the row keeps the version of the write that embedded it (ingest/sink.py)
            assert (row["price"], row["currency"], row["version"]) == (12.5, "EUR", 1)
            changed = {"price", "currency", "vector"}
            for name in set(IMAGE_FIELDS) - changed:
                assert row[name] == stored[pk][name], name
        else:
            assert row == stored[pk]


def test_states_round_trip(milvus: Milvus, spec: CollectionSpec) -> None:
    sink = _sink(milvus, spec)
    states = [
        ProductState(product_id="a", version=3, listed=True, updated_at_ms=111),
        ProductState(product_id="b", version=2**62, listed=False, updated_at_ms=222),
    ]
    assert sink.apply(WritePlan(states=states)).states == 2
    assert sink.get_states(["a", "b", "missing"]) == {s.product_id: s for s in states}
    assert sink.get_states([]) == {}
    newer = ProductState(product_id="a", version=4, listed=False, updated_at_ms=333)
    sink.apply(WritePlan(states=[newer]))
    assert sink.get_states(["a"]) == {"a": newer}


def test_hostile_product_ids_only_touch_themselves(milvus: Milvus, spec: CollectionSpec) -> None:
    """Product ids that look like expression syntax are matched literally everywhere."""
    sink = _sink(milvus, spec)
    hostile = ['a" or 1==1 or "', "b') or true or ('", "c\\", 'd\\"', "ü日本"]
    plain = ["a", "b", "c", "d"]
    sink.apply(
        WritePlan(
            upserts=[record(p, k, unit(0)) for p in hostile + plain for k in ("k1", "k2")],
            states=[
                ProductState(product_id=p, version=1, listed=True, updated_at_ms=1)
                for p in hostile + plain
            ],
        )
    )
    assert set(sink.get_states(hostile)) == set(hostile)
    sink.apply(
        WritePlan(
            prune={hostile[0]: {f"{hostile[0]}#k1"}},
            delete_products=[hostile[1], hostile[2]],
            price_updates={hostile[3]: (1.0, "USD", 2)},
        )
    )
    expected = sorted(
        [f"{hostile[0]}#k1", f"{hostile[3]}#k1", f"{hostile[3]}#k2", f"{hostile[4]}#k1"]
        + [f"{hostile[4]}#k2"]
        + [f"{p}#{k}" for p in plain for k in ("k1", "k2")]
    )
    assert _pks(milvus, spec) == expected
    expr, _ = in_expression("product_id", [hostile[3]], templates=False)
    assert {r["price"] for r in milvus.rows(spec, expr, ["price"])} == {1.0}
    assert {r["price"] for r in milvus.rows(spec, 'product_id == "d"', ["price"])} == {10.0}


def test_long_unicode_text_fits(milvus: Milvus, spec: CollectionSpec) -> None:
    """Servers count VARCHAR length in bytes: a 512-character CJK title needs 1536."""
    sink = _sink(milvus, spec)
    title = "日" * 512
    category = "/".join(["類" * 60] * 8)
    r = record("a", "k1", unit(0), title=title, category=category)
    sink.apply(WritePlan(upserts=[r]))
    row = milvus.rows(spec, fields=["title", "category", *CATEGORY_LEVEL_FIELDS])[0]
    assert row["title"] == title
    assert row["category"] == category
    assert row["category_l8"] == category  # the deepest level holds the whole path
    assert {f: row[f] for f in CATEGORY_LEVEL_FIELDS} == category_levels(category)


def test_the_scans_mvcc_warning_is_off(milvus: Milvus, spec: CollectionSpec) -> None:
    """pymilvus' query iterator warned on every scan that the engine gave no MVCC stamp (Lite
    and 2.3 give none; it then uses the client's clock, as intended): a WARNING line beside
    every command's own output, even ``lookalike models`` on success. pymilvus writes it with
    a handler of its own (not captured here), so the test reads the logger's level, set when
    the store opens: after pymilvus' import, whose logging config resets earlier levels."""
    sink = _sink(milvus, spec)
    rng = np.random.default_rng(2)
    sink.apply(WritePlan(upserts=[record(f"p{i}", "k0", random_unit(rng)) for i in range(3)]))
    sink.flush()
    rows = list(milvus.store.scan(spec.name, 'product_id != ""', ["pk"], consistency="Strong"))
    assert len(rows) == 3
    iterator = logging.getLogger("pymilvus.client.iterator.query_iterator")
    assert not iterator.isEnabledFor(logging.WARNING) and iterator.isEnabledFor(logging.ERROR)


def test_pymilvus_own_tracebacks_are_off_once_a_store_opens(tmp_path: Path) -> None:
    """During a Milvus outage pymilvus logged a traceback per failed reconnection
    (``pymilvus.client.connection_manager``) in every process but ingest, which alone
    quieted it: a long-lived ``ProductSearch`` and ``lookalike serve`` flooded stderr. The
    levels pymilvus' import sets (WARNING, INFO for its client) are put back first, as a
    process that has not opened a store has them."""
    names = ("pymilvus", "pymilvus.milvus_client", "pymilvus.decorators",
             "pymilvus.client.iterator")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger("pymilvus").setLevel(logging.WARNING)
        logging.getLogger("pymilvus.milvus_client").setLevel(logging.INFO)
        assert logging.getLogger("pymilvus.client.connection_manager").isEnabledFor(
            logging.WARNING)
        store = MilvusStore.open(str(tmp_path / "quiet.db"))
        try:
            for name in ("pymilvus.client.connection_manager", "pymilvus.client.grpc_handler",
                         "pymilvus.decorators", "pymilvus.milvus_client"):
                assert not logging.getLogger(name).isEnabledFor(logging.ERROR), name
            iterator = logging.getLogger("pymilvus.client.iterator.query_iterator")
            assert iterator.isEnabledFor(logging.ERROR)
        finally:
            store.close()
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_a_closed_store_says_so_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    """pymilvus' "should create connection first" after ``close()`` read as an outage: six
    attempts, a WARNING each (~2.5 s), then ``StoreUnavailableError`` (wait and retry)."""
    sleeps: list[float] = []
    store = MilvusStore.open(str(tmp_path / "closed.db"), sleep=sleeps.append)
    assert store.has_collection("anything") is False
    store.close()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as raised:
        store.has_collection("anything")
    assert str(raised.value) == "has_collection: the store is closed"
    assert not isinstance(raised.value, StoreUnavailableError)
    assert sleeps == [] and not caplog.records and time.monotonic() - started < 1
    store.close()  # a second close does nothing


def test_a_lite_channel_sends_no_keepalive_pings(tmp_path: Path) -> None:
    """pymilvus pings every 10 s; Milvus Lite's gRPC server allows pings without data every
    5 minutes and sent long runs ``GOAWAY ... too_many_pings`` (an error line from gRPC's
    core on stderr). A Lite channel is opened without keepalive pings; its other options stay
    pymilvus' own."""
    store = MilvusStore.open(str(tmp_path / "pings.db"))
    try:
        options = store.client._get_connection()._grpc_options
        assert options == {"grpc.keepalive_time_ms": 2**31 - 1,
                           "grpc.keepalive_permit_without_calls": False}
    finally:
        store.close()
