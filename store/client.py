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
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
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
from store.expressions import ExpressionBuilder
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


@dataclass(frozen=True)
class CallTiming:
    op: str
    rows: int
    seconds: float
    attempts: int


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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
        self.engine = engine or parse_engine(
            str(self._call("server_version", 0, client.get_server_version)), uri
        )

    @classmethod
    def open(cls, uri: str, token: str = "", **kwargs: Any) -> MilvusStore:
        """Connect to a server URI, or open (creating its folder) a Milvus Lite ``.db`` file."""
        from pymilvus import MilvusClient

        if is_lite_uri(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = MilvusClient(uri=uri, token=token)
        except Exception as exc:
            raise _classify("connect", 1, exc) from exc
        return cls(client, uri=uri, **kwargs)

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
        self._client.close()

    # -- calls ---------------------------------------------------------------------------

    def recording(self) -> AbstractContextManager[list[CallTiming]]:
        """Collect the timings of this thread's calls made inside the block."""
        return self._recorder.recording()

    def _call(self, op: str, rows: int, fn: Callable[[], T]) -> T:
        """Run one Milvus call with bounded retries on transient errors; time it."""
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn()
            except Exception as exc:
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
        rows = [dict(r) for r in self._call(op, 0, partial(
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
        results = self._call(op, 0, partial(
            self._client.search, collection, data=[list(v) for v in vectors],
            limit=min(limit, MAX_RESULT_WINDOW), output_fields=list(fields), search_params=params,
            consistency_level=consistency, timeout=self.timeout_s, **self._filter(where)))
        return [[dict(hit) for hit in per_query] for per_query in results]

    # -- writes --------------------------------------------------------------------------

    def upsert(self, collection: str, rows: Sequence[dict[str, Any]], *,
               op: str = "upsert") -> int:
        """Upsert ``rows`` in chunks; returns how many."""
        for part in _chunks(rows, UPSERT_CHUNK):
            data = list(part)
            self._call(op, len(data), partial(self._client.upsert, collection, data,
                                              timeout=self.timeout_s))
        return len(rows)

    def delete(self, collection: str, where: Where, *, op: str = "delete") -> None:
        self._call(op, 0, partial(self._client.delete, collection, timeout=self.timeout_s,
                                  **self._filter(where)))

    def delete_in(self, collection: str, field: str, values: Iterable[str], *,
                  op: str = "delete") -> int:
        """Delete rows whose ``field`` is one of ``values`` (chunked); returns how many ids."""
        ids = sorted(set(values))
        for part in _chunks(ids, ID_CHUNK):
            self._call(op, len(part), partial(
                self._client.delete, collection, timeout=self.timeout_s,
                **self._filter(self.expr().in_(field, part))))
        return len(ids)

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
        self._call("drop_collection", 0, partial(self._client.drop_collection, name))

    def rename_collection(self, old: str, new: str) -> None:
        self._call("rename", 0, partial(self._client.rename_collection, old, new))

    def create_alias(self, collection: str, alias: str) -> None:
        self._call("create_alias", 0, partial(self._client.create_alias, collection, alias))

    def alter_alias(self, collection: str, alias: str) -> None:
        self._call("alter_alias", 0, partial(self._client.alter_alias, collection, alias))

    def drop_alias(self, alias: str) -> None:
        self._call("drop_alias", 0, partial(self._client.drop_alias, alias))

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


def _classify(
    op: str, attempts: int, exc: BaseException, transient: bool | None = None
) -> StoreError:
    if transient is None:
        transient = is_transient(exc)
    kind = StoreUnavailableError if transient else StoreError
    return kind(f"{op} failed after {attempts} attempt(s): {exc}")
