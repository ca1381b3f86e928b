"""The live side of model versions (the names and records are the contract in
``schema/versions.py``): the registry collection, loading, and moving the aliases."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from schema.collection import STATE_VECTOR, STATE_VECTOR_FIELD, CollectionSpec
from schema.versions import (
    MAX_NAME_BYTES,
    PHYSICAL_SEPARATOR,
    REGISTRY_FIELDS,
    REINDEX_LEASE,
    ModelEntry,
    ModelRetiredError,
    ModelStatus,
    ModelVersionError,
    Serving,
    check_base,
    lease_name,
    physical_name,
    registry_name,
    shown,
    state_name,
)
from store.client import MilvusStore
from store.collections import ensure_collection, ensure_collections, registry_schema
from store.engine import state_indexes
from store.lease import Lease, new_owner

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ModelVersions:
    """Naming, registry and aliases of the per-model collections behind one base name.

    Methods are idempotent, so a crash anywhere leaves a state that the next call completes.
    Every read here is Strong: these decisions (where to write, whether a model still serves)
    must see the latest alias and registry row.
    """

    def __init__(
        self,
        store: MilvusStore,
        base: str,
        *,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        check_base(base)
        self.store = store
        self.base = base
        self._clock_ms = clock_ms
        self._registry_ready = False

    # -- names ---------------------------------------------------------------------------

    def spec_for(self, model_version: str, dim: int) -> CollectionSpec:
        """The physical collections of ``model_version``."""
        return CollectionSpec(name=physical_name(self.base, model_version), dim=dim)

    # -- reading -------------------------------------------------------------------------

    def reaches(self) -> str | None:
        """The collection ``<base>`` reaches now (itself for a pre-alias collection; None on
        a fresh install): two calls that read no rows, nor the registry."""
        if not self.store.has_collection(self.base):
            return None
        return self.store.physical_name(self.base)

    def serving_unloaded(self) -> Serving | None:
        """Like :meth:`serving` without reading rows (works on released collections); the
        version is None unless the registry knows it."""
        physical = self.reaches()
        if physical is None:
            return None
        if physical == self.base:
            return Serving(self.base, physical, None, legacy=True)
        entry = self.entry(physical)
        return Serving(self.base, physical, entry.model_version if entry else None, legacy=False)

    def serving(self) -> Serving | None:
        """What ``<base>`` reaches now, with the version it holds (from the registry, else
        from its rows); None on a fresh install."""
        found = self.serving_unloaded()
        if found is None or found.model_version is not None:
            return found
        return replace(found, model_version=self._version_in_rows(found.physical))

    def _version_in_rows(self, collection: str) -> str | None:
        rows = self.store.query(collection, 'pk != ""', ["model_version"], limit=1,
                                consistency="Strong")
        return str(rows[0]["model_version"]) if rows else None

    def entries(self) -> list[ModelEntry]:
        """Every registered physical pair, oldest first (empty before the first alias)."""
        if not self.store.has_collection(registry_name(self.base)):
            return []
        self._ensure_registry()
        rows = self.store.query(registry_name(self.base), 'physical != ""', REGISTRY_FIELDS,
                                consistency="Strong")
        out = [
            ModelEntry(
                physical=str(r["physical"]),
                model_version=str(r["model_version"]),
                dim=int(r["dim"]),
                status=ModelStatus(str(r["status"])),
                created_at_ms=int(r["created_at_ms"]),
                updated_at_ms=int(r["updated_at_ms"]),
            )
            for r in rows
        ]
        return sorted(out, key=lambda e: (e.created_at_ms, e.physical))

    def entry(self, physical: str) -> ModelEntry | None:
        return next((e for e in self.entries() if e.physical == physical), None)

    def entry_of_version(self, model_version: str) -> ModelEntry | None:
        return self.entry(physical_name(self.base, model_version))

    def catch_ups_owed(self) -> list[ModelEntry]:
        """Pairs the aliases moved away from whose catch-up pass has not finished (a switch
        cut short by a crash, a kill or an error): their last writes may be missing from the
        serving pair. ``lookalike reindex`` with the serving model runs it."""
        serving = self.serving_unloaded()
        return [e for e in self.entries() if e.status is ModelStatus.RETIRING
                and (serving is None or e.physical != serving.physical)]

    def caught_up(self, physical: str) -> None:
        """The catch-up pass from ``physical`` finished: mark it ``retired``."""
        entry = self.entry(physical)
        if entry is not None and entry.status is ModelStatus.RETIRING:
            self._register(physical, entry.model_version, entry.dim, ModelStatus.RETIRED,
                           created_at_ms=entry.created_at_ms)

    def load(self, physical: str, timeout_s: float = 300.0) -> None:
        """Load an image collection and its state companion (a fresh client of Milvus Lite,
        or a server after a restart, sees collections released)."""
        self.store.load([physical, state_name(physical)], timeout_s=timeout_s)

    def load_serving(self) -> Serving | None:
        """Load what ``<base>`` reaches, for searches; None when nothing exists yet."""
        serving = self.serving_unloaded()
        if serving is not None:
            self.load(serving.physical)
        return self.serving()

    # -- writing -------------------------------------------------------------------------

    def ensure_version(self, model_version: str, dim: int) -> CollectionSpec:
        """The collections a writer of ``model_version`` must write to (created if missing).

        * nothing at ``<base>`` yet: create the version's pair and point the aliases at it;
        * ``<base>`` is a legacy collection of this version (or empty): keep writing into it;
        * otherwise: the version's own pair, registered as ``building`` unless it serves.
        """
        serving = self.serving()
        if serving is not None and serving.legacy and serving.model_version in (
            None, model_version,
        ):
            spec = CollectionSpec(name=self.base, dim=dim)
            ensure_collections(self.store, spec)
            return spec
        spec = self.ensure_building(model_version, dim)
        if serving is None:
            log.info("first install: %s now serves model %s", self.base, model_version)
            try:
                self.switch_to(model_version, dim)
            except Exception:
                if self.serving() is None:
                    raise
                # another consumer of the group created the aliases at the same moment
                log.info("%s was created concurrently", self.base)
        return spec

    def ensure_building(self, model_version: str, dim: int) -> CollectionSpec:
        """Create ``model_version``'s pair if missing; register it (``building`` when new or
        retired: a retired pair being filled again is a rollback)."""
        spec = self.spec_for(model_version, dim)
        ensure_collections(self.store, spec)
        entry = self.entry(spec.name)
        if entry is None or entry.status.served_before:
            self._register(spec.name, model_version, dim, ModelStatus.BUILDING,
                           created_at_ms=entry.created_at_ms if entry else None)
        return spec

    def open_for_writing(self, model_version: str, dim: int) -> tuple[CollectionSpec, ServingGuard]:
        """Where an ingest of ``model_version`` writes, and the guard it checks after writes.

        Refuses a retired model (its ingest was stopped by a switch: restart it with the serving
        model, or ``lookalike reindex`` back to roll back). A model that does not serve yet may
        write (into its own pair), with a warning: searches read it only after a switch.
        """
        serving = self.serving()
        entry = self.entry_of_version(model_version)
        if (
            serving is not None
            and serving.model_version != model_version
            and entry is not None
            and entry.status.served_before
        ):
            raise ModelRetiredError(
                f"model {model_version} was retired: {self.base} serves model "
                f"{serving.model_version} ({serving.physical}). Configure that model, or run "
                f"`lookalike reindex` with this one to switch back."
            )
        spec = self.ensure_version(model_version, dim)
        serving = self.serving()
        if serving is not None and serving.physical != spec.name:
            log.warning(
                "model %s does not serve: %s serves model %s (%s). This ingest writes into %s, "
                "which searches read only after `lookalike reindex` switches to it; do not run "
                "it in the serving ingest's consumer group",
                model_version, self.base, serving.model_version, serving.physical, spec.name,
            )
        return spec, ServingGuard(self, model_version)

    def switch_to(self, model_version: str, dim: int) -> str | None:
        """Point ``<base>`` and ``<base>_state`` at ``model_version``'s pair; mark the registry.

        Returns the physical image collection that served before (renamed, for a legacy one),
        or None on a first install. That pair is registered ``retiring`` *before* the aliases
        move: a catch-up pass from it is owed (:meth:`catch_ups_owed`) until the caller's pass
        finished and called :meth:`caught_up`, so a crash right after the move leaves a record
        that the next ``lookalike reindex`` acts on. Called again once the aliases moved, it
        only completes the registry.
        """
        target = self.spec_for(model_version, dim)
        if not self.store.has_collection(target.name):
            raise ModelVersionError(f"no collection {target.name} for model {model_version}")
        before = self.serving()
        previous: str | None = None
        if before is None:
            self.store.create_alias(target.name, self.base)
            self.store.create_alias(target.state_name, state_name(self.base))
        elif before.legacy:
            previous = self._retire_legacy(before)
            self.store.create_alias(target.name, self.base)
            self.store.create_alias(target.state_name, state_name(self.base))
        else:
            previous = before.physical
            if previous != target.name:
                self._mark_retiring(previous)
                self.store.alter_alias(target.name, self.base)  # searches move here
                self.store.alter_alias(target.state_name, state_name(self.base))
        for e in self.entries():
            if e.status is ModelStatus.SERVING and e.physical != target.name:
                self._register(e.physical, e.model_version, e.dim, ModelStatus.RETIRED,
                               created_at_ms=e.created_at_ms)
        current = self.entry(target.name)
        self._register(target.name, model_version, dim, ModelStatus.SERVING,
                       created_at_ms=current.created_at_ms if current else None)
        log.info("model switch: %s -> %s (model %s); before: %s",
                 self.base, target.name, model_version, previous or "nothing")
        return previous

    def _mark_retiring(self, physical: str) -> None:
        entry = self.entry(physical)
        if entry is not None:
            self._register(physical, entry.model_version, entry.dim, ModelStatus.RETIRING,
                           created_at_ms=entry.created_at_ms)

    def _retire_legacy(self, legacy: Serving) -> str:
        """Rename a legacy pair out of the way of the aliases (see the module docs)."""
        version = legacy.model_version or ""
        name = physical_name(self.base, version) if version else ""
        if not name or self.store.has_collection(name):
            name = f"{self.base}{PHYSICAL_SEPARATOR}legacy{self._clock_ms()}"
        dim = self.store.vector_dim(self.base) or 0
        log.warning("renaming the pre-alias collection %s to %s so that %s can become an alias",
                    self.base, name, self.base)
        self.store.rename_collection(self.base, name)
        self.store.rename_collection(state_name(self.base), state_name(name))
        self.store.load([name, state_name(name)])  # Milvus Lite releases a renamed collection
        self._register(name, version, dim, ModelStatus.RETIRING)
        return name

    def _register(
        self,
        physical: str,
        model_version: str,
        dim: int,
        status: ModelStatus,
        *,
        created_at_ms: int | None = None,
    ) -> None:
        self._ensure_registry()
        now = self._clock_ms()
        row = {
            "physical": physical,
            "model_version": model_version,
            "dim": int(dim),
            "status": status.value,
            "created_at_ms": now if created_at_ms is None else created_at_ms,
            "updated_at_ms": now,
            STATE_VECTOR_FIELD: list(STATE_VECTOR),
        }
        self.store.upsert(registry_name(self.base), [row], op="register")

    def _ensure_registry(self) -> None:
        if self._registry_ready:
            return
        name = registry_name(self.base)
        ensure_collection(
            self.store, name, registry_schema(MAX_NAME_BYTES),
            (*REGISTRY_FIELDS, STATE_VECTOR_FIELD), STATE_VECTOR_FIELD, len(STATE_VECTOR),
            state_indexes(self.store.engine),
        )
        self.store.wait_loaded([name], 300.0)
        self._registry_ready = True

    def reindex_lease(self, command: str, *, ttl_s: float, confirm_s: float = 1.0) -> Lease:
        """The lease that ``lookalike reindex`` and ``lookalike models drop`` hold while they
        change the registry and the aliases (store/lease.py), owned by this process as
        ``command``."""
        return Lease(self.store, lease_name(self.base), REINDEX_LEASE, owner=new_owner(command),
                     ttl_s=ttl_s, confirm_s=confirm_s, clock_ms=self._clock_ms)

    def drop_version(self, model_version: str, *, force: bool = False) -> ModelEntry:
        """Drop a model version's physical pair (image and state collections) and then its
        registry row; ``model_version`` may also be the physical name ``lookalike models``
        lists. Refused (:class:`ModelVersionError`, one line) for an unknown version (naming
        the known ones), the pair ``<base>`` reaches, a pair that any alias reaches (of any
        base name: one named as a base by mistake), one owed a catch-up (``retiring``), and
        one being built (``building``) unless ``force``. The caller holds
        :meth:`reindex_lease`, so no reindex starts filling the pair meanwhile. A crash
        between the steps leaves the row, and dropping again completes it."""
        entry = self.droppable(model_version, force=force)
        for name in (entry.physical, state_name(entry.physical)):
            if self.store.has_collection(name):
                self.store.drop_collection(name)
        self.store.delete(registry_name(self.base),
                          self.store.expr().eq("physical", entry.physical), op="unregister")
        # DEBUG: the caller reports the drop (`lookalike models drop` prints it once)
        log.debug("dropped model %s: %s and %s, and its registry entry (was %s)",
                    entry.model_version, entry.physical, state_name(entry.physical),
                    entry.status.value)
        return entry

    def droppable(self, model_version: str, *, force: bool = False) -> ModelEntry:
        """The entry :meth:`drop_version` would drop, or its refusal; reads only (a refusal
        before the lease is taken leaves nothing behind, not even the lease collection)."""
        entries = self.entries()
        found = [e for e in entries if model_version in (e.model_version, e.physical)]
        if not found:
            known = ", ".join(f"{e.model_version or e.physical} ({e.status.value})"
                              for e in entries) or "none"
            raise ModelVersionError(f"no model version {shown(model_version)} in the registry "
                                    f"of {self.base}; known: {known}")
        if len(found) > 1:
            raise ModelVersionError(
                f"model version {shown(model_version)} has {len(found)} pairs in {self.base}: "
                f"name one by its physical name ({', '.join(e.physical for e in found)})")
        entry = found[0]
        serving = self.serving_unloaded()
        if entry.status is ModelStatus.SERVING or (
                serving is not None and serving.physical == entry.physical):
            raise ModelVersionError(
                f"model {entry.model_version} serves {self.base} now ({entry.physical}): "
                "switch to another model first (`lookalike reindex`), then drop this one")
        reached_by = self.store.list_aliases(entry.physical)
        if reached_by:
            raise ModelVersionError(
                f"{entry.physical} is reached by the alias {', '.join(reached_by)} now: "
                "something serves from it, so it is not dropped")
        if entry.status is ModelStatus.RETIRING:
            now = serving.model_version if serving is not None else None
            raise ModelVersionError(
                f"model {entry.model_version} ({entry.physical}) is owed a catch-up pass (a "
                f"switch was cut short): run `lookalike reindex` with model {now} first, "
                "then drop it")
        if entry.status is ModelStatus.BUILDING and not force:
            raise ModelVersionError(
                f"model {entry.model_version} ({entry.physical}) is being built (a `lookalike "
                "reindex --no-switch` or an ingest of a model that does not serve writes it): "
                "stop its writers, then pass --force to drop it")
        return entry

    def drop_all(self) -> None:
        """Drop the aliases, every registered pair, the registry and the leases (tests,
        teardown)."""
        for alias in (self.base, state_name(self.base)):
            if self.store.has_collection(alias) and self.store.physical_name(alias) != alias:
                self.store.drop_alias(alias)
        names = [e.physical for e in self.entries()] + [self.base]
        for n in names:
            for c in (n, state_name(n)):
                if self.store.has_collection(c):
                    self.store.drop_collection(c)
        for extra in (registry_name(self.base), lease_name(self.base)):
            if self.store.has_collection(extra):
                self.store.drop_collection(extra)


class ServingGuard:
    """Stops a writer whose model no longer serves.

    Remembers what ``<base>`` reached when the writer started; :meth:`check` raises
    :class:`ModelRetiredError` once it reaches another model's collection. Ingest checks after
    each write and before committing it, so the batch that noticed the switch stays
    uncommitted and is consumed again by the restarted (new-model) ingest; and, while it has
    nothing to write, every few seconds (``ingest.runner.IDLE_CHECK_EVERY_S``). While
    ``<base>`` reaches the same collection a check reads the alias only, not the registry.
    """

    def __init__(self, versions: ModelVersions, model_version: str) -> None:
        self._versions = versions
        self.model_version = model_version
        start = versions.serving()
        self._start = start.physical if start else None

    def check(self) -> None:
        if self._start is not None and self._versions.reaches() == self._start:
            return
        now = self._versions.serving()
        if now is None or now.physical == self._start or now.model_version == self.model_version:
            return
        raise ModelRetiredError(
            f"{self._versions.base} now serves model {now.model_version} ({now.physical}); "
            f"this process writes model {self.model_version}: restart it with that model"
        )
