"""Model versions without downtime: one physical collection pair per model version, served
through Milvus aliases. The ONE place that knows these names.

For the configured base name ``<base>`` (``LOOKALIKE_MILVUS__COLLECTION``):

* ``<base>__<slug>`` and ``<base>__<slug>_state`` are the image and state collections of one
  model version (``slug``: the first 10 hex digits of sha1(model_version); collection names
  allow only ``[A-Za-z0-9_]`` and versions are long). Vectors of two models never share one.
* ``<base>`` and ``<base>_state`` are *aliases* of the serving version's pair. Searches address
  the alias, so :func:`switch_serving` (``alter_alias``) moves every searcher to another
  version at once, with no moment where nothing answers. Ingest and ``lookalike reindex``
  address *physical* names only: a writer never follows an alias into another model's
  collection.
* ``<base>_models`` is the registry: one row per physical pair (model version, dimension,
  status ``building`` / ``serving`` / ``retired``, creation and update times), so the CLI can
  list versions. Milvus Lite keeps no collection descriptions, hence a collection; like the
  state collection it carries a constant 2-d vector (Milvus needs one to load a collection).

The two aliases are altered one after the other (image alias first: it is the one searches
read); Milvus has no multi-alias transaction. Nothing reads the state alias to decide anything,
so the moment in between is harmless.

First install: when ``<base>`` does not exist, :func:`ensure_version` creates the pair of the
writer's version and points both aliases at it, so the first version serves at once.

Installs from before aliases ("legacy"): ``<base>`` is then a physical collection. It keeps
serving as it is; an ingest of the model version found in its rows keeps writing into it (an
ingest of another version builds its own pair). Aliases cannot share a name with a collection,
so the switch away from a legacy collection first *renames* ``<base>`` and ``<base>_state`` to
the physical names of their version, then creates the aliases: for the few milliseconds
between the rename and the alias, ``<base>`` does not exist and a search on it fails (the only
gap in this design, once per install). The renamed pair is registered as ``retired``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from schema.collection import (
    MAX_MODEL_VERSION_BYTES,
    STATE_VECTOR,
    STATE_VECTOR_FIELD,
    CollectionSpec,
    EngineInfo,
    IndexChoice,
    detect_engine,
    ensure_collection,
    ensure_collections,
    wait_loaded,
)

log = logging.getLogger(__name__)

SLUG_LENGTH = 10
PHYSICAL_SEPARATOR = "__"
REGISTRY_SUFFIX = "_models"
REGISTRY_FIELDS: tuple[str, ...] = (
    "physical",
    "model_version",
    "dim",
    "status",
    "created_at_ms",
    "updated_at_ms",
)
_MAX_NAME_BYTES = 255


class ModelStatus(str, Enum):
    BUILDING = "building"
    """Being filled (by ``lookalike reindex`` or an ingest of a model that does not serve)."""
    SERVING = "serving"
    """The aliases point at it."""
    RETIRED = "retired"
    """Served before; kept until an operator drops it (a rollback is a reindex back)."""


class ModelVersionError(RuntimeError):
    """The collections of a model version cannot be used the way that was asked."""


class ModelRetiredError(ModelVersionError):
    """The aliases moved away from the model this process writes with: it must stop."""


def version_slug(model_version: str) -> str:
    """A short, stable, name-safe stand-in for a model version."""
    return hashlib.sha1(model_version.encode("utf-8")).hexdigest()[:SLUG_LENGTH]


def physical_name(base: str, model_version: str) -> str:
    """``<base>__<slug>``: the image collection of ``model_version``."""
    return f"{base}{PHYSICAL_SEPARATOR}{version_slug(model_version)}"


def registry_name(base: str) -> str:
    return f"{base}{REGISTRY_SUFFIX}"


def state_name(image_collection: str) -> str:
    """The state companion of an image collection (or of an alias), as
    :attr:`CollectionSpec.state_name` names it."""
    return f"{image_collection}_state"


@dataclass(frozen=True)
class Serving:
    """What ``<base>`` resolves to."""

    base: str
    physical: str
    """The image collection the name ``<base>`` reaches (itself when legacy)."""
    model_version: str | None
    """The version it holds; None for an empty legacy collection."""
    legacy: bool
    """``<base>`` is a physical collection (an install from before aliases)."""


@dataclass(frozen=True)
class ModelEntry:
    """One registry row."""

    physical: str
    model_version: str
    dim: int
    status: ModelStatus
    created_at_ms: int
    updated_at_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class ModelVersions:
    """Naming, registry and aliases of the per-model collections behind one base name.

    ``client`` is a ``pymilvus.MilvusClient``. Methods are idempotent, so a crash anywhere
    leaves a state that the next call completes.
    """

    def __init__(
        self,
        client: Any,
        base: str,
        *,
        engine: EngineInfo | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        CollectionSpec(name=physical_name(base, ""), dim=2)  # raises for a bad or long name
        self.client = client
        self.base = base
        self.engine = engine or detect_engine(client)
        self._clock_ms = clock_ms
        self._registry_ready = False

    # -- names ---------------------------------------------------------------------------

    def spec_for(self, model_version: str, dim: int) -> CollectionSpec:
        """The physical collections of ``model_version``."""
        return CollectionSpec(name=physical_name(self.base, model_version), dim=dim)

    # -- reading -------------------------------------------------------------------------

    def serving_unloaded(self) -> Serving | None:
        """Like :meth:`serving` without reading rows (works on released collections); the
        version is None unless the registry knows it.

        ``describe_collection`` of an alias names the collection behind it, on Milvus Lite and
        on servers alike (and, unlike ``describe_alias``, logs no error for a non-alias).
        """
        if not self.client.has_collection(self.base):
            return None
        physical = str(self.client.describe_collection(self.base)["collection_name"])
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
        rows = self.client.query(
            collection, filter='pk != ""', output_fields=["model_version"], limit=1,
            consistency_level="Strong",
        )
        return str(rows[0]["model_version"]) if rows else None

    def entries(self) -> list[ModelEntry]:
        """Every registered physical pair, oldest first (empty before the first alias)."""
        if not self.client.has_collection(registry_name(self.base)):
            return []
        self._ensure_registry()
        rows = self.client.query(
            registry_name(self.base), filter='physical != ""', output_fields=list(REGISTRY_FIELDS),
            limit=16384, consistency_level="Strong",
        )
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

    def load(self, physical: str, timeout_s: float = 300.0) -> None:
        """Load an image collection and its state companion (a fresh client of Milvus Lite,
        or a server after a restart, sees collections released)."""
        names = [physical, state_name(physical)]
        for name in names:
            self.client.load_collection(name, _async=True)
        wait_loaded(self.client, names, timeout_s)

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
            ensure_collections(self.client, spec, self.engine)
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
        ensure_collections(self.client, spec, self.engine)
        entry = self.entry(spec.name)
        if entry is None or entry.status is ModelStatus.RETIRED:
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
            and entry.status is ModelStatus.RETIRED
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
        or None on a first install.
        """
        target = self.spec_for(model_version, dim)
        if not self.client.has_collection(target.name):
            raise ModelVersionError(f"no collection {target.name} for model {model_version}")
        before = self.serving()
        previous: str | None = None
        if before is None:
            self.client.create_alias(target.name, self.base)
            self.client.create_alias(target.state_name, state_name(self.base))
        elif before.legacy:
            previous = self._retire_legacy(before)
            self.client.create_alias(target.name, self.base)
            self.client.create_alias(target.state_name, state_name(self.base))
        else:
            previous = before.physical
            if previous != target.name:
                self.client.alter_alias(target.name, self.base)  # searches move here
                self.client.alter_alias(target.state_name, state_name(self.base))
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

    def _retire_legacy(self, legacy: Serving) -> str:
        """Rename a legacy pair out of the way of the aliases (see the module docs)."""
        version = legacy.model_version or ""
        name = physical_name(self.base, version) if version else ""
        if not name or self.client.has_collection(name):
            name = f"{self.base}{PHYSICAL_SEPARATOR}legacy{self._clock_ms()}"
        dim = _vector_dim(self.client.describe_collection(self.base))
        log.warning("renaming the pre-alias collection %s to %s so that %s can become an alias",
                    self.base, name, self.base)
        self.client.rename_collection(self.base, name)
        self.client.rename_collection(state_name(self.base), state_name(name))
        for n in (name, state_name(name)):  # Milvus Lite releases a renamed collection
            self.client.load_collection(n)
        self._register(name, version, dim, ModelStatus.RETIRED)
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
        self.client.upsert(registry_name(self.base), [row])

    def _ensure_registry(self) -> None:
        if self._registry_ready:
            return
        name = registry_name(self.base)
        ensure_collection(
            self.client, name, registry_schema(), (*REGISTRY_FIELDS, STATE_VECTOR_FIELD),
            STATE_VECTOR_FIELD, len(STATE_VECTOR), [IndexChoice(STATE_VECTOR_FIELD, "FLAT", "L2")],
        )
        wait_loaded(self.client, [name], 300.0)
        self._registry_ready = True

    def drop_all(self) -> None:
        """Drop the aliases, every registered pair and the registry (tests, teardown)."""
        for alias in (self.base, state_name(self.base)):
            if self.client.has_collection(alias):
                physical = str(self.client.describe_collection(alias)["collection_name"])
                if physical != alias:
                    self.client.drop_alias(alias)
        names = [e.physical for e in self.entries()] + [self.base]
        for n in names:
            for c in (n, state_name(n)):
                if self.client.has_collection(c):
                    self.client.drop_collection(c)
        if self.client.has_collection(registry_name(self.base)):
            self.client.drop_collection(registry_name(self.base))


