"""The ONE place that defines the Milvus collections, their indexes and search parameters.

Two collections per :class:`CollectionSpec`:

* ``<name>``: one row per product image (the fields of :class:`schema.records.ImageRecord`).
* ``<name>_state``: one row per product (:class:`schema.records.ProductState`). Milvus (2.3
  up to 2.5, and milvus-lite) refuses a collection without a vector field, and a collection
  must be *loaded* (which needs an index on every vector field) before it can be queried. So
  the state collection carries a constant 2-d ``_unused`` vector (``[0, 0]``, L2, FLAT index):
  it is never searched and costs 8 bytes per product.

VARCHAR ``max_length`` is counted in UTF-8 *bytes* by Milvus servers (milvus-lite counts
characters), so text fields allow 4 bytes for each character that the event contract allows
(a 512-character title may need 2048 bytes).

Index choices depend on the engine, found by :func:`detect_engine`:

* milvus-lite (a local ``*.db`` file): ``FLAT`` (exact brute force over numpy; lite's HNSW
  needs the optional faiss package and is rebuilt per segment) and ``INVERTED`` scalar indexes
  on ``product_id`` and ``price``. The category level columns get none: lite uses scalar
  indexes only when *every* field of a filter is indexed (a search filter always has
  ``model_version``), and its vectorised (Arrow) evaluation of ``category_l<d> == ...`` is
  already below the noise (measured at 5,000 rows: no difference with INVERTED indexes on the
  levels, nor on the levels plus ``model_version`` and ``currency``).
* Milvus server: ``HNSW`` (M=16, efConstruction=200). Scalar indexes: ``INVERTED`` on
  ``product_id``, ``category_l1`` .. ``category_l8`` and ``price`` from 2.5 on; before 2.5
  (2.3.x rejects INVERTED) ``Trie`` on ``product_id`` and the eight level columns and
  ``STL_SORT`` on ``price`` (on 2.3.5 at 20,000 rows, Trie on all eight levels cost no
  measurable load or ingest time against none or three).

Categories: ``category`` holds the listing's path (``Men/Tops/Tees``) and ``category_l<d>`` its
ancestor of depth ``d`` (``category_l2 == "Men/Tops"``), ``""`` below its own depth (see
:func:`schema.records.category_levels`). A filter on a category of depth ``d`` is then one
exact, indexable comparison on ``category_l<d>`` that also matches the sub-paths (see
:meth:`search.filters.ExpressionBuilder.in_categories`); ARRAY fields and ``array_contains``
were dropped because milvus-lite evaluates them row by row in Python (~0.5 s per search at
5,000 rows) and neither lite nor 2.3 can index them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schema.records import CATEGORY_LEVEL_FIELDS, MAX_PK_LENGTH, ImageRecord, ProductState

log = logging.getLogger(__name__)

MAX_SEARCH_LIMIT = 16384
"""Milvus' upper bound for ``limit`` (topK) in one search."""

STATE_VECTOR_FIELD = "_unused"
STATE_VECTOR = [0.0, 0.0]

_BYTES_PER_CHAR = 4
MAX_PRODUCT_ID_BYTES = 128  # ProductId: at most 128 ASCII characters
MAX_IMAGE_KEY_BYTES = 64
MAX_CATEGORY_BYTES = 512 * _BYTES_PER_CHAR
MAX_TITLE_BYTES = 512 * _BYTES_PER_CHAR
MAX_SELLER_BYTES = 128 * _BYTES_PER_CHAR
MAX_IMAGE_REF_BYTES = 2048 * _BYTES_PER_CHAR
MAX_MODEL_VERSION_BYTES = 256

IMAGE_FIELDS: tuple[str, ...] = tuple(ImageRecord.model_fields)
STATE_FIELDS: tuple[str, ...] = tuple(ProductState.model_fields)


class SchemaMismatchError(RuntimeError):
    """An existing collection does not have the shape this code expects."""


