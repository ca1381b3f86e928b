"""The Lite child's speedups of milvus_lite's write path (store/lite_process.py,
``speed_up_lite``): each gives what milvus_lite's own step gives, a bad row is still refused with
milvus_lite's own error, the files stay readable by a milvus_lite that was not sped up, and the
child applies them (or not, when told)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

milvus_lite = pytest.importorskip("milvus_lite")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from milvus_lite.engine import collection as engine_collection  # noqa: E402
from milvus_lite.exceptions import SchemaValidationError  # noqa: E402
from milvus_lite.schema import validation  # noqa: E402
from milvus_lite.schema.arrow_builder import build_wal_data_schema  # noqa: E402
from milvus_lite.schema.types import CollectionSchema, DataType, FieldSchema  # noqa: E402
from milvus_lite.storage.memtable import MemTable  # noqa: E402

from schema.collection import CollectionSpec  # noqa: E402
from store import MilvusStore, ensure_collections  # noqa: E402
from store import lite_process as lp  # noqa: E402
from store.lite_process import LiteProcess  # noqa: E402
from tests.milvus_support import DIM, record, unit  # noqa: E402

needs_series = pytest.mark.skipif(
    not lp.speedups_fit(str(milvus_lite.__version__)),
    reason=f"milvus_lite {milvus_lite.__version__}: the speedups are for 3.2.x")

D = 6


def _schema() -> Any:
    return CollectionSchema(fields=[
        FieldSchema("pk", DataType.VARCHAR, is_primary=True, max_length=64),
        FieldSchema("vector", DataType.FLOAT_VECTOR, dim=D),
        FieldSchema("price", DataType.DOUBLE),
        FieldSchema("category_l1", DataType.VARCHAR, max_length=64),
    ])


def _row(pk: str, vector: Any, price: float = 1.0) -> dict[str, Any]:
    return {"pk": pk, "vector": vector, "price": price, "category_l1": "Shoes"}


@needs_series
def test_the_fast_vector_check_accepts_and_refuses_what_milvus_lite_does() -> None:
    original = engine_collection.validate_record
    fast = lp._fast_validate(original, validation._find_float_vector)
    schema = _schema()
    good = [_row("a", [0.5] * D), _row("b", [1, 2, 3, 4, 5, 6]),
            _row("c", [float(x) for x in np.float32([0.25] * D)])]
    for row in good:
        vector = row["vector"]
        assert fast(dict(row), schema) is None
        kept = dict(row)
        fast(kept, schema)
        assert kept["vector"] is vector  # the row leaves with its own list, values unchanged
    bad = [_row("d", [0.5] * (D - 1) + ["x"]),  # a string
           _row("e", [0.5] * (D - 1) + [True]),  # a bool is not a number here
           _row("f", [0.5] * (D - 1)),  # wrong length
           _row("g", None),
           _row("h", (0.5,) * (D - 1) + ("x",)),  # a tuple takes the original path
           {"pk": "i", "vector": [0.5] * D, "price": "cheap", "category_l1": "Shoes"}]
    for row in bad:
        with pytest.raises(SchemaValidationError) as want:
            original(dict(row), schema)
        with pytest.raises(SchemaValidationError) as got:
            fast(dict(row), schema)
        assert str(got.value) == str(want.value)


def _memtable_with_overwrites() -> tuple[Any, list[tuple[int, int]]]:
    """A memtable of three batches where later batches overwrite some pks, and the live
    rows the way ``MemTable.flush`` lists them (by pk, interleaving the batches)."""
    schema = _schema()
    table = MemTable(schema)
    wal = build_wal_data_schema(schema)
    rng = np.random.default_rng(3)
    seq = 0
    for batch_no, pks in enumerate([range(0, 6), range(3, 9), range(1, 4)]):
        rows = []
        for p in pks:
            seq += 1
            rows.append({"_seq": seq, "_partition": "_default", "pk": f"p{p}",
                         "vector": rng.standard_normal(D).astype(np.float32).tolist(),
                         "price": float(batch_no * 100 + p), "category_l1": f"c{p % 2}"})
        table.apply_insert(pa.RecordBatch.from_pylist(rows, schema=wal))
    live = [(b, r) for _pk, (b, r, _seq) in table.pk_index_snapshot()]
    return table, live


@needs_series
def test_flushed_rows_are_the_rows_milvus_lite_builds_value_by_value() -> None:
    table, live = _memtable_with_overwrites()
    assert len({b for b, _ in live}) == 3  # the live rows come from every batch
    want = MemTable._build_data_table(table, live)
    got = lp._build_data_table(table, live)
    assert got.schema == want.schema
    assert got.equals(want)
    assert got.column("price").to_pylist()[:3] == want.column("price").to_pylist()[:3]
    shuffled = list(reversed(live))  # order is kept, whatever it is
    assert lp._build_data_table(table, shuffled).equals(
        MemTable._build_data_table(table, shuffled))
    assert lp._build_data_table(table, []).num_rows == 0


@needs_series
def test_vector_columns_are_written_plain_and_read_back_the_same(tmp_path: Path) -> None:
    table, live = _memtable_with_overwrites()
    data = MemTable._build_data_table(table, live)
    path = tmp_path / "data.parquet"
    lp._PlainVectors(pq).write_table(data, str(path))
    assert pq.read_table(path).equals(data)
    columns = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {columns.column(i).path_in_schema.split(".")[0]: columns.column(i)
              for i in range(columns.num_columns)}
    assert chunks["vector"].compression == "UNCOMPRESSED"
    assert not chunks["vector"].has_dictionary_page
    assert chunks["category_l1"].compression == "SNAPPY"  # the others as before
    assert chunks["category_l1"].has_dictionary_page


@needs_series
def test_a_sped_up_child_writes_files_a_plain_milvus_lite_reads(tmp_path: Path) -> None:
    uri = str(tmp_path / "shop.db")
    spec = CollectionSpec(name="speedy", dim=DIM)
    store = MilvusStore.open(uri, lite_process=True)
    try:
        assert store.lite_process is not None
        assert store.lite_process.speedups == ("validate_record", "build_data_table",
                                               "plain_vectors")
        ensure_collections(store, spec)
        for start in (0, 40, 20):  # three flushes, the last overwriting rows of the first two
            store.upsert(spec.name, [record(f"p{i}", "a", unit(i % DIM), price=float(start + i))
                                     .to_row() for i in range(start, start + 40)])
            store.flush(spec.name)
    finally:
        store.close()
    plain = MilvusStore.open(uri, lite_process=False)  # milvus_lite as it is, in this process
    try:
        ensure_collections(plain, spec)
        found = plain.client.query(spec.name, filter='pk != ""',
                                   output_fields=["product_id", "vector", "price"],
                                   limit=1000, consistency_level="Strong")
    finally:
        plain.close()
    rows = {r["product_id"]: r for r in found}
    assert len(rows) == 80
    for i in (0, 19, 20, 59, 60, 79):
        start = 20 if 20 <= i < 60 else (0 if i < 20 else 40)
        assert rows[f"p{i}"]["price"] == float(start + i)
        assert np.allclose(rows[f"p{i}"]["vector"], unit(i % DIM))


def test_the_child_applies_no_speedup_when_told_not_to(tmp_path: Path) -> None:
    child = LiteProcess.start(str(tmp_path / "plain.db"), speedups=False)
    try:
        assert child.speedups == ()
    finally:
        child.stop()