class ServingGuard:
    """Stops a writer whose model no longer serves.

    Remembers what ``<base>`` reached when the writer started; :meth:`check` raises
    :class:`ModelRetiredError` once it reaches another model's collection. Ingest checks after
    each write and before committing it, so the batch that noticed the switch stays
    uncommitted and is consumed again by the restarted (new-model) ingest.
    """

    def __init__(self, versions: ModelVersions, model_version: str) -> None:
        self._versions = versions
        self.model_version = model_version
        start = versions.serving()
        self._start = start.physical if start else None

    def check(self) -> None:
        now = self._versions.serving()
        if now is None or now.physical == self._start or now.model_version == self.model_version:
            return
        raise ModelRetiredError(
            f"{self._versions.base} now serves model {now.model_version} ({now.physical}); "
            f"this process writes model {self.model_version}: restart it with that model"
        )


def registry_schema() -> Any:
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("physical", DataType.VARCHAR, is_primary=True, max_length=_MAX_NAME_BYTES)
    s.add_field("model_version", DataType.VARCHAR, max_length=MAX_MODEL_VERSION_BYTES)
    s.add_field("dim", DataType.INT64)
    s.add_field("status", DataType.VARCHAR, max_length=16)
    s.add_field("created_at_ms", DataType.INT64)
    s.add_field("updated_at_ms", DataType.INT64)
    s.add_field(STATE_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=len(STATE_VECTOR))
    return s


def _vector_dim(desc: dict[str, Any]) -> int:
    for f in desc.get("fields", []):
        if f.get("name") == "vector":
            return int(f.get("params", {}).get("dim", 0))
    return 0


def scan(
    client: Any, collection: str, expr: str, fields: list[str], batch_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every row matching ``expr`` (a fixed expression), beyond Milvus' 16384-row window."""
    it = client.query_iterator(
        collection, batch_size=batch_size, filter=expr, output_fields=fields,
        consistency_level="Strong",
    )
    try:
        while True:
            rows = it.next()
            if not rows:
                return
            yield from (dict(r) for r in rows)
    finally:
        it.close()