class CollectionSpec(BaseModel):
    """Names and shape of the collections."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="lookalike_images", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    dim: int = Field(ge=2, le=32768, description="Embedding dimension")
    metric: Literal["COSINE"] = "COSINE"
    hnsw_m: int = Field(default=16, ge=2, le=2048)
    hnsw_ef_construction: int = Field(default=200, ge=1)

    @property
    def state_name(self) -> str:
        return f"{self.name}_state"


@dataclass(frozen=True)
class EngineInfo:
    """Which Milvus answers on a client, and what it can do."""

    kind: Literal["milvus-lite", "milvus"]
    version: tuple[int, int, int]
    version_string: str

    @property
    def is_lite(self) -> bool:
        return self.kind == "milvus-lite"

    @property
    def supports_filter_templates(self) -> bool:
        """``{name}`` placeholders + ``filter_params``: Milvus 2.5+; not 2.3/2.4 nor lite."""
        return not self.is_lite and self.version >= (2, 5, 0)

    @property
    def supports_inverted_index(self) -> bool:
        return self.is_lite or self.version >= (2, 5, 0)


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_engine(version_string: str, uri: str | None = None) -> EngineInfo:
    """Classify a ``get_server_version()`` answer (and optionally the URI that was opened).

    milvus-lite 3.x answers ``milvus_lite-3.2.2``; servers answer ``v2.5.4`` (the PyPI
    ``milvus`` package's standalone server answers ``v2.3.5-lite``: a server, not lite).
    """
    lite = version_string.startswith("milvus_lite") or (
        uri is not None and uri.strip().endswith(".db")
    )
    m = _VERSION.search(version_string)
    version = (int(m[1]), int(m[2]), int(m[3] or 0)) if m else (0, 0, 0)
    if not lite and m is None:
        log.warning("unrecognised Milvus version %r; assuming an old server", version_string)
    return EngineInfo("milvus-lite" if lite else "milvus", version, version_string)


def detect_engine(client: Any, uri: str | None = None) -> EngineInfo:
    """Ask the server behind a ``pymilvus.MilvusClient`` which engine and version it is."""
    return parse_engine(str(client.get_server_version()), uri)


@dataclass(frozen=True)
class IndexChoice:
    field: str
    index_type: str
    metric_type: str | None = None
    params: dict[str, Any] = dc_field(default_factory=dict)


def image_indexes(spec: CollectionSpec, engine: EngineInfo) -> list[IndexChoice]:
    """Indexes of the image collection on this engine (vector index first)."""
    if engine.is_lite:
        return [
            IndexChoice("vector", "FLAT", spec.metric),
            IndexChoice("product_id", "INVERTED"),
            IndexChoice("price", "INVERTED"),
        ]
    vector = IndexChoice(
        "vector",
        "HNSW",
        spec.metric,
        {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction},
    )
    if engine.supports_inverted_index:
        return [
            vector,
            IndexChoice("product_id", "INVERTED"),
            *(IndexChoice(level, "INVERTED") for level in CATEGORY_LEVEL_FIELDS),
            IndexChoice("price", "INVERTED"),
        ]
    return [
        vector,
        IndexChoice("product_id", "Trie"),
        *(IndexChoice(level, "Trie") for level in CATEGORY_LEVEL_FIELDS),
        IndexChoice("price", "STL_SORT"),
    ]


def state_indexes(engine: EngineInfo) -> list[IndexChoice]:
    return [IndexChoice(STATE_VECTOR_FIELD, "FLAT", "L2")]


def search_params(spec: CollectionSpec, engine: EngineInfo, limit: int) -> dict[str, Any]:
    """``search_params`` for a search returning up to ``limit`` rows (HNSW needs ef >= limit)."""
    if engine.is_lite:
        return {"metric_type": spec.metric, "params": {}}
    return {"metric_type": spec.metric, "params": {"ef": max(64, min(limit, MAX_SEARCH_LIMIT))}}


def image_schema(spec: CollectionSpec) -> Any:
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_PK_LENGTH)
    s.add_field("product_id", DataType.VARCHAR, max_length=MAX_PRODUCT_ID_BYTES)
    s.add_field("image_key", DataType.VARCHAR, max_length=MAX_IMAGE_KEY_BYTES)
    s.add_field("category", DataType.VARCHAR, max_length=MAX_CATEGORY_BYTES)
    for level in CATEGORY_LEVEL_FIELDS:  # an ancestor is never longer than the category
        s.add_field(level, DataType.VARCHAR, max_length=MAX_CATEGORY_BYTES)
    s.add_field("price", DataType.DOUBLE)
    s.add_field("currency", DataType.VARCHAR, max_length=3)
    s.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE_BYTES)
    s.add_field("seller_id", DataType.VARCHAR, max_length=MAX_SELLER_BYTES)
    s.add_field("image_ref", DataType.VARCHAR, max_length=MAX_IMAGE_REF_BYTES)
    s.add_field("model_version", DataType.VARCHAR, max_length=MAX_MODEL_VERSION_BYTES)
    s.add_field("version", DataType.INT64)
    s.add_field("updated_at_ms", DataType.INT64)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dim)
    return s


def state_schema() -> Any:
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("product_id", DataType.VARCHAR, is_primary=True, max_length=MAX_PRODUCT_ID_BYTES)
    s.add_field("version", DataType.INT64)
    s.add_field("listed", DataType.BOOL)
    s.add_field("updated_at_ms", DataType.INT64)
    s.add_field(STATE_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=len(STATE_VECTOR))
    return s


def _index_params(client: Any, choices: list[IndexChoice]) -> Any:
    params = client.prepare_index_params()
    for c in choices:
        kwargs: dict[str, Any] = {"index_type": c.index_type, "index_name": c.field}
        if c.metric_type is not None:
            kwargs["metric_type"] = c.metric_type
        if c.params:
            kwargs["params"] = dict(c.params)
        params.add_index(c.field, **kwargs)
    return params


def _field_names(desc: dict[str, Any]) -> list[str]:
    return [str(f["name"]) for f in desc.get("fields", [])]


def _vector_dim(desc: dict[str, Any], name: str) -> int | None:
    for f in desc.get("fields", []):
        if f.get("name") == name:
            dim = f.get("params", {}).get("dim")
            return int(dim) if dim is not None else None
    return None


def _check_existing(client: Any, name: str, fields: tuple[str, ...], vector: str, dim: int) -> None:
    desc = client.describe_collection(name)
    have = _field_names(desc)
    missing = [f for f in fields if f not in have]
    extra = [f for f in have if f not in fields]
    if missing or extra:
        raise SchemaMismatchError(
            f"collection {name!r} exists with fields {have}; expected {list(fields)} "
            f"(missing {missing}, unexpected {extra}). Use another collection name or drop it."
        )
    found = _vector_dim(desc, vector)
    if found != dim:
        raise SchemaMismatchError(
            f"collection {name!r} exists with {vector} dimension {found}, but the embedder "
            f"produces {dim}: vectors of different models/dimensions cannot share a "
            "collection. Use another collection name (or drop it and re-ingest)."
        )


def ensure_collection(
    client: Any,
    name: str,
    schema: Any,
    fields: tuple[str, ...],
    vector: str,
    dim: int,
    indexes: list[IndexChoice],
) -> None:
    """Create collection ``name`` with ``indexes`` if missing (else check its fields and vector
    dimension, and add missing indexes), and start loading it; :func:`wait_loaded` waits."""
    if client.has_collection(name):
        _check_existing(client, name, fields, vector, dim)
        have = set(client.list_indexes(name))
        todo = [c for c in indexes if c.field not in have]
        if todo:  # a crash between create and index, or an index added by a newer version
            client.create_index(name, _index_params(client, todo))
    else:
        log.info("creating collection %s", name)
        client.create_collection(name, schema=schema, consistency_level="Strong")
        # sync=False: the request is still checked, but pymilvus does not poll the build
        # state (0.5 s per index); an empty collection's indexes are complete at once.
        client.create_index(name, _index_params(client, indexes), sync=False)
    # Both collections load concurrently (a 2.3 server takes ~2.5 s per collection).
    client.load_collection(name, _async=True)


def wait_loaded(client: Any, names: list[str], timeout_s: float) -> None:
    """Block until every collection in ``names`` is loaded (searchable), or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending:
        pending = [
            n for n in pending if getattr(client.get_load_state(n)["state"], "name", "") != "Loaded"
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"collections {pending} not loaded after {timeout_s:.0f}s")
        time.sleep(0.1)


def ensure_collections(
    client: Any,
    spec: CollectionSpec,
    engine: EngineInfo | None = None,
    *,
    load_timeout_s: float = 300.0,
) -> EngineInfo:
    """Create the image and state collections if missing, check their shape, load them.

    Idempotent; returns when both are loaded (searchable). Raises
    :class:`SchemaMismatchError` when a collection exists with another vector dimension or
    other fields. Returns the detected engine.
    """
    engine = engine or detect_engine(client)
    ensure_collection(
        client,
        spec.name,
        image_schema(spec),
        IMAGE_FIELDS,
        "vector",
        spec.dim,
        image_indexes(spec, engine),
    )
    ensure_collection(
        client,
        spec.state_name,
        state_schema(),
        (*STATE_FIELDS, STATE_VECTOR_FIELD),
        STATE_VECTOR_FIELD,
        len(STATE_VECTOR),
        state_indexes(engine),
    )
    wait_loaded(client, [spec.name, spec.state_name], load_timeout_s)
    return engine
