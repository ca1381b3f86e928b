"""What is stored in Milvus: one row per product image, plus one state row per product.

The primary key of an image row is derived from the product and the image reference, so a
replayed event overwrites its own rows instead of adding new ones.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schema.events import MAX_CATEGORY_DEPTH, ProductUpserted, category_ancestors

MAX_PK_LENGTH = 160
MAX_REF_LENGTH = 2048

CATEGORY_LEVEL_FIELDS: tuple[str, ...] = tuple(
    f"category_l{depth}" for depth in range(1, MAX_CATEGORY_DEPTH + 1)
)
"""``category_l1`` .. ``category_l8``: the ancestor of each depth, ``""`` below the category."""


def image_pk(product_id: str, image_key: str) -> str:
    """Deterministic row id: ``<product_id>#<image_key>``."""
    return f"{product_id}#{image_key}"


def category_depth(category: str) -> int:
    """Number of levels of a (normalized) category path: ``Men/Tops`` -> 2."""
    return category.count("/") + 1


def category_level_field(depth: int) -> str:
    """The column holding the ancestor of depth ``depth`` (1-based): ``category_l<depth>``."""
    if not 1 <= depth <= MAX_CATEGORY_DEPTH:
        raise ValueError(f"category depth must be 1..{MAX_CATEGORY_DEPTH}, got {depth}")
    return CATEGORY_LEVEL_FIELDS[depth - 1]


def category_levels(category: str) -> dict[str, str]:
    """``Men/Tops`` -> ``{"category_l1": "Men", "category_l2": "Men/Tops", "category_l3": "",
    ...}``. A filter on a category of depth d is then ``category_l<d> == category``: it matches
    the category and everything below it, with an exact comparison (no prefix patterns)."""
    ancestors = category_ancestors(category)
    if len(ancestors) > MAX_CATEGORY_DEPTH:
        raise ValueError(f"category has more than {MAX_CATEGORY_DEPTH} levels")
    padded = ancestors + [""] * (MAX_CATEGORY_DEPTH - len(ancestors))
    return dict(zip(CATEGORY_LEVEL_FIELDS, padded, strict=True))


class ImageRecord(BaseModel):
    """One stored image row (the collection's fields, in order)."""

    model_config = ConfigDict(extra="forbid")

    pk: Annotated[str, Field(max_length=MAX_PK_LENGTH)]
    product_id: str
    image_key: str
    category: str
    # category_l<d>: the category's ancestor of depth d, "" below it (see category_levels)
    category_l1: str
    category_l2: str
    category_l3: str
    category_l4: str
    category_l5: str
    category_l6: str
    category_l7: str
    category_l8: str
    price: float
    currency: str
    title: str
    seller_id: str
    image_ref: str
    model_version: str
    version: int
    updated_at_ms: int
    vector: list[float]

    @classmethod
    def from_event(
        cls,
        event: ProductUpserted,
        image_index: int,
        vector: list[float],
        model_version: str,
        now_ms: int,
    ) -> ImageRecord:
        image = event.images[image_index]
        return cls(
            pk=image_pk(event.product_id, image.key),
            product_id=event.product_id,
            image_key=image.key,
            category=event.category,
            **category_levels(event.category),
            price=float(event.price),
            currency=event.currency,
            title=event.title,
            seller_id=event.seller_id,
            image_ref=image.reference[:MAX_REF_LENGTH],
            model_version=model_version,
            version=event.resolved_version,
            updated_at_ms=now_ms,
            vector=vector,
        )

    @model_validator(mode="after")
    def _levels_match_category(self) -> ImageRecord:
        expected = category_levels(self.category)
        wrong = [name for name, value in expected.items() if getattr(self, name) != value]
        if wrong:
            raise ValueError(
                f"category level fields {wrong} do not match category {self.category!r}; "
                "build them with category_levels()"
            )
        return self

    def to_row(self) -> dict[str, Any]:
        return self.model_dump()


class ProductState(BaseModel):
    """Latest applied version of a product; a delisted product keeps a tombstone
    (``listed=False``) so that an older upsert arriving later cannot bring it back."""

    model_config = ConfigDict(extra="forbid")

    product_id: str
    version: int
    listed: bool
    updated_at_ms: int
