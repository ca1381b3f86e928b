"""What is stored in Milvus: one row per product image, plus one state row per product.

The primary key of an image row is derived from the product and the image reference, so a
replayed event overwrites its own rows instead of adding new ones.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schema.events import ProductUpserted, category_ancestors

MAX_PK_LENGTH = 160
MAX_TITLE_LENGTH = 512
MAX_REF_LENGTH = 2048


def image_pk(product_id: str, image_key: str) -> str:
    """Deterministic row id: ``<product_id>#<image_key>``."""
    return f"{product_id}#{image_key}"


class ImageRecord(BaseModel):
    """One stored image row (the collection's fields, in order)."""

    model_config = ConfigDict(extra="forbid")

    pk: Annotated[str, Field(max_length=MAX_PK_LENGTH)]
    product_id: str
    image_key: str
    category: str
    category_path: list[str] = Field(description="The category and its ancestors")
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
            category_path=category_ancestors(event.category),
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
