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

Engines, index choices and the creation of these collections live in the store
(``store/engine.py``, ``store/collections.py``).

Categories: ``category`` holds the listing's path (``Men/Tops/Tees``) and ``category_l<d>`` its
ancestor of depth ``d`` (``category_l2 == "Men/Tops"``), ``""`` below its own depth (see
:func:`schema.records.category_levels`). A filter on a category of depth ``d`` is then one
exact, indexable comparison on ``category_l<d>`` that also matches the sub-paths (see
:meth:`store.expressions.ExpressionBuilder.in_categories`); ARRAY fields and ``array_contains``
were dropped because milvus-lite evaluates them row by row in Python (~0.5 s per search at
5,000 rows) and neither lite nor 2.3 can index them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schema.events import MAX_CATEGORY_CHARS, MAX_SELLER_CHARS, MAX_TITLE_CHARS
from schema.records import CATEGORY_LEVEL_FIELDS, MAX_PK_LENGTH, ImageRecord, ProductState

STATE_VECTOR_FIELD = "_unused"
STATE_VECTOR = [0.0, 0.0]

_BYTES_PER_CHAR = 4
MAX_PRODUCT_ID_BYTES = 128  # ProductId: at most 128 ASCII characters
MAX_IMAGE_KEY_BYTES = 64
MAX_CATEGORY_BYTES = MAX_CATEGORY_CHARS * _BYTES_PER_CHAR
MAX_TITLE_BYTES = MAX_TITLE_CHARS * _BYTES_PER_CHAR
MAX_SELLER_BYTES = MAX_SELLER_CHARS * _BYTES_PER_CHAR
MAX_IMAGE_REF_BYTES = 2048 * _BYTES_PER_CHAR
MAX_MODEL_VERSION_BYTES = 256

IMAGE_TEXT_BYTES: dict[str, int] = {
    "pk": MAX_PK_LENGTH,
    "product_id": MAX_PRODUCT_ID_BYTES,
    "image_key": MAX_IMAGE_KEY_BYTES,
    "category": MAX_CATEGORY_BYTES,
    # an ancestor is never longer than the category
    **{level: MAX_CATEGORY_BYTES for level in CATEGORY_LEVEL_FIELDS},
    "currency": 3,
    "title": MAX_TITLE_BYTES,
    "seller_id": MAX_SELLER_BYTES,
    "image_ref": MAX_IMAGE_REF_BYTES,
    "model_version": MAX_MODEL_VERSION_BYTES,
}
"""The image collection's VARCHAR fields and their ``max_length`` (what the store creates
them with, and what a row is held to before it is written: :func:`too_long`)."""

IMAGE_FIELDS: tuple[str, ...] = tuple(ImageRecord.model_fields)
STATE_FIELDS: tuple[str, ...] = tuple(ProductState.model_fields)


def too_long(row: Mapping[str, Any]) -> tuple[str, int, int] | None:
    """The first text field of an image ``row`` that the collection would refuse, as
    ``(field, its UTF-8 bytes, the limit)``: the limit is in bytes, as Milvus servers count it
    (milvus-lite counts characters, never more than the bytes). None when all fit."""
    for name, most in IMAGE_TEXT_BYTES.items():
        value = row.get(name)
        if isinstance(value, str) and len(value.encode("utf-8")) > most:
            return name, len(value.encode("utf-8")), most
    return None


class SchemaMismatchError(RuntimeError):
    """An existing collection does not have the shape this code expects."""


class CollectionSpec(BaseModel):
    """Names and shape of the collections."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="lookalike_images", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    dim: int = Field(ge=2, le=32768, description="Embedding dimension")
    metric: Literal["COSINE"] = "COSINE"

    @property
    def state_name(self) -> str:
        return f"{self.name}_state"
