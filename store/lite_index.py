"""An exact in-process copy of each Milvus Lite image collection, searched with numpy.

Why (measured, docs/scaling.md): milvus-lite 3.x runs in this process, in pure Python. A
search walks every stored row in Python (dedup of upserted keys and tombstones, ~1.3 µs a
row: 27 ms at 20k rows, ~150 ms at 100k, whatever the index) and, with FLAT, copies and
normalises the whole vector matrix three times per search (~90 ms at 20k rows); faiss HNSW
removes the copies, not the walk. A query walks the rows the same way (~0.3 ms per row
returned). Both are far from 50 ms at 100k rows.

What makes a copy safe: a Lite ``.db`` is opened by one process only (milvus-lite holds an
exclusive file lock on it), and in that process every write goes through
:class:`store.MilvusStore` (the store is the only owner of pymilvus). So the store keeps,
per image collection (a collection with a ``vector`` field), the rows in memory: the raw
float32 vectors with their inverse norms (cosine, exact, as Lite's FLAT computes it) and
every scalar field, strings dictionary-encoded. Searches, queries and counts whose filter
comes from an :class:`store.expressions.ExpressionBuilder` are answered from it: the
filter's clauses (:class:`store.expressions.Term`) are evaluated on the columns, and the
matching rows are scored with one matrix product.

How it stays identical to Milvus:

* It is built from the collection itself, with a scan through the public API, the first
  time the store touches the collection (in the background above :data:`SYNC_BUILD_ROWS`
  stored rows; Milvus Lite answers until it is ready). Writes made while it builds are
  journaled and replayed after the scan, so the copy converges to the collection.
* A write is applied after Milvus acknowledged it, under the collection's write lock (two
  writers of one key cannot apply out of order). A write that fails, or that the copy
  cannot interpret (a filter given as text), drops the copy; the next touch rebuilds it.
* Anything it cannot evaluate exactly as Milvus would (a text filter, an unknown field, a
  value of another type than the column) is left to Milvus Lite, which answers (or raises)
  as before.

Memory: rows x dim x 4 bytes (590 MB at 100k rows of 1,472 dimensions), plus the columns.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

from store.blas import one_blas_thread
from store.expressions import Clause, Scalar, Term

log = logging.getLogger(__name__)

VECTOR_FIELD = "vector"
"""Collections with a float vector field of this name get a copy (the image collections)."""
SYNC_BUILD_ROWS = 5_000
"""Up to this many stored rows the copy is built in the calling thread (a scan of 5,000 rows
takes ~3 s on Lite); above, in the background while Milvus Lite answers."""
MIN_CAPACITY = 1_024
GROWTH = 1.25
"""Capacity grows by this factor (a doubling would leave up to half the matrix unused)."""
FULL_PRODUCT_SHARE = 0.3
"""Above this share of matching rows, score every row and pick the matching ones (one pass
over the matrix) rather than gather the matching rows first (a copy)."""

SMALL_PRODUCT_ROWS = 4_096
"""Up to this many matching rows, score them with numpy's einsum rather than BLAS: at ~1,000
rows einsum took 0.1-0.3 ms and BLAS 11-17 ms (its threads waking up on a busy box); at
10,000 rows of 100k, BLAS was twice as fast in the scale bench (37 against 72 ms p50). A
collection this small scored whole uses BLAS in one thread (:mod:`store.blas`)."""

FieldKind: TypeAlias = Literal["str", "float", "int", "bool", "vector"]

_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le,
}


class Unsupported(Exception):
    """The copy cannot evaluate this exactly as Milvus would: ask Milvus Lite."""


def field_kind(data_type: str) -> FieldKind | None:
    """The column kind of a pymilvus ``DataType`` name (None: not kept, e.g. JSON)."""
    if data_type == "VARCHAR":
        return "str"
    if data_type in ("FLOAT", "DOUBLE"):
        return "float"
    if data_type in ("INT8", "INT16", "INT32", "INT64"):
        return "int"
    if data_type == "BOOL":
        return "bool"
    if data_type == "FLOAT_VECTOR":
        return "vector"
    return None


def _grow(array: NDArray[Any], capacity: int) -> NDArray[Any]:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out


def _values(term: Term) -> tuple[Scalar, ...]:
    return term.value if isinstance(term.value, tuple) else (term.value,)


class _Strings:
    """A dictionary-encoded VARCHAR column (codes per slot; values never forgotten until the
    copy is rebuilt, bounded by the distinct values written)."""

    def __init__(self, capacity: int) -> None:
        self.codes: NDArray[np.int32] = np.zeros(capacity, np.int32)
        self.values: list[str] = []
        self.lookup: dict[str, int] = {}

    def grow(self, capacity: int) -> None:
        self.codes = _grow(self.codes, capacity)

    def set(self, slot: int, value: Any) -> None:
        if not isinstance(value, str):
            raise Unsupported(f"not a string: {value!r}")
        code = self.lookup.get(value)
        if code is None:
            code = self.lookup[value] = len(self.values)
            self.values.append(value)
        self.codes[slot] = code

    def get(self, slot: int) -> str:
        return self.values[int(self.codes[slot])]

    def mask(self, term: Term, n: int) -> NDArray[np.bool_]:
        values = _values(term)
        if not all(isinstance(v, str) for v in values):
            raise Unsupported(f"{term.field}: a string column compared with {values!r}")
        if term.op in ("==", "in", "!=", "not in"):
            lut = np.zeros(len(self.values) + 1, dtype=bool)
            for value in values:
                code = self.lookup.get(str(value))
                if code is not None:
                    lut[code] = True
            hit: NDArray[np.bool_] = lut[self.codes[:n]]
            return hit if term.op in ("==", "in") else ~hit
        compare = _ORDER[term.op]
        lut = np.fromiter((bool(compare(v, term.value)) for v in self.values), dtype=bool,
                          count=len(self.values))
        out: NDArray[np.bool_] = lut[self.codes[:n]] if len(lut) else np.zeros(n, dtype=bool)
        return out


class _Numbers:
    """A FLOAT/DOUBLE (float64), INT* (int64) or BOOL column."""

    def __init__(self, kind: FieldKind, capacity: int) -> None:
        self.kind = kind
        dtype = {"float": np.float64, "int": np.int64, "bool": np.bool_}[kind]
        self.data: NDArray[Any] = np.zeros(capacity, dtype=dtype)

    def grow(self, capacity: int) -> None:
        self.data = _grow(self.data, capacity)

    def _accepts(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.kind == "int":
            return isinstance(value, int)
        return isinstance(value, (int, float))

    def set(self, slot: int, value: Any) -> None:
        if not self._accepts(value) and not (self.kind == "float" and isinstance(value, int)):
            raise Unsupported(f"not a {self.kind}: {value!r}")
        self.data[slot] = value

    def get(self, slot: int) -> float | int | bool:
        value: float | int | bool = self.data[slot].item()
        return value

    def mask(self, term: Term, n: int) -> NDArray[np.bool_]:
        values = _values(term)
        if self.kind == "int" and any(isinstance(v, float) for v in values):
            raise Unsupported(f"{term.field}: an integer column compared with a float")
        if not all(self._accepts(v) or (self.kind == "float" and isinstance(v, int))
                   for v in values):
            raise Unsupported(f"{term.field}: a {self.kind} column compared with {values!r}")
        column = self.data[:n]
        if term.op in ("in", "not in"):
            hit: NDArray[np.bool_] = np.isin(column, np.asarray(values, dtype=column.dtype))
            return hit if term.op == "in" else ~hit
        out: NDArray[np.bool_] = np.asarray(_ORDER[term.op](column, term.value), dtype=bool)
        return out


class LiteIndex:
    """The in-memory copy of one collection (see the module docs)."""

    def __init__(self, name: str, fields: Sequence[tuple[str, FieldKind]], pk_field: str,
                 dim: int) -> None:
        self.name = name
        self.fields = [f for f, kind in fields if kind != "vector"]
        """The scalar fields kept (the vector is the matrix)."""
        self.pk_field = pk_field
        self.dim = dim
        self.write_lock = threading.Lock()
        """Held by a writer across its Milvus call and :meth:`apply` (keeps writes in order)."""
        self._data_lock = threading.Lock()
        self._columns: dict[str, _Strings | _Numbers] = {}
        for field, kind in fields:
            if kind == "str":
                self._columns[field] = _Strings(0)
            elif kind != "vector":
                self._columns[field] = _Numbers(kind, 0)
        if pk_field not in self._columns:
            raise ValueError(f"primary key {pk_field!r} is not a kept column")
        self._vectors: NDArray[np.float32] = np.zeros((0, dim), dtype=np.float32)
        self._inv_norm: NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._alive: NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._n = 0
        self._journal: list[tuple[str, Any]] | None = []
        self.ready = False
        """Whether the copy holds the whole collection (before: Milvus Lite answers)."""
        self.failed = False

    # -- size --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def nbytes(self) -> int:
        """Bytes held by the vector matrix and the columns' arrays."""
        arrays = [self._vectors, self._inv_norm, self._alive]
        arrays += [c.codes if isinstance(c, _Strings) else c.data for c in self._columns.values()]
        return sum(a.nbytes for a in arrays)

    def _slot(self) -> int:
        if self._free:
            return self._free.pop()
        if self._n == len(self._alive):
            capacity = max(MIN_CAPACITY, int(self._n * GROWTH))
            self._vectors = _grow(self._vectors, capacity)
            self._inv_norm = _grow(self._inv_norm, capacity)
            self._alive = _grow(self._alive, capacity)
            for column in self._columns.values():
                column.grow(capacity)
        self._n += 1
        return self._n - 1

    # -- building ----------------------------------------------------------------------

    def load(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rows of the build's scan (a later journaled write to the same key wins)."""
        with self._data_lock:
            self._upsert(rows)

    def finish_build(self) -> None:
        """Replay the writes journaled while the scan ran; become ready."""
        with self._data_lock:
            journal, self._journal = self._journal or [], None
            for kind, payload in journal:
                self._apply(kind, payload)
            self.ready = True

    def apply(self, kind: Literal["upsert", "delete_pks", "delete_where"], payload: Any) -> None:
        """Mirror one acknowledged write (journaled while building). Raises
        :class:`Unsupported` when it cannot: the caller drops the copy."""
        with self._data_lock:
            if self._journal is not None:
                self._journal.append((kind, payload))
            else:
                self._apply(kind, payload)

    def _apply(self, kind: str, payload: Any) -> None:
        if kind == "upsert":
            self._upsert(payload)
        elif kind == "delete_pks":
            self._delete(payload)
        else:
            slots = np.flatnonzero(self._mask(payload))
            pks = self._columns[self.pk_field]
            self._delete([str(pks.get(int(s))) for s in slots])

    def _upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        matrix = np.asarray([r[VECTOR_FIELD] for r in rows], dtype=np.float32)
        if matrix.shape != (len(rows), self.dim):
            raise Unsupported(f"vectors of shape {matrix.shape}, expected (*, {self.dim})")
        norms = np.linalg.norm(matrix, axis=1)
        inverse = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
        for row, vector, inv in zip(rows, matrix, inverse, strict=True):
            pk = row[self.pk_field]
            slot = self._slot_of.get(pk)
            if slot is None:
                slot = self._slot()
            for field, column in self._columns.items():
                column.set(slot, row[field])
            self._vectors[slot] = vector
            self._inv_norm[slot] = inv
            self._alive[slot] = True
            self._slot_of[pk] = slot

    def _delete(self, pks: Iterable[str]) -> None:
        for pk in pks:
            slot = self._slot_of.pop(pk, None)
            if slot is not None:
                self._alive[slot] = False
                self._free.append(slot)

    # -- reads -------------------------------------------------------------------------

    def _mask(self, clauses: Sequence[Clause]) -> NDArray[np.bool_]:
        mask = self._alive[: self._n].copy()
        for clause in clauses:
            either = np.zeros(self._n, dtype=bool)
            for term in clause:
                column = self._columns.get(term.field)
                if column is None:
                    raise Unsupported(f"no column {term.field!r}")
                either |= column.mask(term, self._n)
            mask &= either
        return mask

    def _value(self, field: str, slot: int) -> Any:
        if field == VECTOR_FIELD:
            return self._vectors[slot].tolist()
        return self._columns[field].get(slot)

    def _check_fields(self, fields: Sequence[str]) -> None:
        for field in fields:
            if field != VECTOR_FIELD and field not in self._columns:
                raise Unsupported(f"no column {field!r}")

    def search(self, queries: Sequence[Sequence[float]], limit: int,
               clauses: Sequence[Clause], fields: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Per query, the ``limit`` matching rows of highest cosine similarity, best first,
        shaped like Milvus' hits (``{pk, "distance", "entity"}``)."""
        self._check_fields(fields)
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise Unsupported(f"queries of shape {q.shape}, the collection holds {self.dim}-d")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = (q / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
        with self._data_lock:
            slots = np.flatnonzero(self._mask(clauses))
            if slots.size == 0:
                return [[] for _ in range(len(q))]
            if slots.size > FULL_PRODUCT_SHARE * self._n:
                # A small catalog in one BLAS thread: threads cost more than they save.
                with one_blas_thread if self._n <= SMALL_PRODUCT_ROWS else nullcontext():
                    scores = (self._vectors[: self._n] @ q.T)[slots]
            elif slots.size > SMALL_PRODUCT_ROWS:
                scores = self._vectors[slots] @ q.T
            else:  # einsum: a multi-threaded BLAS call on a thousand rows of a busy 2-core
                # box took 11-17 ms against 0.1-0.3 ms (threads waking up)
                scores = np.einsum("ij,kj->ik", self._vectors[slots], q)
            scores *= self._inv_norm[slots, None]
            out = []
            for column in scores.T:
                top = np.arange(column.size) if column.size <= limit else np.argpartition(
                    -column, limit - 1)[:limit]
                top = top[np.lexsort((slots[top], -column[top]))]
                out.append([self._hit(int(slots[i]), float(column[i]), fields) for i in top])
            return out

    def _hit(self, slot: int, score: float, fields: Sequence[str]) -> dict[str, Any]:
        return {
            self.pk_field: self._columns[self.pk_field].get(slot),
            "distance": score,
            "entity": {f: self._value(f, slot) for f in fields if f != self.pk_field},
        }

    def query(self, clauses: Sequence[Clause], fields: Sequence[str],
              limit: int | None) -> list[dict[str, Any]]:
        """Matching rows (``fields`` and the primary key), or ``[{"count(*)": n}]``."""
        if "count(*)" in fields:
            if len(fields) > 1:
                raise Unsupported("count(*) with other fields")
            with self._data_lock:
                return [{"count(*)": int(self._mask(clauses).sum())}]
        self._check_fields(fields)
        with self._data_lock:
            slots = np.flatnonzero(self._mask(clauses))[:limit]
            names = [self.pk_field, *(f for f in fields if f != self.pk_field)]
            return [{f: self._value(f, int(s)) for f in names} for s in slots]


class LiteIndexes:
    """The copies of one Lite ``.db`` in this process, shared by every store opened on it,
    with the alias -> collection names they resolve."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.names: dict[str, str | None] = {}
        """Collection or alias -> the physical collection kept in memory (None: not kept)."""
        self.indexes: dict[str, LiteIndex] = {}
        self.schemas: dict[str, tuple[list[tuple[str, FieldKind]], str, int]] = {}
        """Physical collection -> (fields and kinds, primary key, dimension)."""
        self.failed_at: dict[str, float] = {}

    def forget(self, physical: str | None = None) -> None:
        """After DDL: resolve names again; drop ``physical``'s copy."""
        with self.lock:
            self.names.clear()
            if physical is not None:
                self.indexes.pop(physical, None)

    def drop(self, index: LiteIndex) -> None:
        with self.lock:
            if self.indexes.get(index.name) is index:
                del self.indexes[index.name]


_REGISTRY: dict[str, LiteIndexes] = {}
_REGISTRY_LOCK = threading.Lock()


def indexes_for(path: str) -> LiteIndexes:
    """The shared copies of the Lite database at ``path`` (counted: see :func:`release`)."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.setdefault(path, LiteIndexes())
        found.users += 1
        return found


def release(path: str) -> None:
    """A store on ``path`` closed: the last one frees the copies (another process may open
    the database once this one has let it go)."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(path)
        if found is not None:
            found.users -= 1
            if found.users <= 0:
                del _REGISTRY[path]
