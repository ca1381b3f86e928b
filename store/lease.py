"""A lease in Milvus: one process at a time may hold it, until it lets go or the lease expires.

``lookalike reindex`` and ``lookalike models drop`` hold the ``reindex`` lease of a base name
(``<base>_lease``, schema/versions.py) while they run, so that two of them never change the
registry and the aliases at once: two reindexes that both reached the alias move within
milliseconds both switched, and a drop could remove the pair a reindex was about to fill.

Milvus has no compare-and-set, so a lease is taken in three steps: read the row (Strong); if
another owner's lease has not expired, refuse at once (:class:`LeaseHeldError`); else write our
row, wait ``confirm_s`` and read it again (Strong). Of two processes that wrote within
``confirm_s`` of each other, the last write wins (an upsert of one primary key) and only its
writer reads back its own name. Two processes are only both let through when one stalls for
longer than ``confirm_s`` between its read and its write.

The holder renews the lease as it works (:meth:`Lease.renew`: at most every third of
``ttl_s``); a process that is killed stops renewing, and its lease is taken over once it
expired, so it never blocks for longer than ``ttl_s`` (at most ``MAX_LEASE_S``, 6 hours;
``lookalike models unlock`` removes it sooner). A renewal that finds another owner's row, or
none, has lost the lease and never writes it again. Expiry times are the writer's wall
clock: the machines that share a Milvus server need clocks that agree to well within
``ttl_s`` (NTP does). On Milvus Lite a second process cannot open the database at all (its
file lock), so there the lease only orders runs within one process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from schema.collection import STATE_VECTOR, STATE_VECTOR_FIELD
from schema.versions import LEASE_FIELDS, MAX_LEASE_OWNER_BYTES, MAX_LEASE_S
from store.client import MilvusStore
from store.collections import ensure_collection, lease_schema
from store.engine import state_indexes
from store.errors import StoreError
from store.expressions import ExpressionBuilder

log = logging.getLogger(__name__)

MAX_LEASE_NAME_BYTES = 64


def _now_ms() -> int:
    return int(time.time() * 1000)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def new_owner(command: str) -> str:
    """``<command>@<host>:<pid>:<random>``: who holds a lease, as its refusal names it."""
    owner = f"{command}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return owner.encode("utf-8")[:MAX_LEASE_OWNER_BYTES].decode("utf-8", "ignore")


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    acquired_at_ms: int
    expires_at_ms: int

    def describe(self) -> str:
        return (f"{self.owner}, taken {_utc(self.acquired_at_ms)}, expires "
                f"{_utc(self.expires_at_ms)} unless renewed")


class LeaseHeldError(RuntimeError):
    """Another process holds the lease (and it has not expired)."""

    def __init__(self, message: str, holder: LeaseHolder | None) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLostError(RuntimeError):
    """This process's lease expired and another process took it over."""


