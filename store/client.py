"""The ONE owner of the Milvus client: connection, consistency, timeouts, bounded retries, and
every read and write the project sends (nothing else imports pymilvus).

* **Retries.** Each call is retried on transient errors (:func:`store.errors.is_transient`) a
  few times with a short jittered backoff, then raised as :class:`StoreUnavailableError`;
  other errors are raised at once as :class:`StoreError`. Every write is idempotent (upserts
  by primary key, deletes by key), so a retry after a partial failure is safe.
* **Consistency** is the caller's choice, passed per read (no hidden default): see
  ``docs/scaling.md``.
* **Limits.** Milvus returns at most :data:`MAX_RESULT_WINDOW` rows per query or search;
  :meth:`MilvusStore.query` raises instead of silently truncating at it, :meth:`query_in`
  chunks id lists, and :meth:`scan` pages with a query iterator beyond it.
* **Timings.** :meth:`recording` collects each call's operation, rows, seconds and attempts
  on the calling thread (the sink reports them per batch).
* **Milvus Lite** keeps an exact in-memory copy of each image collection and answers
  searches, queries and counts from it (:mod:`store.lite_index`; ``memory_index=False``
  turns it off): Lite itself walks every row in Python per search.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

from schema.collection import CollectionSpec
from store.engine import MAX_RESULT_WINDOW, EngineInfo, IndexChoice, is_lite_uri, parse_engine
from store.errors import (
    StoreError,
    StoreUnavailableError,
    is_not_found,
    is_not_loaded,
    is_transient,
)
from store.expressions import Clause, ExpressionBuilder
from store.lite_index import (
    SYNC_BUILD_ROWS,
    VECTOR_FIELD,
    LiteIndex,
    LiteIndexes,
    Unsupported,
    field_kind,
    indexes_for,
    release,
)
from store.lite_process import LiteProcess, LiteProcessError
from store.recorder import ThreadRecorder

log = logging.getLogger(__name__)

T = TypeVar("T")

RECOVERY_S = 60.0
"""For this long after Milvus was last unreachable, "collection not found" counts as
transient: a restarted server answers it while it recovers (see :meth:`MilvusStore._recovering`)."""

Consistency: TypeAlias = Literal["Strong", "Bounded", "Session", "Eventually"]
Where: TypeAlias = "ExpressionBuilder | str"
"""A filter: a builder (values checked and rendered per engine) or a fixed expression."""

UPSERT_CHUNK = 256
"""Rows per upsert call."""
ID_CHUNK = 512
"""Ids per ``in [...]`` expression."""
SCAN_BATCH = 1_000
"""Rows per page when a Lite copy is built."""
REBUILD_AFTER_S = 30.0
"""A Lite copy whose build failed is not tried again before this."""
LITE_GRPC_OPTIONS: dict[str, Any] = {"grpc.keepalive_time_ms": 2**31 - 1,
                                     "grpc.keepalive_permit_without_calls": False}
"""No keepalive pings to a Milvus Lite child (gRPC reads ``INT_MAX`` as "never"). pymilvus pings
every 10 s; Lite's gRPC server keeps gRPC's default policy (no more often than every 5 minutes
without data) and answered long runs of ``eval``, ``serve`` and ``make faults`` with ``GOAWAY
ENHANCE_YOUR_CALM too_many_pings``: an error line from gRPC's core on stderr, no failed call.
The child is local, and its death is seen by :class:`LiteProcess`, not by pings."""


@dataclass(frozen=True)
class CallTiming:
    op: str
    rows: int
    seconds: float
    attempts: int


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def quiet_client_logs() -> None:
    """Quiet pymilvus' own loggers, for every process that opens a store (ingest, serve, a
    library's long-lived ``ProductSearch``). It logs a formatted traceback for every failed
    call (a read-only database: two dozen lines) and for every failed reconnection
    (``pymilvus.client.connection_manager``: dozens a second during an outage); the store
    raises each failure as one ``StoreError`` line (or retries it), and ingest's outage wait
    logs one line per attempt. Its query iterator's warning on every scan that Lite and 2.3
    servers give no MVCC stamp (it then uses the client's clock, as intended) is off too, its
    errors kept. Call after pymilvus is imported: its logging config resets earlier levels."""
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    for own_config in ("pymilvus.milvus_client", "pymilvus.bulk_writer"):  # levels of their own
        logging.getLogger(own_config).setLevel(logging.CRITICAL)
    logging.getLogger("pymilvus.client.iterator").setLevel(logging.ERROR)


class MilvusStore:
    """A Milvus client with the project's policies. Build one per process with :meth:`open`
    (tests may wrap a client they made) and hand it to the sink, search, versions, eval."""

    def __init__(
        self,
        client: Any,
        *,
        engine: EngineInfo | None = None,
        uri: str | None = None,
        timeout_s: float = 60.0,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        memory_index: bool = True,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self.uri = uri
        self.timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._recorder: ThreadRecorder[CallTiming] = ThreadRecorder()
        self._loaded: set[str] = set()  # loaded through this store: reloaded after a restart
        self._unreachable_at = -RECOVERY_S  # monotonic time Milvus was last seen unreachable
        self._closed = False
        self.engine = engine or parse_engine(
            str(self._call("server_version", 0, client.get_server_version)), uri
        )
        self._process: LiteProcess | None = None  # set by open(lite_process=True)
        self._schemas: dict[str, dict[str, Any]] = {}  # for column-wise upserts
        self._schema_lock = threading.Lock()
        self._lite_path = (os.path.abspath(uri) if memory_index and uri and self.engine.is_lite
                           else None)
        self._lite: LiteIndexes | None = (
            indexes_for(self._lite_path) if self._lite_path is not None else None)

    @classmethod
    def open(cls, uri: str, token: str = "", *, lite_process: bool = False,
             lite_speedups: bool = True, **kwargs: Any) -> MilvusStore:
        """Connect to a server URI, or open (creating its folder) a Milvus Lite ``.db`` file.

        ``lite_process``: run Milvus Lite in a child process of its own (store/lite_process.py)
        rather than in this one; :meth:`close` stops it. ``lite_speedups``: let that child
        replace the slow steps of Lite's write path (``lite_process.speed_up_lite``)."""
        from pymilvus import MilvusClient

        quiet_client_logs()  # after the import, whose logging config resets earlier levels
        process: LiteProcess | None = None
        connect_uri = uri
        if is_lite_uri(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            if lite_process:
                try:
                    process = LiteProcess.start(uri, speedups=lite_speedups)
                except LiteProcessError as exc:
                    raise StoreError(f"connect failed: {exc}") from exc
                connect_uri = process.uri
                log.debug("Milvus Lite for %s runs in process %d (speedups: %s)", uri,
                          process.pid, ",".join(process.speedups) or "none")
        options = {"grpc_options": LITE_GRPC_OPTIONS} if is_lite_uri(uri) else {}
        try:
            client = MilvusClient(uri=connect_uri, token=token, **options)
            store = cls(client, uri=uri, **kwargs)
        except Exception as exc:
            if process is not None:
                process.stop()
            if isinstance(exc, StoreError):
                raise
            raise _classify("connect", 1, exc) from exc
        store._process = process
        return store

    @property
    def client(self) -> Any:
        """The raw pymilvus client (tests inspect collections with it; product code must not)."""
        return self._client

    @property
    def templates(self) -> bool:
        return self.engine.supports_filter_templates

    def expr(self) -> ExpressionBuilder:
        """An empty expression builder rendering for this engine."""
        return ExpressionBuilder(templates=self.templates)

    def close(self) -> None:
        """Close the client (and stop a Milvus Lite child process); a second call does
        nothing."""
        if self._closed:
            return
        self._closed = True
        if self._lite_path is not None and self._lite is not None:
            self._lite = None
            release(self._lite_path)
        self._client.close()
        if self._process is not None:
            self._process.stop()
            self._process = None

    @property
    def lite_process(self) -> LiteProcess | None:
        """The child process serving this Milvus Lite database, when it runs in one."""
        return self._process

    # -- calls ---------------------------------------------------------------------------

    def recording(self) -> AbstractContextManager[list[CallTiming]]:
        """Collect the timings of this thread's calls made inside the block."""
        return self._recorder.recording()

    def _call(self, op: str, rows: int, fn: Callable[[], T]) -> T:
        """Run one Milvus call with bounded retries on transient errors; time it. After
        :meth:`close`, :class:`StoreError` at once: pymilvus' "should create connection
        first" reads as an outage, which was retried (~2.5 s of warnings) and raised as
        :class:`StoreUnavailableError`, telling callers to wait for a store that will not
        come back."""
        if self._closed:
            raise StoreError(f"{op}: the store is closed")
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn()
            except Exception as exc:
                self._check_process(op)
                if is_not_loaded(exc) and op != "load":
                    self._reload()
                transient = is_transient(exc) or self._recovering(exc)
                if transient and not is_not_loaded(exc) and not is_not_found(exc):
                    self._unreachable_at = time.monotonic()
                if attempt < self._max_attempts and transient:
                    delay = self._backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
                    log.warning("%s failed (attempt %d/%d), retrying in %.2fs: %s",
                                op, attempt, self._max_attempts, delay, exc)
                    self._sleep(delay)
                    continue
                self._record(op, rows, started, attempt)
                raise _classify(op, attempt, exc, transient) from exc
            self._record(op, rows, started, attempt)
            return result

    def _check_process(self, op: str) -> None:
        """:class:`StoreError` at once when the Milvus Lite child serving the database has
        exited (killed, out of memory): its port refuses every call, which read as an outage
        that ingest waited out for its whole budget (300 s by default) before it failed. It
        is not started again here: rows it had accepted but not flushed are gone with it, and
        only a restart of the command, which reads its events again from the last committed
        offset, writes them again."""
        process = self._process
        if process is None or process.alive():
            return
        raise StoreError(f"{op}: the Milvus Lite process for {process.path} exited "
                         f"(status {process.returncode}); restart the command to open the "
                         "database again")

    def _recovering(self, exc: BaseException) -> bool:
        """A "collection not found" within :data:`RECOVERY_S` of an unreachable server: a
        restarted 2.3 server says so while it recovers its collections (seen in
        ``make faults``: milvus-down), so it is waited out like the outage itself."""
        return is_not_found(exc) and time.monotonic() - self._unreachable_at < RECOVERY_S

    def _record(self, op: str, rows: int, started: float, attempts: int) -> None:
        self._recorder.note(CallTiming(op, rows, time.perf_counter() - started, attempts))

    def _filter(self, where: Where) -> dict[str, Any]:
        """``filter`` (and ``filter_params`` on engines with templates) for one call."""
        if isinstance(where, str):
            return {"filter": where}
        expr, params = where.build()
        return {"filter": expr, "filter_params": params} if params else {"filter": expr}

    # -- reads ---------------------------------------------------------------------------

    def query(
        self, collection: str, where: Where, fields: Sequence[str], *,
        consistency: Consistency, limit: int | None = MAX_RESULT_WINDOW, op: str = "query",
    ) -> list[dict[str, Any]]:
        """Rows matching ``where`` (at most ``limit``; None for aggregates such as
        ``count(*)``, which servers refuse to paginate). At the default limit a full window
        raises :class:`StoreError` rather than dropping rows: chunk the ids, or :meth:`scan`."""
        paging = {} if limit is None else {"limit": limit}
        copied = self._from_copy(collection, where, op, lambda index, clauses: index.query(
            clauses, fields, limit))
        rows = copied if copied is not None else [dict(r) for r in self._call(op, 0, partial(
            self._client.query, collection, output_fields=list(fields),
            consistency_level=consistency, timeout=self.timeout_s, **paging,
            **self._filter(where)))]
        if limit is not None and limit >= MAX_RESULT_WINDOW and len(rows) >= MAX_RESULT_WINDOW:
            raise StoreError(f"{op}: query hit the {MAX_RESULT_WINDOW}-row window; "
                             "use smaller chunks")
        return rows

    def query_in(
        self, collection: str, field: str, values: Iterable[str], fields: Sequence[str], *,
        consistency: Consistency, op: str = "query", chunk: int = ID_CHUNK,
        also: Callable[[ExpressionBuilder], ExpressionBuilder] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows whose ``field`` is one of ``values``, in chunks of ``chunk`` ids (``also`` adds
        clauses to each chunk's filter)."""
        out: list[dict[str, Any]] = []
        for part in _chunks(sorted(set(values)), chunk):
            builder = self.expr().in_(field, part)
            out.extend(self.query(collection, also(builder) if also else builder, fields,
                                  consistency=consistency, op=op))
        return out

    def exists(self, collection: str, where: Where, field: str, *,
               consistency: Consistency) -> bool:
        """Whether any row matches (reads one row's ``field``)."""
        return bool(self.query(collection, where, [field], limit=1, consistency=consistency,
                               op="exists"))

    def scan(
        self, collection: str, where: Where, fields: Sequence[str], *,
        consistency: Consistency, batch_size: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Every row matching ``where``, beyond the result window (a query iterator)."""
        it = self._call("scan", 0, partial(
            self._client.query_iterator, collection, batch_size=batch_size,
            output_fields=list(fields), consistency_level=consistency, timeout=self.timeout_s,
            **self._filter(where)))
        try:
            while True:
                rows = self._call("scan", 0, it.next)
                if not rows:
                    return
                yield from (dict(r) for r in rows)
        finally:
            it.close()

    def count(self, collection: str, *, consistency: Consistency, where: Where = "") -> int:
        """Exact live rows of a loaded collection (matching ``where``)."""
        rows = self.query(collection, where, ["count(*)"], consistency=consistency, limit=None,
                          op="count")
        return int(rows[0]["count(*)"]) if rows else 0

    def stored_rows(self, collection: str) -> int:
        """Rows in storage (works on released collections; counts deleted rows until
        compaction)."""
        stats = self._call("stats", 0, partial(self._client.get_collection_stats, collection))
        return int(stats["row_count"])

    def search(
        self, collection: str, vectors: Sequence[Sequence[float]], *, limit: int,
        where: Where, fields: Sequence[str], params: dict[str, Any],
        consistency: Consistency, op: str = "search",
    ) -> list[list[dict[str, Any]]]:
        """Per query vector, its hits (``{"distance", "entity"}``), best first."""
        copied = self._from_copy(collection, where, op, lambda index, clauses: index.search(
            vectors, min(limit, MAX_RESULT_WINDOW), clauses, fields))
        if copied is not None:
            return copied
        results = self._call(op, 0, partial(
            self._client.search, collection, data=[list(v) for v in vectors],
            limit=min(limit, MAX_RESULT_WINDOW), output_fields=list(fields), search_params=params,
            consistency_level=consistency, timeout=self.timeout_s, **self._filter(where)))
        return [[dict(hit) for hit in per_query] for per_query in results]

    # -- writes --------------------------------------------------------------------------

    def upsert(self, collection: str, rows: Sequence[dict[str, Any]], *,
               op: str = "upsert") -> int:
        """Upsert ``rows`` in chunks; returns how many."""
        index = self._lite_copy(collection)
        columns = self._columns_of(collection) if rows else None
        for part in _chunks(rows, UPSERT_CHUNK):
            data = list(part)
            send = (partial(self._upsert_columns, collection, data, columns) if columns
                    else partial(self._client.upsert, collection, data, timeout=self.timeout_s))
            self._write(index, partial(self._call, op, len(data), send), "upsert", data)
        return len(rows)

    def _columns_of(self, collection: str) -> dict[str, Any] | None:
        """The collection's schema for column-wise upserts (None: this client cannot).

        pymilvus packs a row-wise upsert value by value (~0.77 ms per 1,472-d image row,
        measured), a column-wise one list by list (~0.11 ms): at a server's ~1,800 rows/s
        the row-wise packing alone would use a whole core. ``MilvusClient`` only offers the
        row-wise call, so this goes through its connection's ``upsert`` (the call pymilvus'
        ``Collection.upsert`` makes), with the schema described once per collection."""
        if not callable(getattr(self._client, "_get_connection", None)):
            return None
        with self._schema_lock:
            found = self._schemas.get(collection)
        if found is None:
            found = self.describe(collection)
            with self._schema_lock:
                self._schemas[collection] = found
        return found

    def _upsert_columns(self, collection: str, rows: Sequence[dict[str, Any]],
                        schema: dict[str, Any]) -> Any:
        fields = [f for f in schema["fields"] if not f.get("auto_id")]
        names = {str(f["name"]) for f in fields}
        for row in rows:
            if row.keys() != names:
                raise StoreError(f"upsert into {collection}: a row has fields {sorted(row)}, "
                                 f"the collection {sorted(names)}")
        entities = [{"name": f["name"], "type": f["type"],
                     "values": [row[f["name"]] for row in rows]} for f in fields]
        return self._client._get_connection().upsert(collection, entities, schema=schema,
                                                     timeout=self.timeout_s)

    def delete(self, collection: str, where: Where, *, op: str = "delete") -> None:
        clauses = _clauses(where)
        index = self._lite_copy(collection)
        self._write(index, partial(self._call, op, 0, partial(
            self._client.delete, collection, timeout=self.timeout_s, **self._filter(where))),
            "delete_where", clauses)

    def delete_in(self, collection: str, field: str, values: Iterable[str], *,
                  op: str = "delete") -> int:
        """Delete rows whose ``field`` is one of ``values`` (chunked); returns how many ids."""
        ids = sorted(set(values))
        index = self._lite_copy(collection)
        for part in _chunks(ids, ID_CHUNK):
            where = self.expr().in_(field, part)
            self._write(index, partial(self._call, op, len(part), partial(
                self._client.delete, collection, timeout=self.timeout_s,
                **self._filter(where))), "delete_where", where.clauses())
        return len(ids)

    # -- the Lite copies (store/lite_index.py) ------------------------------------------

    def _write(self, index: LiteIndex | None, call: Callable[[], Any],
               kind: Literal["upsert", "delete_where"], payload: Any) -> None:
        """Run a write; mirror it into the collection's Lite copy once acknowledged (under
        the copy's write lock, so writes apply in the order Milvus took them). A write that
        failed (it may be half applied) or cannot be mirrored drops the copy."""
        with index.write_lock if index is not None else nullcontext():
            try:
                call()
            except BaseException:
                self._drop_copy(index)
                raise
            if index is None:
                return
            try:
                if payload is None:
                    raise Unsupported("a filter given as text")
                index.apply(kind, payload)
            except Unsupported as exc:
                log.info("Lite copy of %s dropped: %s", index.name, exc)
                self._drop_copy(index)
            except Exception:
                log.exception("Lite copy of %s dropped after a failed update", index.name)
                self._drop_copy(index)

    def _drop_copy(self, index: LiteIndex | None) -> None:
        if index is not None and self._lite is not None:
            self._lite.drop(index)

    def _forget(self, physical: str | None = None) -> None:
        with self._schema_lock:
            self._schemas.clear()
        if self._lite is not None:
            self._lite.forget(physical)

    def _lite_copy(self, name: str) -> LiteIndex | None:
        """The in-memory copy of collection (or alias) ``name``, built (or being built) on
        first use; None when not kept (not an image collection, not Lite, turned off)."""
        registry = self._lite
        if registry is None:
            return None
        with registry.lock:
            known, physical = name in registry.names, registry.names.get(name)
            index = registry.indexes.get(physical) if physical else None
        if index is not None:
            return index
        if not known:
            physical = self._resolve(registry, name)
        if physical is None:
            return None
        with registry.lock:
            index = registry.indexes.get(physical)
            if index is not None:
                return index
            if time.monotonic() - registry.failed_at.get(physical, -math.inf) < REBUILD_AFTER_S:
                return None
            try:
                index = LiteIndex(physical, *registry.schemas[physical])
            except (KeyError, ValueError):
                return None
            registry.indexes[physical] = index
        try:
            stored = self.stored_rows(physical)
        except StoreError:
            stored = SYNC_BUILD_ROWS + 1
        if stored <= SYNC_BUILD_ROWS:
            self._build(registry, index)
        else:
            log.info("building the in-memory copy of %s (%d rows) in the background",
                     physical, stored)
            threading.Thread(target=self._build, args=(registry, index), daemon=True,
                             name=f"lite-copy-{physical}").start()
        return index

    def _resolve(self, registry: LiteIndexes, name: str) -> str | None:
        """Physical collection behind ``name`` when it is kept in memory (remembered)."""
        try:
            info = self.describe(name)
        except StoreError:
            return None  # missing: ask again next time
        physical = str(info["collection_name"])
        fields: list[tuple[str, Any]] = []
        pk, dim = None, 0
        for f in info.get("fields", []):
            kind = field_kind(getattr(f.get("type"), "name", str(f.get("type"))))
            if kind is None:
                continue
            fields.append((str(f["name"]), kind))
            if f.get("is_primary"):
                pk = str(f["name"])
            if kind == "vector" and f["name"] == VECTOR_FIELD:
                dim = int(f.get("params", {}).get("dim", 0))
        kept = pk is not None and dim > 0
        with registry.lock:
            registry.names[name] = physical if kept else None
            if kept:
                registry.schemas[physical] = (fields, str(pk), dim)
        return physical if kept else None

    def _build(self, registry: LiteIndexes, index: LiteIndex) -> None:
        """Scan the collection into ``index`` (writes meanwhile are journaled)."""
        started = time.perf_counter()
        fields = [*index.fields, VECTOR_FIELD]
        try:
            batch: list[dict[str, Any]] = []
            for row in self.scan(index.name, "", fields, consistency="Strong",
                                 batch_size=SCAN_BATCH):
                batch.append(row)
                if len(batch) >= SCAN_BATCH:
                    index.load(batch)
                    batch = []
            index.load(batch)
            index.finish_build()
        except Exception as exc:
            log.warning("in-memory copy of %s not built (Milvus Lite answers): %s",
                        index.name, exc)
            with registry.lock:
                registry.failed_at[index.name] = time.monotonic()
            registry.drop(index)
            return
        log.info("in-memory copy of %s built: %d rows, %.0f MB, %.1f s", index.name,
                 len(index), index.nbytes / 2**20, time.perf_counter() - started)

    def _from_copy(self, collection: str, where: Where, op: str,
                   answer: Callable[[LiteIndex, Sequence[Clause]], T]) -> T | None:
        """``answer`` from the collection's Lite copy when it is ready and can (else None)."""
        if self._lite is None:
            return None
        clauses = _clauses(where)
        index = self._lite_copy(collection) if clauses is not None else None
        if index is None or not index.ready or clauses is None:
            return None
        started = time.perf_counter()
        try:
            result = answer(index, clauses)
        except Unsupported as exc:
            log.debug("%s on %s left to Milvus Lite: %s", op, collection, exc)
            return None
        self._record(op, 0, started, 1)
        return result

    def flush(self, *collections: str) -> None:
        """Seal segments (Milvus Lite searches flushed rows far faster; see the sink)."""
        for name in collections:
            self._call("flush", 0, partial(self._client.flush, name, timeout=self.timeout_s))

    # -- collections, loading, aliases ---------------------------------------------------

    def has_collection(self, name: str) -> bool:
        return bool(self._call("has_collection", 0, partial(self._client.has_collection, name)))

    def describe(self, name: str) -> dict[str, Any]:
        return dict(self._call("describe", 0, partial(self._client.describe_collection, name)))

    def physical_name(self, name: str) -> str:
        """The collection ``name`` reaches: itself, or the one behind an alias.

        ``describe_collection`` of an alias names the collection behind it, on Milvus Lite and
        on servers alike (and, unlike ``describe_alias``, logs no error for a non-alias).
        """
        return str(self.describe(name)["collection_name"])

    def vector_dim(self, name: str, field: str = "vector") -> int | None:
        """The dimension of vector ``field`` of collection ``name`` (None: no such field)."""
        for f in self.describe(name).get("fields", []):
            if f.get("name") == field:
                dim = f.get("params", {}).get("dim")
                return int(dim) if dim is not None else None
        return None

    def field_names(self, name: str) -> list[str]:
        return [str(f["name"]) for f in self.describe(name).get("fields", [])]

    def list_indexes(self, name: str) -> list[str]:
        return [str(i) for i in self._call("list_indexes", 0,
                                           partial(self._client.list_indexes, name))]

    def create_collection(self, name: str, schema: Any) -> None:
        self._forget()
        self._call("create_collection", 0, partial(
            self._client.create_collection, name, schema=schema, consistency_level="Strong"))

    def create_indexes(self, name: str, choices: Sequence[IndexChoice], *,
                       wait: bool = True) -> None:
        """Create ``choices``; ``wait=False`` skips polling the build state (0.5 s per index;
        an empty collection's indexes are complete at once)."""
        params = self._client.prepare_index_params()
        for c in choices:
            kwargs: dict[str, Any] = {"index_type": c.index_type, "index_name": c.field}
            if c.metric_type is not None:
                kwargs["metric_type"] = c.metric_type
            if c.params:
                kwargs["params"] = dict(c.params)
            params.add_index(c.field, **kwargs)
        self._call("create_index", 0, partial(self._client.create_index, name, params,
                                              sync=wait))

    def drop_collection(self, name: str) -> None:
        try:
            self._call("drop_collection", 0, partial(self._client.drop_collection, name))
        finally:
            self._forget(name)

    def rename_collection(self, old: str, new: str) -> None:
        try:
            self._call("rename", 0, partial(self._client.rename_collection, old, new))
        finally:
            self._forget(old)

    def create_alias(self, collection: str, alias: str) -> None:
        try:
            self._call("create_alias", 0, partial(self._client.create_alias, collection, alias))
        finally:
            self._forget()

    def alter_alias(self, collection: str, alias: str) -> None:
        try:
            self._call("alter_alias", 0, partial(self._client.alter_alias, collection, alias))
        finally:
            self._forget()

    def drop_alias(self, alias: str) -> None:
        try:
            self._call("drop_alias", 0, partial(self._client.drop_alias, alias))
        finally:
            self._forget()

    def list_aliases(self, collection: str) -> list[str]:
        """The aliases that reach ``collection`` now (of any base name)."""
        found = self._call("list_aliases", 0,
                           partial(self._client.list_aliases, collection_name=collection))
        aliases = found.get("aliases", []) if isinstance(found, dict) else found
        return [str(a) for a in aliases or []]

    def is_loaded(self, name: str) -> bool:
        state = self._call("load_state", 0, partial(self._client.get_load_state, name))
        return getattr(state["state"], "name", "") == "Loaded"

    def load(self, names: Sequence[str], *, timeout_s: float = 300.0, wait: bool = True) -> None:
        """Start loading ``names`` together (a 2.3 server takes ~2.5 s per collection) and,
        with ``wait``, block until all are searchable (else :class:`StoreUnavailableError`)."""
        for name in names:
            self._call("load", 0, partial(self._client.load_collection, name, _async=True))
            self._loaded.add(name)
        if wait:
            self.wait_loaded(names, timeout_s)

    def _reload(self) -> None:
        """Ask again for every collection this store loaded (a restarted server released
        them); the failed call is then retried like any transient failure."""
        for name in sorted(self._loaded):
            try:
                self._client.load_collection(name, _async=True)
            except Exception as exc:  # the retry of the failed call reports what matters
                log.warning("reloading %s failed: %s", name, exc)
        if self._loaded:
            log.warning("collections were released (server restarted?): reloading %s",
                        ", ".join(sorted(self._loaded)))

    def wait_loaded(self, names: Sequence[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(names)
        while pending:
            pending = [n for n in pending if not self.is_loaded(n)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StoreUnavailableError(
                    f"collections {pending} not loaded after {timeout_s:.0f}s")
            time.sleep(0.1)

    def drop_collections(self, spec: CollectionSpec) -> None:
        """Drop the image and state collections of ``spec`` (tests, eval teardown)."""
        for name in (spec.name, spec.state_name):
            if self.has_collection(name):
                self.drop_collection(name)


def _clauses(where: Where) -> tuple[Clause, ...] | None:
    """A filter as data (None: text, which only Milvus evaluates)."""
    if isinstance(where, ExpressionBuilder):
        return where.clauses()
    return () if not where.strip() else None


def _classify(
    op: str, attempts: int, exc: BaseException, transient: bool | None = None
) -> StoreError:
    if transient is None:
        transient = is_transient(exc)
    kind = StoreUnavailableError if transient else StoreError
    return kind(f"{op} failed after {attempts} attempt(s): {exc}")
