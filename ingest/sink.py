"""Writes planned changes through the store: image rows, then product states, then deletes.

:meth:`MilvusSink.apply` returns only when every write of the plan was acknowledged, and
raises :class:`store.StoreError` otherwise (:class:`store.StoreUnavailableError` when Milvus
was unreachable after the store's own short retries), so the caller does not commit its Kafka
offsets and the batch is retried; every write here is idempotent, so a retry after a partial
failure is safe.

What "acknowledged" means:

* Milvus server: an acknowledged insert/upsert/delete is in the server's write-ahead log
  (the message queue: rocksmq in standalone, Pulsar/Kafka/Woodpecker in a cluster). It
  survives a server crash and is visible to every read with ``Strong`` consistency.
  ``flush()`` only seals segments into object storage; calling it per batch makes many small
  segments and is rate-limited, so it is not done by default.
* milvus-lite: an acknowledged write is in its WAL file (written through to the OS, not
  fsynced) and in its in-memory table: visible at once and recovered after a process crash;
  an OS crash or power loss may lose the latest writes (lite's flush does not fsync either).
  lite *does* need a flush for speed: rows still in the in-memory table are searched ~10x
  slower (5,000 x 1280-d rows: ~900 ms per search unflushed, ~95 ms flushed; a flush of a
  100-row batch takes ~60 ms, and lite compacts the small segments in the background).

So by default the sink flushes milvus-lite at most every ``flush_interval_s`` (after the apply
that crosses it; rows written meanwhile are visible, only searched more slowly) and never a
server after an apply; :meth:`MilvusSink.flush` flushes once (e.g. at shutdown), and
:meth:`MilvusSink.seal_if_idle` once writes pause: a server searches the rows of unsealed
(growing) segments one by one, so the tail of a load slowed every search until sealed. With the
store's in-memory copy (store/lite_index.py) searches no longer need flushed rows, but a less
frequent flush saves nothing: Lite's flush costs ~0.7 ms per row it seals (it rebuilds the rows
value by value in Python), whenever it runs, and Lite flushes by itself at 128 MB of in-memory
table (~20k image rows); a flush every 2 s stalls the write stage ~1 s at most, one every 60 s
stalled it 13 s (measured), which the events queued behind it would wait.

State reads (docs/scaling.md): ingest is the only writer of a product's state in its partition,
so the states this sink wrote are kept in memory and answer without a read (read-your-writes
without waiting for the server's time tick). Other products are read with ``Bounded``
consistency, except during ``strong_window_s`` after the sink starts or after
:meth:`MilvusSink.expect_foreign_writes` (a partition assignment: another process may have just
written those products), when reads are ``Strong``.

The same goes for a product's image rows: what this sink wrote last (the pks of its latest
upsert, none after a delete) is remembered with its state, so pruning the images an update
dropped needs no read of them (on a server, a Strong read per 32 products took 70% of the
write time at 4,000 rows); the rows of other products are read with the state reads'
consistency, on a helper thread while the new image rows are written (the read only looks for
pks the plan does not keep, which that write does not touch): on a busy 2.3.5 server each of
the two took ~40 ms a batch, one after the other before.

A product's state row is the commit point of its version. The order of an apply:

1. upsert the image rows, then rewrite repriced rows (a price change keeps a row's
   ``version``: it stays the version of the write that embedded the image, so rows above the
   stored state's version are only ever leftovers of an unfinished upsert);
2. upsert the states;
3. delete: the rows each upsert no longer lists (prune), those of delisted products, and
   those of repaired products (:class:`ingest.plan.Repair`).

A crash before 2 leaves the old state with extra rows above its version: the events are
applied again on redelivery (not skipped as stale), and an upsert that then fails, e.g. its
new photo is gone, is dead-lettered with a repair that deletes them; before, its rows stayed
searchable beside the old version's. A crash after 2 leaves rows the new version dropped: the
redelivered event is stale (not embedded again) but its delete is repeated by a repair; before,
with the deletes ahead of the states, a crash after the prune left the old version's state
over the new version's photos. A repair reads the product's rows like a prune (none when this
sink wrote the product itself: its own apply finished, so there is nothing to repair).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ingest.plan import Repair, WritePlan
from schema.collection import (
    IMAGE_FIELDS,
    STATE_FIELDS,
    STATE_VECTOR,
    STATE_VECTOR_FIELD,
    CollectionSpec,
)
from schema.events import MAX_IMAGES_PER_PRODUCT
from schema.records import ImageRecord, ProductState
from store import (
    MAX_RESULT_WINDOW,
    CallTiming,
    Consistency,
    MilvusStore,
    StoreError,
    is_transient,
)

__all__ = ["MilvusSink", "SinkError", "WriteResult", "is_transient", "read_states"]

log = logging.getLogger(__name__)

SinkError = StoreError
"""What :meth:`MilvusSink.apply` raises (the store's error; :class:`store.StoreUnavailableError`
for an outage)."""

PRODUCT_CHUNK = MAX_RESULT_WINDOW // (2 * MAX_IMAGES_PER_PRODUCT)
"""Products per read of their image rows (prune and delete): 256, whose rows (at most 32 each)
fit half the result window. One read per batch rather than one per 32 products (a Strong
read costs ~200 ms on a server)."""
SEAL_IDLE_S = 5.0
"""Flush once writes have paused this long (:meth:`MilvusSink.seal_if_idle`)."""
SEAL_MIN_INTERVAL_S = 60.0
"""...but not more often than this, so a trickle of events does not cut a segment each."""
LITE_FLUSH_INTERVAL_S = 2.0
"""Milvus Lite: flush at most this often (a flush per apply cost 31-40% of the write time)."""
PRICE_CHUNK = 16
"""Products per price-update read (each read returns the rows' vectors)."""


@dataclass(frozen=True)
class WriteResult:
    upserted: int = 0
    """Image rows upserted (new and replaced)."""
    repriced: int = 0
    """Image rows rewritten by price updates."""
    deleted: int = 0
    """Image rows deleted (pruned, of deleted products, or repaired)."""
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


def read_states(
    store: MilvusStore, collection: str, product_ids: Sequence[str], *,
    consistency: Consistency,
) -> dict[str, ProductState]:
    """Stored states of these products in ``collection`` (absent ones are missing)."""
    rows = store.query_in(collection, "product_id", product_ids, STATE_FIELDS,
                          consistency=consistency, op="get_states")
    return {str(r["product_id"]): state_of(r) for r in rows}


def state_of(row: dict[str, Any]) -> ProductState:
    """A stored state row as a :class:`ProductState`."""
    return ProductState.model_validate({name: row[name] for name in STATE_FIELDS})


class MilvusSink:
    """Reads product states and applies :class:`WritePlan` s to the collections of ``spec``
    (created with :func:`store.ensure_collections`). Nothing is read from the environment."""

    def __init__(
        self,
        store: MilvusStore,
        spec: CollectionSpec,
        *,
        flush_interval_s: float | None = None,
        state_consistency: Consistency = "Bounded",
        strong_window_s: float = 10.0,
        remembered_states: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._spec = spec
        self.engine = store.engine
        self._flush_interval_s = (
            flush_interval_s if flush_interval_s is not None
            else LITE_FLUSH_INTERVAL_S if store.engine.is_lite else math.inf
        )
        self._state_consistency: Consistency = state_consistency
        self._strong_window_s = strong_window_s
        self._clock = clock
        self._strong_until = clock() + strong_window_s
        self._flushed_at = clock()
        self._wrote_at: float | None = None
        """When an apply last wrote, if it did since the last flush."""
        self._written: OrderedDict[str, tuple[ProductState | None,
                                              frozenset[str] | None]] = OrderedDict()
        """Per product this sink wrote or read: its state (None: none stored) and its image
        pks (None: not known)."""
        self._applying: set[str] = set()
        """Products whose states an apply in progress is writing."""
        self._epoch = 0
        """Bumped when what was read may be stale (a failed apply, a partition assignment)."""
        self._remember = remembered_states
        self._lock = threading.Lock()  # expect_foreign_writes runs on the consumer's thread
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sink-read")
        """Reads the stored image pks of products this sink did not write during an apply."""

    def expect_foreign_writes(self) -> None:
        """Another process may have written products this sink will now handle (a partition
        was assigned): forget the remembered states and read Strong for a while."""
        with self._lock:
            self._written.clear()
            self._epoch += 1
            self._strong_until = self._clock() + self._strong_window_s

    def state_read_consistency(self) -> Consistency:
        """What the next state read will use."""
        return "Strong" if self._clock() < self._strong_until else self._state_consistency

    # -- reads -------------------------------------------------------------------------

    def get_states(self, product_ids: Sequence[str]) -> dict[str, ProductState]:
        """Stored states of these products (absent ones are missing from the result).

        A ``Bounded`` read is remembered, absent states too, like this sink's own writes (it
        is the only writer of its partition's products): the write stage then plans against
        what the prepare stage read, without a second read (~40 ms a batch on a busy
        server). Not remembered: ``Strong`` reads (the window in which a previous owner may
        still write), and products an apply began writing, or whose apply failed, since the
        read started (the read may predate that write)."""
        with self._lock:
            known = {pid: self._written[pid][0] for pid in product_ids
                     if pid in self._written}
            epoch = self._epoch
        rest = [pid for pid in product_ids if pid not in known]
        if rest:
            consistency = self.state_read_consistency()
            read = read_states(self._store, self._spec.state_name, rest,
                               consistency=consistency)
            if consistency != "Strong":
                self._remember_read(rest, read, epoch)
            known.update(read)
        return {pid: state for pid, state in known.items() if state is not None}

    def _remember_read(self, product_ids: Sequence[str], read: dict[str, ProductState],
                       epoch: int) -> None:
        with self._lock:
            if self._epoch != epoch:
                return
            for pid in product_ids:
                if pid not in self._written and pid not in self._applying:
                    self._written[pid] = (read.get(pid), None)
            self._forget_oldest()

    def _rows_of(self, op: str, product_ids: Sequence[str], fields: Sequence[str],
                 chunk: int, consistency: Consistency = "Strong") -> list[dict[str, Any]]:
        return self._store.query_in(self._spec.name, "product_id", product_ids, fields,
                                    consistency=consistency, op=op, chunk=chunk)

    def _remembered_pks(self, product_ids: Sequence[str]) -> tuple[dict[str, frozenset[str]],
                                                                   list[str]]:
        """The image pks this sink knows these products have, and the products it must read
        (see the module docs: those it did not write are read like states)."""
        with self._lock:
            known = {pid: pks for pid in product_ids if pid in self._written
                     and (pks := self._written[pid][1]) is not None}
        return known, [pid for pid in product_ids if pid not in known]

    # -- writes ------------------------------------------------------------------------

    def apply(self, plan: WritePlan) -> WriteResult:
        """Write the plan; return when all of it is acknowledged, else raise StoreError."""
        clash = {r.product_id for r in plan.upserts} & set(plan.delete_products)
        if clash:
            raise ValueError(
                f"a plan must not both upsert and delete a product: {sorted(clash)[:5]}"
            )
        clash = set(plan.repairs) & {*plan.prune, *plan.delete_products}
        if clash:
            raise ValueError(
                f"a plan must not repair a product it prunes or deletes: {sorted(clash)[:5]}"
            )
        started = time.perf_counter()
        with self._lock:
            self._applying.update(s.product_id for s in plan.states)
        with self._store.recording() as calls:
            try:
                known, to_repair, reading = self._stored_pks(
                    [*plan.prune, *plan.delete_products], list(plan.repairs))
                upserted = self._store.upsert(self._spec.name, [r.to_row() for r in plan.upserts],
                                              op="upsert_images")
                repriced = self._apply_prices(plan.price_updates)
                read: dict[str, dict[str, int]] = {}
                if reading is not None:
                    read, read_calls = reading.result()
                    calls.extend(read_calls)
                known.update({pid: frozenset(rows) for pid, rows in read.items()
                              if pid not in to_repair})
                states = self._store.upsert(
                    self._spec.state_name,
                    [{**s.model_dump(), STATE_VECTOR_FIELD: list(STATE_VECTOR)}
                     for s in plan.states],
                    op="upsert_states",
                )
                deleted, left = self._prune(plan, known)
                deleted += self._delete_products(plan.delete_products, known)
                repaired, kept = self._repair({pid: plan.repairs[pid] for pid in to_repair},
                                              read)
                deleted += repaired
                left.update(kept)
                if self._clock() - self._flushed_at >= self._flush_interval_s:
                    self.flush()
            except Exception as exc:
                with self._lock:  # the states may or may not be written: read them again
                    for state in plan.states:
                        self._written.pop(state.product_id, None)
                    self._applying.difference_update(s.product_id for s in plan.states)
                    self._epoch += 1
                if isinstance(exc, StoreError):
                    raise
                # a bug or bad data: still never report partial success
                raise StoreError(f"apply failed: {exc}") from exc
        self._remember_states(plan, left)
        if upserted or repriced or deleted or states:
            self._wrote_at = self._clock()
        return WriteResult(
            upserted=upserted,
            repriced=repriced,
            deleted=deleted,
            states=states,
            write_seconds=time.perf_counter() - started,
            calls=tuple(calls),
        )

    def _remember_states(self, plan: WritePlan, left: dict[str, frozenset[str]]) -> None:
        """Remember the states written, with each product's image pks after the plan
        (``left``: of pruned and repaired products), none after a delete, unchanged by a price
        update; and the pks of repaired products whose state is remembered."""
        deleted = set(plan.delete_products)
        with self._lock:
            for state in plan.states:
                pid = state.product_id
                pks = (left[pid] if pid in left
                       else frozenset() if pid in deleted
                       else self._written[pid][1] if pid in self._written else None)
                self._written[pid] = (state, pks)
                self._written.move_to_end(pid)
            for pid in plan.repairs:
                if pid in left and pid in self._written:
                    self._written[pid] = (self._written[pid][0], left[pid])
            self._applying.difference_update(s.product_id for s in plan.states)
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        while len(self._written) > self._remember:
            self._written.popitem(last=False)

    def flush(self) -> None:
        """Seal the collections' segments (see the module docs: rarely needed on a server)."""
        self._store.flush(self._spec.name, self._spec.state_name)
        self._flushed_at = self._clock()
        self._wrote_at = None

    def seal_if_idle(self, *, final: bool = False) -> bool:
        """Flush once writes have paused :data:`SEAL_IDLE_S` (and the last flush is
        :data:`SEAL_MIN_INTERVAL_S` old); ``final``: now, if anything was written since the
        last flush. True when it flushed. The runner calls it between polls while nothing is
        in flight, and once after its last batch.

        Why: a Milvus 2.3.5 server searches the rows of growing (unsealed) segments one by
        one until it seals them itself; after a 100k-row load, sealing them (2.5 s) and the
        index build that follows (20 s) took unfiltered ``by_vector`` p50 from 16-25 ms to
        8-9 ms (docs/scaling.md). On Milvus Lite it seals the rows of the last 2 s."""
        if self._wrote_at is None:
            return False
        now = self._clock()
        if not final and (now - self._wrote_at < SEAL_IDLE_S
                          or now - self._flushed_at < SEAL_MIN_INTERVAL_S):
            return False
        self.flush()
        return True

    def _apply_prices(self, updates: dict[str, tuple[float, str, int]]) -> int:
        """Read the products' rows (vectors included) and upsert them with the new price.

        A row keeps its ``version`` (that of the write that embedded it: see the module
        docs); rows already at a newer version than the update are left alone.
        """
        changed: list[dict[str, Any]] = []
        for row in self._rows_of("read_for_price", list(updates), IMAGE_FIELDS, PRICE_CHUNK):
            price, currency, version = updates[str(row["product_id"])]
            if int(row["version"]) > version:
                continue
            record = ImageRecord.model_validate(
                {name: row[name] for name in IMAGE_FIELDS}
                | {"price": float(price), "currency": currency}
            )
            changed.append(record.to_row())
        return self._store.upsert(self._spec.name, changed, op="upsert_prices")

    def _stored_pks(self, product_ids: Sequence[str], repairs: Sequence[str]) -> tuple[
            dict[str, frozenset[str]], list[str],
            Future[tuple[dict[str, dict[str, int]], list[CallTiming]]] | None]:
        """The image pks these products have: those this sink remembers, and a read of the
        others (pk -> version, read only when there are repairs) started on the helper thread
        (None: nothing to read); and the products of ``repairs`` to repair, those this sink
        does not remember (it remembers pks only after its own apply of the product finished:
        nothing to repair)."""
        known, rest = self._remembered_pks(product_ids)
        to_repair = self._remembered_pks(repairs)[1]
        rest += to_repair
        if not rest:
            return known, to_repair, None
        consistency = self.state_read_consistency()

        fields = ["pk", "product_id", *(["version"] if to_repair else [])]

        def read() -> tuple[dict[str, dict[str, int]], list[CallTiming]]:
            found: dict[str, dict[str, int]] = {pid: {} for pid in rest}
            with self._store.recording() as calls:
                for row in self._rows_of("read_image_pks", rest, fields, PRODUCT_CHUNK,
                                         consistency):
                    found[str(row["product_id"])][str(row["pk"])] = int(row.get("version", -1))
            return found, calls

        return known, to_repair, self._reader.submit(read)

    def _prune(self, plan: WritePlan, stored: dict[str, frozenset[str]]) -> tuple[
            int, dict[str, frozenset[str]]]:
        """Delete the rows each upsert no longer lists; also the pks each pruned product has
        left (its stored rows it lists, and those just written)."""
        written: dict[str, set[str]] = {}
        for record in plan.upserts:
            written.setdefault(record.product_id, set()).add(record.pk)
        victims = [pk for pid, keep in plan.prune.items() for pk in sorted(stored[pid] - keep)]
        left = {pid: frozenset((stored[pid] & keep) | written.get(pid, set()))
                for pid, keep in plan.prune.items()}
        deleted = self._store.delete_in(self._spec.name, "pk", victims, op="delete_pruned") \
            if victims else 0
        return deleted, left

    def _repair(self, repairs: dict[str, Repair], stored: dict[str, dict[str, int]]) -> tuple[
            int, dict[str, frozenset[str]]]:
        """Delete what each repair names (:class:`ingest.plan.Repair`) of the product's stored
        rows (pk -> version); also the pks each has left."""
        victims: list[str] = []
        left: dict[str, frozenset[str]] = {}
        for pid, repair in repairs.items():
            rows = stored[pid]
            gone = {pk for pk, version in rows.items()
                    if version > repair.version
                    or (repair.keep is not None and version < repair.version
                        and pk not in repair.keep)}
            victims.extend(sorted(gone))
            left[pid] = frozenset(rows.keys() - gone)
        deleted = self._store.delete_in(self._spec.name, "pk", victims, op="delete_repaired") \
            if victims else 0
        return deleted, left

    def _delete_products(self, product_ids: list[str],
                         stored: dict[str, frozenset[str]]) -> int:
        victims = [pk for pid in product_ids for pk in sorted(stored[pid])]
        return self._store.delete_in(self._spec.name, "pk", victims, op="delete_products") \
            if victims else 0