class Lease:
    """The lease ``name`` in the collection ``collection`` (created when missing), held by
    ``owner``. A context manager: acquired on entry, released on exit, also on errors."""

    def __init__(
        self,
        store: MilvusStore,
        collection: str,
        name: str,
        *,
        owner: str,
        ttl_s: float,
        confirm_s: float = 1.0,
        clock_ms: Callable[[], int] = _now_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < ttl_s <= MAX_LEASE_S:
            raise ValueError(f"a lease lasts more than 0 and at most {MAX_LEASE_S:g}s, "
                             f"not {ttl_s}")
        self.store = store
        self.collection = collection
        self.name = name
        self.owner = owner
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._confirm_s = max(0.0, confirm_s)
        self._clock_ms = clock_ms
        self._sleep = sleep
        self._ready = False
        self._written_at_ms: int | None = None

    @property
    def held(self) -> bool:
        return self._written_at_ms is not None

    def holder(self) -> LeaseHolder | None:
        """The row as it stands (expired or not), read Strong; None when nobody holds it (nor
        ever did: the lease collection is created by the first write, not by a read)."""
        if not self._ready and not self.store.has_collection(self.collection):
            return None
        self._ensure()
        rows = self.store.query(self.collection, self.store.expr().eq("name", self.name),
                                list(LEASE_FIELDS), limit=1, consistency="Strong", op="lease")
        if not rows:
            return None
        r = rows[0]
        return LeaseHolder(str(r["owner"]), int(r["acquired_at_ms"]), int(r["expires_at_ms"]))

    def acquire(self) -> None:
        """Take the lease, or raise :class:`LeaseHeldError` naming its holder."""
        now = self._clock_ms()
        found = self.holder()
        if found is not None and found.owner != self.owner:
            if found.expires_at_ms > now:
                raise LeaseHeldError(self._held_by(found), found)
            log.warning("lease %s of %s: taking over the lease of %s, which expired %s (a run "
                        "that was killed or lost its connection)", self.name, self.collection,
                        found.owner, _utc(found.expires_at_ms))
        self._write(now, now)
        try:
            if self._confirm_s:
                self._sleep(self._confirm_s)
            found = self.holder()
        except BaseException:
            self.release()
            raise
        if found is None or found.owner != self.owner:
            self._written_at_ms = None
            raise LeaseHeldError(
                self._held_by(found) if found is not None else
                f"the {self.name} lease of {self.collection} was taken and let go by another "
                "process at the same moment; try again", found)
        log.info("lease %s of %s taken by %s until %s", self.name, self.collection, self.owner,
                 _utc(found.expires_at_ms))

    def renew(self, *, check: bool = False) -> None:
        """Push the expiry ``ttl_s`` ahead once a third of it has passed (every call when
        ``check``), after reading that the row is still this owner's: raises
        :class:`LeaseLostError` when it is not: another process took it over meanwhile (this
        one's had expired), or the row is gone (taken over and let go of since, or removed by
        ``lookalike models unlock``). A lost lease is never written again: another run may
        have changed the registry and the aliases meanwhile."""
        if self._written_at_ms is None:
            raise LeaseLostError(f"the {self.name} lease of {self.collection} is not held")
        now, written = self._clock_ms(), self._written_at_ms
        if not check and now - written < self._ttl_ms // 3:
            return
        found = self.holder()
        if found is None or found.owner != self.owner:
            self._written_at_ms = None
            since = f"not renewed for {(now - written) / 1000:.0f}s"
            raise LeaseLostError(
                f"this run's {self.name} lease of {self.collection} expired ({since}) and "
                + (found.describe() if found is not None else
                   "was taken over and let go of by another process, or removed (`lookalike "
                   "models unlock`)"))
        self._write(found.acquired_at_ms, now)

    def release(self) -> None:
        """Let go of the lease if this owner still holds it (a failure is logged: the lease
        then expires by itself). The delete names the owner as well as the lease, so it never
        removes a row another process wrote after the read."""
        if self._written_at_ms is None:
            return
        self._written_at_ms = None
        try:
            found = self.holder()
            if found is not None and found.owner == self.owner:
                self.store.delete(self.collection, self._own_row(), op="lease_release")
        except Exception as exc:
            log.warning("lease %s of %s not released (%s: %s): it expires within %.0fs",
                        self.name, self.collection, type(exc).__name__, exc,
                        self._ttl_ms / 1000)

    def remove(self) -> tuple[LeaseHolder | None, LeaseHolder | None]:
        """Remove the lease whoever holds it (``lookalike models unlock``: for a run known to
        be dead). Returns the holder it read, None when nobody held it, and the holder found
        after the delete: None, unless another process took the lease over between the read
        and the delete (the delete names the owner read, so it leaves that takeover in place).
        Creates nothing."""
        found = self.holder()
        if found is None:
            return None, None
        where = self.store.expr().eq("name", self.name).eq("owner", found.owner)
        self.store.delete(self.collection, where, op="lease_remove")
        return found, self.holder()

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # -- internals ---------------------------------------------------------------------

    def _held_by(self, holder: LeaseHolder) -> str:
        return f"the {self.name} lease of {self.collection} is held by {holder.describe()}"

    def _own_row(self) -> ExpressionBuilder:
        return self.store.expr().eq("name", self.name).eq("owner", self.owner)

    def _write(self, acquired_at_ms: int, now: int) -> None:
        self._ensure()
        row = {"name": self.name, "owner": self.owner, "acquired_at_ms": acquired_at_ms,
               "expires_at_ms": now + self._ttl_ms, STATE_VECTOR_FIELD: list(STATE_VECTOR)}
        self.store.upsert(self.collection, [row], op="lease")
        self._written_at_ms = now

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self._create()
        except StoreError:
            # another process created it at the same moment: once it shows, check what it made
            # (its index too, which may still be being created: Milvus Lite then fails ours)
            deadline = time.monotonic() + 10.0
            while True:
                time.sleep(0.1)
                try:
                    if self.store.has_collection(self.collection):
                        self._create()
                        break
                except StoreError:
                    pass
                if time.monotonic() > deadline:
                    raise
        self.store.wait_loaded([self.collection], 300.0)
        self._ready = True

    def _create(self) -> None:
        ensure_collection(
            self.store, self.collection,
            lease_schema(MAX_LEASE_NAME_BYTES, MAX_LEASE_OWNER_BYTES),
            (*LEASE_FIELDS, STATE_VECTOR_FIELD), STATE_VECTOR_FIELD, len(STATE_VECTOR),
            state_indexes(self.store.engine),
        )
