"""Model versions without downtime: one physical collection pair per model version, served
through Milvus aliases. The ONE place that knows these names.

For the configured base name ``<base>`` (``LOOKALIKE_MILVUS__COLLECTION``; never one of the
names derived from it, :func:`check_base`):

* ``<base>__<slug>`` and ``<base>__<slug>_state`` are the image and state collections of one
  model version (``slug``: the first 10 hex digits of sha1(model_version); collection names
  allow only ``[A-Za-z0-9_]`` and versions are long). Vectors of two models never share one.
* ``<base>`` and ``<base>_state`` are *aliases* of the serving version's pair. Searches address
  the alias, so :func:`switch_serving` (``alter_alias``) moves every searcher to another
  version at once, with no moment where nothing answers. Ingest and ``lookalike reindex``
  address *physical* names only: a writer never follows an alias into another model's
  collection.
* ``<base>_models`` is the registry: one row per physical pair (model version, dimension,
  status ``building`` / ``serving`` / ``retiring`` / ``retired``, creation and update times),
  so the CLI can list versions. Milvus Lite keeps no collection descriptions, hence a
  collection; like the state collection it carries a constant 2-d vector (Milvus needs one
  to load a collection).
* ``<base>_lease`` holds the leases (store/lease.py): the row ``reindex`` names the one run of
  ``lookalike reindex`` or ``lookalike models drop`` that may change the registry and the
  aliases now, and until when. A collection of its own, not a registry row: lookalike
  releases from before it read every registry row as a model version.

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
gap in this design, once per install). The renamed pair is registered as ``retiring`` (a
catch-up from it is owed), then ``retired``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from pydantic import ValidationError

from schema.collection import CollectionSpec

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
LEASE_SUFFIX = "_lease"
LEASE_FIELDS: tuple[str, ...] = ("name", "owner", "acquired_at_ms", "expires_at_ms")
REINDEX_LEASE = "reindex"
"""The lease that ``lookalike reindex`` and ``lookalike models drop`` hold while they run."""
MAX_LEASE_OWNER_BYTES = 256
MAX_LEASE_S = 6 * 3600.0
"""The longest lease (``lookalike reindex --lease-s``): a killed run's blocks the next one at
most this long; ``lookalike models unlock`` removes it sooner."""
DEFAULT_LEASE_S = 120.0
"""How long a lease lasts without a renewal (``lookalike reindex --lease-s``; renewed at most
every third of it): a killed holder blocks the next run for at most this long."""
MAX_NAME_BYTES = 255
"""Longest collection name (the registry's primary key)."""


class ModelStatus(str, Enum):
    BUILDING = "building"
    """Being filled (by ``lookalike reindex`` or an ingest of a model that does not serve)."""
    SERVING = "serving"
    """The aliases point at it."""
    RETIRING = "retiring"
    """Served before the last switch, and owed a catch-up: its last writes (an old ingest's
    batches committed after reindex's last pass) are not all copied into the serving pair yet.
    Marked before the aliases move; ``lookalike reindex`` with the serving model copies them
    and then marks it ``retired``."""
    RETIRED = "retired"
    """Served before; kept until an operator drops it (a rollback is a reindex back)."""

    @property
    def served_before(self) -> bool:
        """Retired, or retiring: its writers must stop (a switch moved the aliases away)."""
        return self in (ModelStatus.RETIRING, ModelStatus.RETIRED)


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


DERIVED_SUFFIXES: tuple[str, ...] = ("_state", REGISTRY_SUFFIX, LEASE_SUFFIX)
"""The endings of the names derived from a base name, which a base name may not have."""
NAME_RULE = "letters, digits and _, starting with a letter or _"
MAX_SHOWN_CHARS = 200
"""Longest user string an error echoes whole (:func:`shown`)."""


MAX_BASE_CHARS = 189
"""Longest base name: ``<base>__<slug>`` is 12 characters longer, and a collection name is
at most 201 (:class:`schema.collection.CollectionSpec`)."""


def _is_collection_name(name: str) -> bool:
    try:
        CollectionSpec(name=name, dim=2)
    except ValidationError:
        return False
    return True


def shown(text: str) -> str:
    """``text`` as an error echoes it (``repr``): whole up to :data:`MAX_SHOWN_CHARS`, else
    its start and its length (a 100,000-character argument was echoed whole)."""
    if len(text) <= MAX_SHOWN_CHARS:
        return repr(text)
    return f"{text[:MAX_SHOWN_CHARS]!r}… ({len(text)} characters)"


def check_base(base: str) -> str:
    """``base`` when it can be the base name (``LOOKALIKE_MILVUS__COLLECTION``): a collection
    name itself (``''`` is none, as an alias) that leaves room for the names derived from it,
    and none of those names: no ``__`` (``<base>__<slug>`` is a version's pair: taken as a
    base, a reindex renamed another base's serving collection as a pre-alias one, and a drop
    deleted it) and no ending ``_state``, ``_models`` or ``_lease``; else a one-line
    ``ValueError``. The settings check it (lookalike/settings.py), so a bad name is refused
    before any store opens, and :class:`store.versions.ModelVersions` does."""
    if not _is_collection_name(base):
        raise ValueError(f"not a collection name: {NAME_RULE}, at most {MAX_BASE_CHARS} "
                         "characters")
    if PHYSICAL_SEPARATOR in base:
        raise ValueError(f"a base name may not contain {PHYSICAL_SEPARATOR!r}: names with it "
                         f"are model versions' collections (<base>{PHYSICAL_SEPARATOR}<hash>); "
                         "name the base, not one of its collections")
    for suffix in DERIVED_SUFFIXES:
        if base.endswith(suffix):
            raise ValueError(f"a base name may not end in {suffix!r}: that names a collection "
                             f"derived from a base (<base>{suffix})")
    if not _is_collection_name(physical_name(base, "")):
        raise ValueError(f"too long for the names derived from it: at most {MAX_BASE_CHARS} "
                         f"characters (<base>{PHYSICAL_SEPARATOR}<hash> is "
                         f"{len(physical_name('', ''))} characters longer)")
    return base


def registry_name(base: str) -> str:
    return f"{base}{REGISTRY_SUFFIX}"


def lease_name(base: str) -> str:
    return f"{base}{LEASE_SUFFIX}"


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
