"""Writes planned changes to Milvus: image rows first, product states last.

:meth:`MilvusSink.apply` returns only when every write of the plan was acknowledged, and
raises :class:`SinkError` otherwise (so the caller does not commit its Kafka offsets and the
batch is retried; every write here is idempotent, so a retry after a partial failure is safe).

What "acknowledged" means:

* Milvus server: an acknowledged insert/upsert/delete is in the server's write-ahead log
  (the message queue: rocksmq in standalone, Pulsar/Kafka/Woodpecker in a cluster). It
  survives a server crash and is visible to every read with ``Strong`` consistency (all reads
  here use it). ``flush()`` only seals segments into object storage; calling it per batch
  makes many small segments and is rate-limited, so it is not done by default.
* milvus-lite: an acknowledged write is in its WAL file (written through to the OS, not
  fsynced) and in its in-memory table: visible at once and recovered after a process crash;
  an OS crash or power loss may lose the latest writes (lite's flush does not fsync either).
  lite *does* need a flush for speed: rows still in the in-memory table are searched ~10x
  slower (5,000 x 1280-d rows: ~900 ms per search unflushed, ~95 ms flushed; a flush of a
  100-row batch takes ~60 ms, and lite compacts the small segments in the background).

So by default the sink flushes after each plan on milvus-lite and never on a server;
``flush_each_apply`` overrides that, and :meth:`MilvusSink.flush` flushes once (e.g. at
shutdown).

Product states are written after all image writes of the plan: a crash in between leaves the
old state, so the events are applied again on redelivery instead of being skipped as stale.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from schema.collection import (
    IMAGE_FIELDS,
    STATE_VECTOR,
    STATE_VECTOR_FIELD,
    CollectionSpec,
    EngineInfo,
    detect_engine,
)
from schema.records import ImageRecord, ProductState
from search.filters import ExpressionBuilder

log = logging.getLogger(__name__)

T = TypeVar("T")

UPSERT_CHUNK = 256
"""Rows per upsert call."""
ID_CHUNK = 512
"""Ids per ``in [...]`` expression."""
PRICE_CHUNK = 16
"""Products per price-update read (each read returns the rows' vectors)."""
QUERY_LIMIT = 16384
"""Rows one query may return (Milvus' result window)."""


class SinkError(RuntimeError):
    """A plan could not be written completely; nothing of it may be treated as done."""


@dataclass
class WritePlan:
    """What one batch changes. Build it by mutating the empty default."""

    upserts: list[ImageRecord] = field(default_factory=list)
    prune: dict[str, set[str]] = field(default_factory=dict)
    """product_id -> image pks to KEEP; the product's other image rows are deleted."""
    delete_products: list[str] = field(default_factory=list)
    """Products whose image rows are all deleted."""
    price_updates: dict[str, tuple[float, str, int]] = field(default_factory=dict)
    """product_id -> (price, currency, version): rewrites stored rows, keeps their vectors."""
    states: list[ProductState] = field(default_factory=list)
    """Written last, after all image writes succeeded."""

    def is_empty(self) -> bool:
        return not (
            self.upserts or self.prune or self.delete_products or self.price_updates or self.states
        )


@dataclass(frozen=True)
class CallTiming:
    op: str
    rows: int
    seconds: float
    attempts: int


@dataclass(frozen=True)
class WriteResult:
    upserted: int = 0
    """Image rows upserted (new and replaced)."""
    repriced: int = 0
    """Image rows rewritten by price updates."""
    deleted: int = 0
    """Image rows deleted (pruned or of deleted products)."""
    states: int = 0
    write_seconds: float = 0.0
    """Wall time of the whole apply()."""
    calls: tuple[CallTiming, ...] = ()
    """Each Milvus call: operation, rows, seconds (all attempts), attempts."""

    def seconds_by_op(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.calls:
            out[c.op] = out.get(c.op, 0.0) + c.seconds
        return out


_TRANSIENT_WORDS = (
    "unavailable",
    "timeout",
    "timed out",
    "deadline",
    "rate limit",
    "ratelimit",
    "not ready",
    "connection",
    "channel not",
    "too many requests",
    "service unavailable",
)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: connectivity, timeouts, rate limits, a server not ready yet."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            return code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            )
    except ImportError:  # pragma: no cover - grpc comes with pymilvus
        pass
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    if isinstance(exc, MilvusUnavailableException):
        return True
    if isinstance(exc, MilvusException):
        if getattr(exc, "code", None) in (8,):  # RATE_LIMIT
            return True
        text = str(getattr(exc, "message", exc)).lower()
        return any(w in text for w in _TRANSIENT_WORDS)
    return False


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class MilvusSink:
    """Reads product states and applies :class:`WritePlan` s to the collections of ``spec``.

    ``client`` is a ``pymilvus.MilvusClient`` whose collections were created with
    :func:`schema.collection.ensure_collections`. Nothing is read from the environment.
    """

    def __init__(
        self,
        client: Any,
        spec: CollectionSpec,
        *,
        engine: EngineInfo | None = None,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        call_timeout_s: float = 60.0,
        flush_each_apply: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._spec = spec
        self.engine = engine or detect_engine(client)
        self._templates = self.engine.supports_filter_templates
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._timeout = call_timeout_s
        self._flush_each_apply = (
            self.engine.is_lite if flush_each_apply is None else flush_each_apply
        )
        self._sleep = sleep
        self._calls: list[CallTiming] = []

    # -- helpers -----------------------------------------------------------------------

    def _call(self, op: str, rows: int, fn: Callable[[], T]) -> T:
        """Run one Milvus call with bounded retries on transient errors; time it."""
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn()
            except Exception as exc:
                if attempt < self._max_attempts and is_transient(exc):
                    delay = self._backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
                    log.warning(
                        "%s failed (attempt %d/%d), retrying in %.2fs: %s",
                        op,
                        attempt,
                        self._max_attempts,
                        delay,
                        exc,
                    )
                    self._sleep(delay)
                    continue
                self._calls.append(CallTiming(op, rows, time.perf_counter() - started, attempt))
                raise SinkError(f"{op} failed after {attempt} attempt(s): {exc}") from exc
            self._calls.append(CallTiming(op, rows, time.perf_counter() - started, attempt))
            return result

    def _query(
        self, op: str, collection: str, expr: str, params: dict[str, Any], fields: list[str]
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "filter": expr,
            "output_fields": fields,
            "limit": QUERY_LIMIT,
            "consistency_level": "Strong",
            "timeout": self._timeout,
        }
        if params:
            kwargs["filter_params"] = params
        rows: list[dict[str, Any]] = list(
            self._call(op, 0, partial(self._client.query, collection, **kwargs))
        )
        if len(rows) >= QUERY_LIMIT:
            raise SinkError(f"{op}: query hit the {QUERY_LIMIT}-row window; use smaller chunks")
        return rows

    def _in(self, field_name: str, values: Iterable[str]) -> tuple[str, dict[str, Any]]:
        return ExpressionBuilder(templates=self._templates).in_(field_name, values).build()

    def _upsert(self, op: str, collection: str, rows: list[dict[str, Any]]) -> int:
        done = 0
        for chunk in _chunks(rows, UPSERT_CHUNK):
            data = list(chunk)
            self._call(
                op, len(data), partial(self._client.upsert, collection, data, timeout=self._timeout)
            )
            done += len(data)
        return done

    def _delete_pks(self, op: str, pks: Sequence[str]) -> int:
        for chunk in _chunks(sorted(pks), ID_CHUNK):
            expr, params = self._in("pk", chunk)
            kwargs: dict[str, Any] = {"filter": expr, "timeout": self._timeout}
            if params:
                kwargs["filter_params"] = params
            self._call(op, len(chunk), partial(self._client.delete, self._spec.name, **kwargs))
        return len(pks)

    def _rows_of(
        self, op: str, product_ids: Sequence[str], fields: list[str]
    ) -> list[dict[str, Any]]:
        expr, params = self._in("product_id", product_ids)
        return self._query(op, self._spec.name, expr, params, fields)

    # -- reads -------------------------------------------------------------------------

    def get_states(self, product_ids: Sequence[str]) -> dict[str, ProductState]:
        """Stored states of these products (absent ones are missing from the result)."""
        out: dict[str, ProductState] = {}
        ids = sorted(set(product_ids))
        for chunk in _chunks(ids, ID_CHUNK):
            expr, params = (
                ExpressionBuilder(templates=self._templates).in_("product_id", chunk).build()
            )
            rows = self._query(
                "get_states",
                self._spec.state_name,
                expr,
                params,
                ["product_id", "version", "listed", "updated_at_ms"],
            )
            for row in rows:
                state = ProductState(
                    product_id=str(row["product_id"]),
                    version=int(row["version"]),
                    listed=bool(row["listed"]),
                    updated_at_ms=int(row["updated_at_ms"]),
                )
                out[state.product_id] = state
        return out

    # -- writes ------------------------------------------------------------------------

    def apply(self, plan: WritePlan) -> WriteResult:
        """Write the plan; return when all of it is acknowledged, else raise SinkError."""
        clash = {r.product_id for r in plan.upserts} & set(plan.delete_products)
        if clash:
            raise ValueError(
                f"a plan must not both upsert and delete a product: {sorted(clash)[:5]}"
            )
        started = time.perf_counter()
        self._calls = []
        try:
            upserted = self._upsert(
                "upsert_images", self._spec.name, [r.to_row() for r in plan.upserts]
            )
            repriced = self._apply_prices(plan.price_updates)
            deleted = self._prune(plan.prune)
            deleted += self._delete_products(plan.delete_products)
            states = self._upsert(
                "upsert_states",
                self._spec.state_name,
                [{**s.model_dump(), STATE_VECTOR_FIELD: list(STATE_VECTOR)} for s in plan.states],
            )
            if self._flush_each_apply:
                self.flush()
        except SinkError:
            raise
        except Exception as exc:  # a bug or bad data: still never report partial success
            raise SinkError(f"apply failed: {exc}") from exc
        return WriteResult(
            upserted=upserted,
            repriced=repriced,
            deleted=deleted,
            states=states,
            write_seconds=time.perf_counter() - started,
            calls=tuple(self._calls),
        )

    def flush(self) -> None:
        """Seal the collections' segments (see the module docs: rarely needed)."""
        for name in (self._spec.name, self._spec.state_name):
            self._call("flush", 0, partial(self._client.flush, name, timeout=self._timeout))

    def _apply_prices(self, updates: dict[str, tuple[float, str, int]]) -> int:
        """Read the products' rows (vectors included) and upsert them with the new price.

        Rows already at a newer version than the update are left alone.
        """
        done = 0
        for chunk in _chunks(sorted(updates), PRICE_CHUNK):
            rows = self._rows_of("read_for_price", chunk, list(IMAGE_FIELDS))
            changed: list[dict[str, Any]] = []
            for row in rows:
                price, currency, version = updates[str(row["product_id"])]
                if int(row["version"]) > version:
                    continue
                record = ImageRecord.model_validate(
                    {name: row[name] for name in IMAGE_FIELDS}
                    | {"price": float(price), "currency": currency, "version": int(version)}
                )
                changed.append(record.to_row())
            done += self._upsert("upsert_prices", self._spec.name, changed)
        return done

    def _prune(self, prune: dict[str, set[str]]) -> int:
        victims: list[str] = []
        for chunk in _chunks(sorted(prune), ID_CHUNK // 16):
            for row in self._rows_of("read_for_prune", chunk, ["pk", "product_id"]):
                if str(row["pk"]) not in prune[str(row["product_id"])]:
                    victims.append(str(row["pk"]))
        return self._delete_pks("delete_pruned", victims) if victims else 0

    def _delete_products(self, product_ids: list[str]) -> int:
        victims: list[str] = []
        for chunk in _chunks(sorted(set(product_ids)), ID_CHUNK // 16):
            victims.extend(str(r["pk"]) for r in self._rows_of("read_for_delete", chunk, ["pk"]))
        return self._delete_pks("delete_products", victims) if victims else 0
