"""Creating, checking and loading the collections of a :class:`schema.collection.CollectionSpec`
(the field lists and sizes are the contract in ``schema/collection.py``; the pymilvus schema
objects and index choices are built here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from schema.collection import (
    IMAGE_FIELDS,
    IMAGE_TEXT_BYTES,
    MAX_MODEL_VERSION_BYTES,
    MAX_PRODUCT_ID_BYTES,
    STATE_FIELDS,
    STATE_VECTOR,
    STATE_VECTOR_FIELD,
    CollectionSpec,
    SchemaMismatchError,
)
from schema.records import CATEGORY_LEVEL_FIELDS
from store.client import MilvusStore
from store.engine import EngineInfo, IndexChoice, image_indexes, state_indexes

log = logging.getLogger(__name__)


def _new_schema() -> Any:
    from pymilvus import MilvusClient

    return MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)


def image_schema(spec: CollectionSpec) -> Any:
    from pymilvus import DataType

    s = _new_schema()
    text = IMAGE_TEXT_BYTES
    s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=text["pk"])
    for name in ("product_id", "image_key", "category", *CATEGORY_LEVEL_FIELDS):
        s.add_field(name, DataType.VARCHAR, max_length=text[name])
    s.add_field("price", DataType.DOUBLE)
    for name in ("currency", "title", "seller_id", "image_ref", "model_version"):
        s.add_field(name, DataType.VARCHAR, max_length=text[name])
    s.add_field("version", DataType.INT64)
    s.add_field("updated_at_ms", DataType.INT64)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dim)
    return s


def state_schema() -> Any:
    from pymilvus import DataType

    s = _new_schema()
    s.add_field("product_id", DataType.VARCHAR, is_primary=True, max_length=MAX_PRODUCT_ID_BYTES)
    s.add_field("version", DataType.INT64)
    s.add_field("listed", DataType.BOOL)
    s.add_field("updated_at_ms", DataType.INT64)
    s.add_field(STATE_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=len(STATE_VECTOR))
    return s


def registry_schema(name_bytes: int) -> Any:
    """The model registry (store/versions.py): one row per physical collection pair."""
    from pymilvus import DataType

    s = _new_schema()
    s.add_field("physical", DataType.VARCHAR, is_primary=True, max_length=name_bytes)
    s.add_field("model_version", DataType.VARCHAR, max_length=MAX_MODEL_VERSION_BYTES)
    s.add_field("dim", DataType.INT64)
    s.add_field("status", DataType.VARCHAR, max_length=16)
    s.add_field("created_at_ms", DataType.INT64)
    s.add_field("updated_at_ms", DataType.INT64)
    s.add_field(STATE_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=len(STATE_VECTOR))
    return s


def lease_schema(name_bytes: int, owner_bytes: int) -> Any:
    """The leases of one base name (store/lease.py): one row per lease."""
    from pymilvus import DataType

    s = _new_schema()
    s.add_field("name", DataType.VARCHAR, is_primary=True, max_length=name_bytes)
    s.add_field("owner", DataType.VARCHAR, max_length=owner_bytes)
    s.add_field("acquired_at_ms", DataType.INT64)
    s.add_field("expires_at_ms", DataType.INT64)
    s.add_field(STATE_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=len(STATE_VECTOR))
    return s


def _check_existing(
    store: MilvusStore, name: str, fields: Sequence[str], vector: str, dim: int
) -> None:
    have = store.field_names(name)
    missing = [f for f in fields if f not in have]
    extra = [f for f in have if f not in fields]
    if missing or extra:
        raise SchemaMismatchError(
            f"collection {name!r} exists with fields {have}; expected {list(fields)} "
            f"(missing {missing}, unexpected {extra}). Use another collection name or drop it."
        )
    found = store.vector_dim(name, vector)
    if found != dim:
        raise SchemaMismatchError(
            f"collection {name!r} exists with {vector} dimension {found}, but the embedder "
            f"produces {dim}: vectors of different models/dimensions cannot share a "
            "collection. Use another collection name (or drop it and re-ingest)."
        )


def ensure_collection(
    store: MilvusStore,
    name: str,
    schema: Any,
    fields: Sequence[str],
    vector: str,
    dim: int,
    indexes: Sequence[IndexChoice],
) -> None:
    """Create collection ``name`` with ``indexes`` if missing (else check its fields and vector
    dimension, and add missing indexes), and start loading it (:meth:`MilvusStore.load` with
    ``wait`` waits)."""
    if store.has_collection(name):
        _check_existing(store, name, fields, vector, dim)
        have = set(store.list_indexes(name))
        todo = [c for c in indexes if c.field not in have]
        if todo:  # a crash between create and index, or an index added by a newer version
            store.create_indexes(name, todo)
    else:
        log.info("creating collection %s", name)
        store.create_collection(name, schema)
        store.create_indexes(name, indexes, wait=False)
    store.load([name], wait=False)


def ensure_collections(
    store: MilvusStore, spec: CollectionSpec, *, load_timeout_s: float = 300.0
) -> EngineInfo:
    """Create the image and state collections if missing, check their shape, load them.

    Idempotent; returns when both are loaded (searchable). Raises
    :class:`SchemaMismatchError` when a collection exists with another vector dimension or
    other fields. Returns the engine.
    """
    ensure_collection(store, spec.name, image_schema(spec), IMAGE_FIELDS, "vector", spec.dim,
                      image_indexes(spec, store.engine))
    ensure_collection(store, spec.state_name, state_schema(), (*STATE_FIELDS, STATE_VECTOR_FIELD),
                      STATE_VECTOR_FIELD, len(STATE_VECTOR), state_indexes(store.engine))
    store.wait_loaded([spec.name, spec.state_name], load_timeout_s)
    return store.engine
